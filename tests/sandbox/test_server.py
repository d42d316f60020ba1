import time
from io import StringIO

import pytest
import requests
from django.core.management import CommandError, call_command

from integrations.sandbox.brevo import API_KEY


def post_contact(server, email="a@example.com"):
    return requests.post(server.url + "/brevo/v3/contacts", json={"email": email}, headers={"api-key": API_KEY}, timeout=5)


def test_error_rate_one_answers_5xx_in_the_crms_shape(sandbox):
    requests.post(sandbox.url + "/_sandbox/brevo/faults", json={"error_rate": 1.0})
    response = post_contact(sandbox)
    assert response.status_code in (500, 502, 503)
    assert response.json()["code"] == "internal_error"
    assert requests.get(sandbox.url + "/_sandbox/brevo/contacts").json() == []


def test_timeout_holds_then_answers_504(sandbox):
    requests.post(sandbox.url + "/_sandbox/brevo/faults", json={"timeout_rate": 1.0, "timeout_seconds": 0.3})
    started = time.monotonic()
    assert post_contact(sandbox).status_code == 504
    assert time.monotonic() - started >= 0.3
    with pytest.raises(requests.Timeout):
        requests.post(sandbox.url + "/brevo/v3/contacts", json={}, headers={"api-key": API_KEY}, timeout=0.1)


def test_latency_is_added(sandbox):
    requests.post(sandbox.url + "/_sandbox/brevo/faults", json={"latency_ms": 150})
    started = time.monotonic()
    post_contact(sandbox)
    assert time.monotonic() - started >= 0.15


def test_requests_are_logged_without_headers_and_reset_forgets_all(sandbox):
    post_contact(sandbox)
    requests.post(sandbox.url + "/brevo/v3/contacts", json={"email": "b@example.com"})
    log = requests.get(sandbox.url + "/_sandbox/brevo/requests").json()
    assert [(r["method"], r["path"], r["status"]) for r in log] == [("POST", "/v3/contacts", 201), ("POST", "/v3/contacts", 401)]
    assert API_KEY not in str(log)
    requests.post(sandbox.url + "/_sandbox/reset")
    assert requests.get(sandbox.url + "/_sandbox/brevo/requests").json() == []
    assert requests.get(sandbox.url + "/_sandbox/brevo/contacts").json() == []


def test_unknown_paths_and_settings(sandbox):
    assert requests.get(sandbox.url + "/salesforce/x").status_code == 404
    assert requests.post(sandbox.url + "/_sandbox/brevo/settings", json={"nope": 1}).status_code == 400


@pytest.mark.parametrize(
    "args, message",
    [
        (["--error-rate", "1.5"], "--error-rate must be between 0 and 1"),
        (["--rate-limit", "salesforce=1/1"], "expected CRM=REQUESTS/SECONDS"),
        (["--rate-limit", "hubspot=ten"], "expected CRM=REQUESTS/SECONDS"),
    ],
)
def test_command_refuses_bad_options(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("crm_sandbox", *args, stdout=StringIO())
