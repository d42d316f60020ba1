import json
import os
import signal
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
import requests
from django.core.management import CommandError, call_command

from crm_sandbox import EMULATOR_CLASSES
from crm_sandbox.brevo import API_KEY
from crm_sandbox.hubspot import ACCESS_TOKEN
from crm_sandbox.management.commands.crm_sandbox import parse_rate_limit
from crm_sandbox.mautic import PASSWORD, USERNAME
from crm_sandbox.n8n import WEBHOOK_PATH, WEBHOOK_SECRET
from crm_sandbox.server import RateLimitBurst, SandboxOptions, SandboxServer

PROJECT = Path(__file__).resolve().parents[2]


def brevo_create(server, email="a@example.com", timeout=5):
    return requests.post(
        server.url + "/brevo/v3/contacts", json={"email": email}, headers={"api-key": API_KEY}, timeout=timeout
    )


def hubspot_get(server, record_id="1"):
    return requests.get(
        server.url + "/hubspot/crm/v3/objects/contacts/" + record_id,
        headers={"Authorization": "Bearer " + ACCESS_TOKEN},
        timeout=5,
    )


# Faults


def test_error_rate_one_answers_5xx_in_brevos_shape_and_applies_nothing(sandbox, control):
    control("POST", "/brevo/faults", json={"error_rate": 1.0})
    answers = [brevo_create(sandbox, "e%d@example.com" % i) for i in range(6)]
    assert {a.status_code for a in answers} <= {500, 502, 503}
    assert all(a.json() == {"code": "internal_error", "message": "Internal server error"} for a in answers)
    assert control("GET", "/brevo/contacts").json() == []


def test_error_rate_one_answers_5xx_in_hubspots_shape(sandbox, control):
    control("POST", "/hubspot/faults", json={"error_rate": 1.0})
    answers = [hubspot_get(sandbox) for _ in range(12)]
    assert {a.status_code for a in answers} <= {500, 502, 504}
    for answer in answers:
        if answer.status_code == 500:
            body = answer.json()
            assert (body["status"], body["message"], body["category"]) == ("error", "internal error", "INTERNAL_ERROR")
            assert body["correlationId"]
        else:
            assert answer.headers["Content-Type"] == "text/html", "502 and 504 come from the edge"


def test_timeout_holds_the_request_then_answers_504(sandbox, control):
    control("POST", "/brevo/faults", json={"timeout_rate": 1.0, "timeout_seconds": 0.2})
    started = time.monotonic()
    assert brevo_create(sandbox).status_code == 504
    assert time.monotonic() - started >= 0.2
    with pytest.raises(requests.Timeout):
        brevo_create(sandbox, timeout=0.05)
    assert control("GET", "/brevo/contacts").json() == []


def test_latency_is_added_to_api_requests_only(sandbox, control):
    control("POST", "/brevo/faults", json={"latency_ms": 150})
    started = time.monotonic()
    brevo_create(sandbox)
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    control("GET", "/brevo/contacts")
    assert time.monotonic() - started < 0.1, "/_sandbox has no faults"


def test_faults_are_per_crm_and_readable(sandbox, control):
    control("POST", "/brevo/faults", json={"error_rate": 1.0})
    assert hubspot_get(sandbox).status_code == 404, "HubSpot is untouched"
    faults = control("GET", "/brevo/faults").json()
    assert (faults["error_rate"], faults["timeout_rate"], faults["rate_limits"]["second"]) == (
        1.0,
        0.0,
        {"requests": 10, "seconds": 1},
    )


@pytest.mark.parametrize(
    "body",
    [
        {"error_rate": 1.5},
        {"timeout_rate": -0.1},
        {"latency_ms": "slow"},
        {"nope": 1},
        {"rate_limit": {"requests": 0, "seconds": 1}},
        {"rate_limit": 5},
        {"rate_limit_burst": {"seconds": 0}},
        {"rate_limit_burst": {"seconds": "nan"}},
        {"rate_limit_burst": {"after": 3}},
        {"rate_limit_burst": {"seconds": 1, "after": -1}},
        {"rate_limit_burst": {"seconds": 1, "every": 0}},
        {"rate_limit_burst": {"seconds": 1, "often": 2}},
        {"rate_limit_burst": 5},
        {"slow_body": -1},
        {"slow_headers": "slow"},
        {"down": "yes"},
        {"down": 1},
    ],
)
def test_bad_fault_values_are_refused(control, body):
    assert control("POST", "/brevo/faults", json=body).status_code == 400


