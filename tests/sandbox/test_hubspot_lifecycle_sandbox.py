"""The sandbox's HubSpot beyond upsert: update by id and its conflicts, GDPR
delete, merge, and the webhook calls it signs as HubSpot does."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from integrations.backends.hubspot import signature_v3

CONTACTS = "/crm/v3/objects/contacts"
SECRET = "sandbox-webhook-secret-0000000001"


def create(hubspot, email):
    response = hubspot("POST", CONTACTS, json={"properties": {"email": email}})
    assert response.status_code == 201
    return response.json()["id"]


def update(hubspot, *inputs):
    return hubspot("POST", CONTACTS + "/batch/update", json={"inputs": [dict(i) for i in inputs]})


def email_of(hubspot, record_id):
    return hubspot("GET", "%s/%s" % (CONTACTS, record_id)).json()["properties"]["email"]


def test_an_update_to_an_email_another_record_has_refuses_the_whole_call(hubspot):
    ann, bob = create(hubspot, "ann@example.com"), create(hubspot, "bob@example.com")

    response = update(
        hubspot,
        {"id": ann, "properties": {"email": "ann2@example.com"}},
        {"id": bob, "properties": {"email": "ann@example.com"}},
    )

    assert response.status_code == 409
    assert (response.json()["category"], response.json()["message"]) == (
        "CONFLICT",
        "Contact already exists. Existing ID: %s" % ann,
    )
    assert (email_of(hubspot, ann), email_of(hubspot, bob)) == ("ann@example.com", "bob@example.com")


def test_an_update_keeping_its_own_email_is_no_conflict(hubspot):
    ann = create(hubspot, "ann@example.com")
    response = update(hubspot, {"id": ann, "properties": {"email": "ann@example.com", "firstname": "A"}})
    assert response.status_code == 200


def test_an_update_of_a_missing_id_is_a_207_naming_it_and_the_rest_is_applied(hubspot):
    ann = create(hubspot, "ann@example.com")

    response = update(
        hubspot,
        {"id": ann, "properties": {"email": "ann.lee@example.com"}},
        {"id": "999999", "properties": {"firstname": "Nobody"}},
    )

    assert response.status_code == 207
    [error] = response.json()["errors"]
    assert (error["category"], error["context"]) == ("OBJECT_NOT_FOUND", {"ids": ["999999"]})
    assert email_of(hubspot, ann) == "ann.lee@example.com"


def test_gdpr_delete_by_id_and_by_email(hubspot):
    ann, bob = create(hubspot, "ann@example.com"), create(hubspot, "bob@example.com")

    by_id = hubspot("POST", CONTACTS + "/gdpr-delete", json={"objectId": ann})
    by_email = hubspot("POST", CONTACTS + "/gdpr-delete", json={"objectId": "bob@example.com", "idProperty": "email"})

    assert (by_id.status_code, by_id.content, by_email.status_code) == (204, b"", 204)
    assert [hubspot("GET", "%s/%s" % (CONTACTS, i)).status_code for i in (ann, bob)] == [404, 404]


@pytest.mark.parametrize(
    "body, status",
    [({"objectId": "nobody@example.com", "idProperty": "email"}, 204), ({"objectId": "999999"}, 404), ({}, 400)],
)
def test_gdpr_delete_of_what_hubspot_does_not_have(hubspot, body, status):
    assert hubspot("POST", CONTACTS + "/gdpr-delete", json=body).status_code == status


def test_a_merged_away_id_is_gone_and_the_primary_keeps_its_email(hubspot):
    primary, merged = create(hubspot, "ann@example.com"), create(hubspot, "ann.old@example.com")

    response = hubspot("POST", CONTACTS + "/merge", json={"primaryObjectId": primary, "objectIdToMerge": merged})

    assert response.status_code == 200 and response.json()["id"] == primary
    assert response.json()["properties"]["hs_merged_object_ids"] == merged
    assert update(hubspot, {"id": merged, "properties": {"firstname": "A"}}).status_code == 207
    assert email_of(hubspot, primary) == "ann@example.com"


class Catcher(BaseHTTPRequestHandler):
    calls = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.calls.append((self.path, self.headers, body))  # case-insensitive
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def catcher():
    Catcher.calls = []
    server = HTTPServer(("127.0.0.1", 0), Catcher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "http://127.0.0.1:%d/integrations/hubspot/webhook/" % server.server_port, Catcher.calls
    server.shutdown()


def wait_for_calls(calls, count):
    deadline = time.monotonic() + 5
    while len(calls) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return calls


def test_its_own_archive_and_merge_call_the_webhook_signed_v3(hubspot, control, catcher):
    url, calls = catcher
    control("POST", "/hubspot/settings", json={"webhook_url": url, "webhook_secret": SECRET}).raise_for_status()
    ann, bob, cid = (create(hubspot, "%s@example.com" % n) for n in ("ann", "bob", "cid"))
    hubspot("DELETE", "%s/%s" % (CONTACTS, ann))
    hubspot("POST", CONTACTS + "/merge", json={"primaryObjectId": bob, "objectIdToMerge": cid})
    hubspot("POST", CONTACTS + "/gdpr-delete", json={"objectId": bob})

    events = {}
    for _path, headers, body in wait_for_calls(calls, 3):
        timestamp = headers["X-HubSpot-Request-Timestamp"]
        assert headers["X-HubSpot-Signature-v3"] == signature_v3(SECRET, "POST", url, body, timestamp)
        assert abs(int(timestamp) - time.time() * 1000) < 60_000
        [event] = json.loads(body)
        events[event["subscriptionType"]] = event
    assert events["contact.deletion"]["objectId"] == int(ann)
    assert events["contact.privacyDeletion"]["objectId"] == int(bob)
    merge = events["contact.merge"]
    assert (merge["primaryObjectId"], merge["mergedObjectIds"]) == (int(bob), [int(cid)])


def test_an_event_sent_on_request_takes_a_given_timestamp_and_ids(control, catcher):
    url, calls = catcher
    control("POST", "/hubspot/settings", json={"webhook_url": url, "webhook_secret": SECRET}).raise_for_status()
    details = {
        "kind": "unsubscribed",
        "id": "12",
        "timestamp_ms": 1_700_000_000_000,
        "event_id": 5,
        "attempt_number": 2,
    }

    answer = control("POST", "/hubspot/events", json=details).json()

    assert answer["target_status"] == 204
    [(_, headers, body)] = wait_for_calls(calls, 1)
    assert headers["X-HubSpot-Request-Timestamp"] == "1700000000000"
    [event] = json.loads(body)
    assert (event["eventId"], event["attemptNumber"], event["objectId"]) == (5, 2, 12)
    assert (event["propertyName"], event["propertyValue"]) == ("hs_email_optout", "true")


def test_it_sends_no_spam_complaint_event(control, catcher):
    url, _ = catcher
    control("POST", "/hubspot/settings", json={"webhook_url": url, "webhook_secret": SECRET}).raise_for_status()
    answer = control("POST", "/hubspot/events", json={"kind": "spam_complaint", "id": "1"})
    assert answer.status_code == 400
