"""The sandbox's Mautic beyond batch/new: batch/edit by id, the exact email
lookup, delete, and the webhooks it signs as Mautic does (docs/crm-api.md,
section 3)."""

import base64
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import requests

from crm_sandbox.mautic import PASSWORD, USERNAME

SECRET = "mautic-webhook-secret-for-tests"


@pytest.fixture
def mautic(sandbox):
    session = requests.Session()
    session.auth = (USERNAME, PASSWORD)

    def call(method, path, **kwargs):
        return session.request(method, sandbox.url + "/mautic" + path, timeout=5, **kwargs)

    return call


@pytest.fixture
def receiver():
    """A webhook target over a real socket that keeps each call's headers and body."""
    calls, arrived = [], threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            calls.append((dict(self.headers), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            arrived.set()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d/hook" % server.server_port, calls, arrived
    server.shutdown()
    server.server_close()


def control(sandbox, what, **body):
    return requests.post(sandbox.url + "/_sandbox/mautic/" + what, json=body, timeout=5)


def create(mautic, *emails):
    answer = mautic("POST", "/api/contacts/batch/new", json=[{"email": e} for e in emails]).json()
    return [contact["id"] for contact in answer["contacts"]]


def test_batch_edit_updates_by_id_and_answers_404_for_an_unknown_id_in_its_own_shape(mautic):
    [first, second] = create(mautic, "a@example.com", "b@example.com")
    answer = mautic(
        "PATCH",
        "/api/contacts/batch/edit",
        json=[{"id": first, "email": "a2@example.com"}, {"id": 999, "email": "x@example.com"}, {"id": second}],
    )
    body = answer.json()
    assert answer.status_code == 200
    assert body["statusCodes"] == [200, 404, 200]
    # Failed items are left out of contacts, so the keys no longer run 0..n-1.
    assert sorted(body["contacts"]) == ["0", "2"]
    assert body["contacts"]["0"]["fields"]["all"]["email"] == "a2@example.com"
    assert body["errors"] == {"1": {"message": "Item was not found.", "code": 404, "type": "api"}}
    # The email moved: the old one finds nothing, the new one the same record.
    assert mautic("GET", "/api/contacts/%d" % first).json()["contact"]["fields"]["all"]["email"] == "a2@example.com"
    again = mautic("POST", "/api/contacts/batch/new", json=[{"email": "a2@example.com"}]).json()
    assert again["statusCodes"] == [200] and again["contacts"][0]["id"] == first


def test_mautic_5_refuses_an_email_another_contact_has_with_a_422_per_item(mautic):
    [first, second] = create(mautic, "a@example.com", "b@example.com")
    body = mautic("PATCH", "/api/contacts/batch/edit", json=[{"id": first, "email": "b@example.com"}]).json()
    assert body["statusCodes"] == [422]
    assert body["errors"] == [
        {
            "code": 422,
            "message": "email: This field must be unique.",
            "details": {"email": ["This field must be unique."]},
            "type": None,
        }
    ]
    single = mautic("PATCH", "/api/contacts/%d/edit" % first, json={"email": "B@example.com"})
    assert single.status_code == 422
    emails = {c["id"]: c["fields"]["all"]["email"] for c in mautic("GET", "/api/contacts").json()["contacts"].values()}
    assert emails == {first: "a@example.com", second: "b@example.com"}


def test_mautic_4_merges_into_the_older_contact_and_answers_with_it(mautic, sandbox):
    control(sandbox, "settings", email_conflict="merge").raise_for_status()
    [older, newer] = create(mautic, "a@example.com", "b@example.com")
    body = mautic(
        "PATCH", "/api/contacts/batch/edit", json=[{"id": newer, "email": "a@example.com", "firstname": "Ann"}]
    ).json()
    assert body["statusCodes"] == [200]
    assert body["contacts"][0]["id"] == older
    assert body["contacts"][0]["fields"]["all"]["firstname"] == "Ann"
    assert mautic("GET", "/api/contacts/%d" % newer).status_code == 404


def test_exact_lookup_by_where_eq_and_in(mautic):
    [a, b, _] = create(mautic, "a@example.com", "b@example.com", "ab@example.com")
    eq = mautic(
        "GET",
        "/api/contacts",
        params={"where[0][col]": "email", "where[0][expr]": "eq", "where[0][val]": "a@example.com"},
    )
    assert eq.json()["total"] == "1" and list(eq.json()["contacts"]) == [str(a)]
    both = mautic(
        "GET",
        "/api/contacts",
        params={"where[0][col]": "email", "where[0][expr]": "in", "where[0][val]": '"A@example.com","b@example.com"'},
    ).json()
    assert sorted(both["contacts"]) == sorted([str(a), str(b)])
    none = mautic(
        "GET",
        "/api/contacts",
        params={"where[0][col]": "email", "where[0][expr]": "eq", "where[0][val]": "z@example.com"},
    )
    assert none.json() == {"total": "0", "contacts": {}}


def test_delete_answers_the_contact_with_a_null_id_then_404(mautic, sandbox):
    [contact] = create(mautic, "a@example.com")
    first = mautic("DELETE", "/api/contacts/%d/delete" % contact)
    assert first.status_code == 200
    assert first.json()["contact"]["id"] is None
    assert first.json()["contact"]["fields"]["all"]["email"] == "a@example.com"
    second = mautic("DELETE", "/api/contacts/%d/delete" % contact)
    assert second.status_code == 404
    assert second.json()["errors"][0]["message"] == "Item was not found."
    assert requests.get(sandbox.url + "/_sandbox/mautic/contacts", timeout=5).json() == []


def signed(headers, body):
    expected = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    return headers["Webhook-Signature"] == expected


def test_a_delete_posts_lead_post_delete_signed_over_the_raw_body(mautic, sandbox, receiver):
    url, calls, arrived = receiver
    control(sandbox, "settings", webhook_url=url, webhook_secret=SECRET).raise_for_status()
    [contact] = create(mautic, "a/b@example.com")
    mautic("DELETE", "/api/contacts/%d/delete" % contact)

    assert arrived.wait(5)
    [(headers, body)] = calls
    assert signed(headers, body)
    assert b"a\\/b@example.com" in body, "json_encode escapes slashes, and the signature covers that"
    [event] = json.loads(body)["mautic.lead_post_delete"]
    assert event["id"] == contact and event["contact"]["id"] is None
    assert "all" not in event["contact"]["fields"]
    assert event["contact"]["fields"]["core"]["email"]["value"] == "a/b@example.com"


@pytest.mark.parametrize("kind, verb, reason", [("unsubscribed", "unsubscribed", 1), ("hard_bounce", "bounced", 2)])
def test_marking_a_contact_do_not_contact_posts_the_channel_change(mautic, sandbox, receiver, kind, verb, reason):
    url, calls, _ = receiver
    control(sandbox, "settings", webhook_url=url, webhook_secret=SECRET).raise_for_status()
    [contact] = create(mautic, "a@example.com")

    answer = control(sandbox, "events", kind=kind, id=contact)

    assert answer.status_code == 200 and answer.json()["target_status"] == 200
    [(headers, body)] = calls
    assert signed(headers, body)
    [event] = json.loads(body)["mautic.lead_channel_subscription_changed"]
    assert (event["channel"], event["old_status"], event["new_status"]) == ("email", "contactable", verb)
    assert event["contact"]["id"] == contact
    stored = mautic("GET", "/api/contacts/%d" % contact).json()["contact"]
    assert [entry["reason"] for entry in stored["doNotContact"]] == [reason]


def test_the_sandbox_sends_only_the_events_mautic_has(sandbox, receiver):
    url, _, _ = receiver
    control(sandbox, "settings", webhook_url=url, webhook_secret=SECRET).raise_for_status()
    answer = control(sandbox, "events", kind="merged", id=1)
    assert answer.status_code == 400
    assert "deleted, unsubscribed, hard_bounce" in answer.json()["message"]