def raw_get(server, path, headers):
    """GET over a bare socket: (what each recv returned, the head, the body)."""
    import socket

    host, port = server.httpd.server_address[:2]
    lines = ["GET %s HTTP/1.1" % path, "Host: %s:%d" % (host, port), "Connection: close"]
    lines += ["%s: %s" % item for item in headers.items()]
    chunks = []
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return chunks, head, body


def chunks_until(chunks, marker):
    """How many recvs it took for `marker` to arrive."""
    seen = b""
    for count, chunk in enumerate(chunks, 1):
        seen += chunk
        if marker in seen:
            return count
    return None


@pytest.fixture
def stored_brevo_contact(sandbox, brevo):
    brevo("POST", "/contacts", json={"email": "slow@example.com", "attributes": {"FIRSTNAME": "Slow"}})
    return brevo("GET", "/contacts/1")


def test_slow_body_sends_status_and_headers_at_once_then_the_body_a_byte_at_a_time(
    sandbox, control, stored_brevo_contact
):
    control("POST", "/brevo/faults", json={"slow_body": 0.005})

    chunks, head, body = raw_get(sandbox, "/brevo/v3/contacts/1", {"api-key": API_KEY})

    assert chunks_until(chunks, b"\r\n\r\n") == 1, "the whole head in the first write"
    assert len(chunks) > 10, "the body came in pieces"
    assert head.startswith(b"HTTP/1.1 200") and json.loads(body) == stored_brevo_contact.json()


