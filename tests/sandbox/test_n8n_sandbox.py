import time

import pytest
import requests

from crm_sandbox.n8n import BASIC_USER, WEBHOOK_PATH, WEBHOOK_SECRET


@pytest.fixture
def hook(sandbox):
    return sandbox.url + "/n8n/webhook/" + WEBHOOK_PATH


def settings(sandbox, **values):
    requests.post(sandbox.url + "/_sandbox/n8n/settings", json=values, timeout=5).raise_for_status()


def bearer(secret=WEBHOOK_SECRET):
    return {"Authorization": "Bearer " + secret}


def test_responds_immediately_and_an_array_is_one_execution(sandbox, hook):
    single = requests.post(hook, json={"email": "a@example.com"}, headers=bearer())
    assert (single.status_code, single.json()) == (200, {"message": "Workflow was started"})
    requests.post(hook, json=[{"email": "b@example.com"}, {"email": "c@example.com"}], headers=bearer())
    assert [i["email"] for i in requests.get(sandbox.url + "/_sandbox/n8n/contacts").json()] == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
    ]


def test_unregistered_or_inactive_is_404_with_the_hint(sandbox, hook):
    other = requests.post(sandbox.url + "/n8n/webhook/nope", json={}, headers=bearer())
    assert (
        other.status_code == 404 and other.json()["message"] == 'The requested webhook "POST nope" is not registered.'
    )
    settings(sandbox, active=False)
    inactive = requests.post(hook, json={}, headers=bearer())
    assert inactive.status_code == 404 and "must be active" in inactive.json()["hint"]


def test_wrong_method_says_which_one_to_use(hook):
    response = requests.get(hook)
    assert (
        response.json()["message"]
        == "This webhook is not registered for GET requests. Did you mean to make a POST request?"
    )


def test_header_auth_refuses_with_403_plain_text(hook):
    for headers in ({}, bearer("wrong")):
        response = requests.post(hook, json={}, headers=headers)
        assert (response.status_code, response.text) == (403, "Authorization data is wrong!")
        assert response.headers["WWW-Authenticate"] == 'Basic realm="Webhook"'


def test_basic_auth_401_when_missing_403_when_wrong(sandbox, hook):
    settings(sandbox, auth="basic")
    assert requests.post(hook, json={}).text == "Authorization is required!"
    assert requests.post(hook, json={}, auth=(BASIC_USER, "wrong")).status_code == 403
    assert requests.post(hook, json={}, auth=(BASIC_USER, WEBHOOK_SECRET)).status_code == 200


def test_empty_200_bug(sandbox, hook):
    settings(sandbox, respond="empty_200")
    response = requests.post(hook, json={}, headers=bearer())
    assert (response.status_code, response.content) == (200, b"")


def test_callbacks_can_be_duplicated_or_dropped(sandbox, hook):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(
                (self.headers["Authorization"], json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            )
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = "http://127.0.0.1:%d/callback" % server.server_address[1]
        settings(
            sandbox, callback_url=url, callback_secret="s3", callback_delay_seconds=0.05, callback_duplicate_rate=1.0
        )
        requests.post(hook, json={"contact_id": 7, "email": "a@example.com"}, headers=bearer())
        time.sleep(0.5)
        assert len(received) == 2
        assert received[0][0] == "Bearer s3"
        assert received[0][1]["enrichment_id"] == received[1][1]["enrichment_id"], "a duplicate is the same callback"
        assert received[0][1]["contact_id"] == 7
        settings(sandbox, callback_drop_rate=1.0)
        requests.post(hook, json={"contact_id": 8}, headers=bearer())
        time.sleep(0.3)
        assert len(received) == 2
    finally:
        server.shutdown()