def test_slow_headers_sends_the_status_line_then_the_headers_a_byte_at_a_time(sandbox, control, stored_brevo_contact):
    control("POST", "/brevo/faults", json={"slow_headers": 0.005})

    chunks, _head, body = raw_get(sandbox, "/brevo/v3/contacts/1", {"api-key": API_KEY})

    assert chunks[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert chunks_until(chunks, b"\r\n\r\n") > 10, "the headers came in pieces"
    assert json.loads(body) == stored_brevo_contact.json(), "then the body, whole"


def test_down_closes_every_connection_unanswered_and_applies_nothing_until_switched_back(sandbox, control):
    control("POST", "/brevo/faults", json={"down": True})
    with pytest.raises(requests.ConnectionError):
        brevo_create(sandbox)
    assert control("GET", "/brevo/contacts").json() == []
    assert [r["status"] for r in control("GET", "/brevo/requests").json()] == [None], "received, never answered"
    assert control("GET", "/brevo/faults").json()["down"] is True
    assert hubspot_get(sandbox).status_code == 404, "the other CRMs are up"

    control("POST", "/brevo/faults", json={"down": False})
    assert brevo_create(sandbox).status_code == 201


@pytest.mark.parametrize("crm", ["brevo", "hubspot", "mautic", "n8n"])
def test_error_rate_one_is_an_outage_of_5xx_until_switched_back(sandbox, control, crm):
    call = {"brevo": brevo_create, "hubspot": hubspot_get, "mautic": mautic_create, "n8n": n8n_post}[crm]
    control("POST", "/%s/faults" % crm, json={"error_rate": 1.0})
    assert all(call(sandbox).status_code >= 500 for _ in range(5))

    control("POST", "/%s/faults" % crm, json={"error_rate": 0})
    assert call(sandbox).status_code < 500


def test_a_null_rate_limit_turns_that_crms_limits_off(sandbox, control):
    control("POST", "/brevo/faults", json={"rate_limit": None})
    answers = [brevo_create(sandbox, "n%d@example.com" % i) for i in range(15)]
    assert {a.status_code for a in answers} == {201}
    assert "x-sib-ratelimit-limit" not in answers[0].headers


def mautic_create(server, email="a@example.com"):
    return requests.post(
        server.url + "/mautic/api/contacts/new", json={"email": email}, auth=(USERNAME, PASSWORD), timeout=5
    )


def n8n_post(server, email="a@example.com"):
    return requests.post(
        "%s/n8n/webhook/%s" % (server.url, WEBHOOK_PATH),
        json={"email": email},
        headers={"Authorization": "Bearer " + WEBHOOK_SECRET},
        timeout=5,
    )


def brevo_429(answer):
    assert answer.json() == {"code": "too_many_requests", "message": "The expected rate limit is exceeded."}
    assert (answer.headers["x-sib-ratelimit-remaining"], answer.headers["x-sib-ratelimit-reset"]) == ("0", "30")
    assert "Retry-After" not in answer.headers, "Brevo sends none"


def hubspot_429(answer):
    body = answer.json()
    assert (body["errorType"], body["policyName"], body["message"]) == (
        "RATE_LIMIT",
        "TEN_SECONDLY_ROLLING",
        "You have reached your ten_secondly_rolling limit.",
    )
    assert answer.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    assert answer.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"


def mautic_429(answer):
    [error] = answer.json()["errors"]
    assert error["code"] == 429 and error["message"].startswith("You exceeded the rate limit of")
    assert answer.headers["X-RateLimit-Remaining"] == "0"
    assert 25 <= int(answer.headers["X-RateLimit-Reset"]) - time.time() <= 31


def n8n_429(answer):
    assert (answer.text, answer.headers["Retry-After"]) == ("Too Many Requests", "30")


BURSTS = {
    "brevo": (brevo_create, 201, brevo_429),
    "hubspot": (lambda server, email: hubspot_get(server), 404, hubspot_429),
    "mautic": (mautic_create, 201, mautic_429),
    "n8n": (n8n_post, 200, n8n_429),
}


@pytest.mark.parametrize("crm", BURSTS)
def test_a_rate_limit_burst_answers_the_crms_own_429_after_the_requests_let_through(sandbox, control, crm):
    send, passed, check_429 = BURSTS[crm]
    control("POST", "/%s/faults" % crm, json={"rate_limit_burst": {"seconds": 30, "after": 2}})
    answers = [send(sandbox, "b%d@example.com" % i) for i in range(5)]

    assert [a.status_code for a in answers] == [passed, passed, 429, 429, 429]
    for answer in answers[2:]:
        check_429(answer)
    assert [r["status"] for r in control("GET", "/%s/requests" % crm).json()] == [passed] * 2 + [429] * 3
    assert control("GET", "/%s/faults" % crm).json()["rate_limit_burst"] == {
        "seconds": 30,
        "after": 2,
        "every": None,
        "bursts": 1,
    }
    control("POST", "/%s/faults" % crm, json={"rate_limit_burst": None})
    assert send(sandbox, "c@example.com").status_code == passed


def test_a_burst_refuses_before_anything_is_applied(sandbox, control):
    control("POST", "/brevo/faults", json={"rate_limit_burst": {"seconds": 30}})
    assert brevo_create(sandbox).status_code == 429
    assert control("GET", "/brevo/contacts").json() == []


def test_hubspot_burst_429_carries_retry_after_when_switched_on(sandbox, control):
    control("POST", "/hubspot/settings", json={"send_retry_after": True})
    control("POST", "/hubspot/faults", json={"rate_limit_burst": {"seconds": 2.5}})
    assert hubspot_get(sandbox).headers["Retry-After"] == "3"


def test_bursts_come_back_every_n_requests_let_through():
    burst = RateLimitBurst(seconds=1, after=1, every=2)
    moments = [0, 0.1, 0.5, 1.2, 1.3, 1.4, 1.5, 2.6]
    assert [round(burst.wait(now), 2) for now in moments] == [0, 1.0, 0.6, 0, 0, 1.0, 0.9, 0]
    assert burst.view() == {"seconds": 1, "after": 1, "every": 2, "bursts": 2}
    once = RateLimitBurst(seconds=1)
    assert [once.wait(now) for now in (0, 0.5, 1.0, 5.0, 9.0)] == [1, 0.5, 0, 0, 0], "without every, one burst"


def test_reset_forgets_a_burst(sandbox, control):
    control("POST", "/brevo/faults", json={"rate_limit_burst": {"seconds": 30}})
    control("POST", "/reset")
    assert control("GET", "/brevo/faults").json()["rate_limit_burst"] is None
    assert brevo_create(sandbox).status_code == 201


def test_a_seed_replays_the_same_faults():
    def statuses():
        with SandboxServer(options=SandboxOptions(error_rate=0.5, seed=42, real_rate_limits=False)) as server:
            return [brevo_create(server, "s%d@example.com" % i).status_code for i in range(12)]

    first = statuses()
    assert first == statuses() and len(set(first)) > 1


def test_options_set_the_start_up_faults_and_limits():
    options = SandboxOptions(rate_limits={"hubspot": (2, 5)}, real_rate_limits=False)
    with SandboxServer(options=options) as server:
        assert [hubspot_get(server).status_code for _ in range(3)] == [404, 404, 429]
        assert {brevo_create(server, "o%d@example.com" % i).status_code for i in range(12)} == {201}, "no real limits"


def test_slow_answers_can_be_start_up_options():
    with SandboxServer(options=SandboxOptions(slow_body=0.25, slow_headers=0.5)) as server:
        faults = requests.get(server.url + "/_sandbox/n8n/faults", timeout=5).json()
    assert (faults["slow_body"], faults["slow_headers"], faults["down"]) == (0.25, 0.5, False)


# Inspection and control


def test_contacts_show_what_each_crm_would_return(sandbox, brevo, hubspot, control):
    brevo("POST", "/contacts", json={"email": "a@example.com", "attributes": {"FIRSTNAME": "A"}})
    hubspot("POST", "/crm/v3/objects/contacts", json={"properties": {"email": "a@example.com", "company": "Acme"}})
    [brevo_contact] = control("GET", "/brevo/contacts").json()
    assert brevo_contact == brevo("GET", "/contacts/1").json()
    [hubspot_contact] = control("GET", "/hubspot/contacts").json()
    assert set(hubspot_contact) == {"id", "properties", "createdAt", "updatedAt", "archived"}
    assert hubspot_contact["properties"]["company"] == "Acme", "every property, not only GET's defaults"


def test_requests_are_logged_with_their_status_and_no_headers(sandbox, control):
    brevo_create(sandbox)
    requests.post(sandbox.url + "/brevo/v3/contacts", json={"email": "b@example.com"}, timeout=5)
    requests.get(
        sandbox.url + "/brevo/v3/contacts/a@example.com?identifierType=email_id",
        headers={"api-key": API_KEY},
        timeout=5,
    )
    log = control("GET", "/brevo/requests").json()
    assert [(r["method"], r["path"], r["query"], r["status"]) for r in log] == [
        ("POST", "/v3/contacts", "", 201),
        ("POST", "/v3/contacts", "", 401),
        ("GET", "/v3/contacts/a@example.com", "identifierType=email_id", 200),
    ]
    assert all(r["at"] for r in log)
    assert API_KEY not in json.dumps(log) and "api-key" not in json.dumps(log)
    assert control("GET", "/hubspot/requests").json() == []


def test_reset_forgets_records_logs_settings_faults_and_limit_counts(sandbox, brevo, control):
    control("POST", "/brevo/faults", json={"rate_limit": {"requests": 3, "seconds": 60}})
    control("POST", "/brevo/settings", json={"unknown_attributes": "reject"})
    brevo("POST", "/contacts/attributes/normal/COMPANY", json={"type": "text"})
    brevo("POST", "/contacts/lists", json={"name": "Leads", "folderId": 1})
    assert brevo("POST", "/contacts", json={"email": "a@example.com"}).status_code == 201
    assert brevo("GET", "/contacts/a@example.com").status_code == 429

    assert control("POST", "/reset").status_code == 200

    for what in ("contacts", "requests"):
        assert control("GET", "/brevo/%s" % what).json() == []
    from crm_sandbox.brevo import BrevoEmulator

    assert control("GET", "/brevo/settings").json() == BrevoEmulator.all_settings()
    assert control("GET", "/brevo/settings").json()["unknown_attributes"] == "drop"
    assert control("GET", "/brevo/faults").json()["rate_limits"]["second"] == {"requests": 10, "seconds": 1}
    assert "COMPANY" not in {a["name"] for a in brevo("GET", "/contacts/attributes").json()["attributes"]}
    assert brevo("GET", "/contacts/lists").json()["count"] == 1
    assert brevo("POST", "/contacts", json={"email": "a@example.com"}).json() == {"id": 1}


def test_unknown_places_and_bad_control_requests(sandbox, control):
    assert requests.get(sandbox.url + "/salesforce/x", timeout=5).status_code == 404
    assert control("GET", "/salesforce/contacts").status_code == 404
    assert control("POST", "/brevo/settings", json={"nope": 1}).status_code == 400
    assert control("POST", "/brevo/settings", json={"unknown_attributes": "maybe"}).status_code == 400
    assert control("POST", "/brevo/faults", data=b"{not json").status_code == 400


def test_every_registered_emulator_is_served_under_its_name(sandbox, control):
    names = [cls.name for cls in EMULATOR_CLASSES]
    assert len(set(names)) == len(names) and {"brevo", "hubspot"} <= set(names)
    for name in names:
        assert control("GET", "/%s/contacts" % name).status_code == 200
        assert requests.get("%s/%s/nothing-here" % (sandbox.url, name), timeout=5).status_code in (401, 403, 404, 405)


# Server


def test_keep_alive_and_content_length_on_every_answer(sandbox):
    session = requests.Session()
    session.headers["api-key"] = API_KEY
    created = session.post(sandbox.url + "/brevo/v3/contacts", json={"email": "a@example.com"}, timeout=5)
    again = session.post(
        sandbox.url + "/brevo/v3/contacts", json={"email": "a@example.com", "updateEnabled": True}, timeout=5
    )
    assert (created.headers["Content-Length"], again.headers["Content-Length"]) == (str(len(created.content)), "0")
    assert created.raw.version == 11 and "close" not in created.headers.get("Connection", "")
    assert len(session.adapters["http://"].poolmanager.pools) == 1


def test_the_server_api():
    server = SandboxServer(port=0)
    assert server.url.startswith("http://127.0.0.1:")
    server.stop()  # never started: must not hang
    with SandboxServer(options=SandboxOptions(latency_ms=0)) as running:
        assert running.emulator("brevo").name == "brevo"
        assert brevo_create(running).status_code == 201
    with pytest.raises(requests.ConnectionError):
        brevo_create(running, timeout=1)


# The command


def test_parse_rate_limit():
    assert parse_rate_limit("hubspot=100/10") == ("hubspot", (100, 10.0))
    assert parse_rate_limit("brevo=3/0.5") == ("brevo", (3, 0.5))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--error-rate", "1.5"], "--error-rate must be between 0 and 1"),
        (["--timeout-rate", "-1"], "--timeout-rate must be between 0 and 1"),
        (["--latency-ms", "-5"], "--latency-ms must be 0 or more"),
        (["--slow-body", "-1"], "--slow-body must be 0 or more"),
        (["--slow-headers", "-0.5"], "--slow-headers must be 0 or more"),
        (["--rate-limit", "salesforce=1/1"], "expected CRM=REQUESTS/SECONDS"),
        (["--rate-limit", "hubspot=ten"], "expected CRM=REQUESTS/SECONDS"),
        (["--rate-limit", "hubspot=5/0"], "expected CRM=REQUESTS/SECONDS"),
    ],
)
def test_command_refuses_bad_options(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("crm_sandbox", *args, stdout=StringIO())


def test_command_serves_until_sigterm_and_prints_no_credentials():
    command = [sys.executable, "manage.py", "crm_sandbox", "--port", "0", "--no-rate-limits", "--seed", "1"]
    process = subprocess.Popen(
        command,
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DEBUG": "true"},
    )
    try:
        first = process.stdout.readline()
        url = first.strip().rsplit(" ", 1)[-1]
        assert first.startswith("CRM sandbox listening on http://127.0.0.1:")
        assert process.stdout.readline().strip() == "Point crmsync at it with CRMSYNC_SANDBOX_URL=%s" % url
        assert requests.get(url + "/_sandbox/brevo/contacts", timeout=5).json() == []
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "CRM sandbox stopped." in out
    assert API_KEY not in first + out and ACCESS_TOKEN not in first + out
