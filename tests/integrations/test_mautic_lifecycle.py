"""MauticBackend's contact life against Mautic's HTTP API mocked with `responses`:
update by id, sync modes, delete, and its webhooks (docs/crm-api.md, section 3)."""

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from contacts.models import Contact, ContactSync, CRMEvent, ProcessingStatus
from integrations.backends.base import ERASE, REMOVE, OutcomeKind, SyncItem
from integrations.backends.inbound import WebhookCall, WebhookRejected
from integrations.backends.mautic import MauticBackend
from integrations.webhooks.crm import apply_notices

from .conftest import sent_json, unsaved_contact

BASE = "https://mautic.example.com"
NEW = BASE + "/api/contacts/batch/new"
EDIT = BASE + "/api/contacts/batch/edit"
LOOKUP = BASE + "/api/contacts"
SECRET = "mautic-webhook-secret-for-tests"
UNIQUE = {
    "code": 422,
    "message": "email: This field must be unique.",
    "details": {"email": ["This field must be unique."]},
    "type": None,
}
GONE = {"message": "Item was not found.", "code": 404, "type": "api"}


@pytest.fixture(autouse=True)
def mautic(settings):
    MauticBackend._tokens.clear()
    settings.MAUTIC_BASE_URL = BASE
    settings.MAUTIC_USERNAME = "api-user"
    settings.MAUTIC_PASSWORD = "mautic-password-for-tests"


def item(email, external_id="", key=None, **fields):
    contact = unsaved_contact(email=email, **fields)
    backend = MauticBackend()
    return SyncItem(
        key=key or contact.pk,
        contact=contact,
        payload=backend.build_payload(contact),
        external_id=external_id,
        email=backend.crm_email(email),
    )


def record(contact_id, email):
    return {"id": contact_id, "fields": {"all": {"id": contact_id, "email": email}}}


def found(*records):
    return {"total": str(len(records)), "contacts": {str(r["id"]): r for r in records}}


def lookup_query(call):
    return {k: v[0] for k, v in parse_qs(urlsplit(call.request.url).query).items()}


# Update by id


def test_a_contact_with_an_id_is_updated_by_that_id_email_included(crm_api):
    crm_api.patch(EDIT, json={"contacts": [record(7, "new@example.com")], "statusCodes": [200]})
    [outcome] = MauticBackend().push([item("new@example.com", "7", first_name="Ann")])
    assert (outcome.kind, outcome.external_id, outcome.message) == (OutcomeKind.ACCEPTED, "7", "")
    [call] = crm_api.calls
    assert sent_json(call) == [{"id": 7, "email": "new@example.com", "firstname": "Ann"}]


def test_with_and_without_ids_go_in_separate_requests_so_edit_only_gets_ids(crm_api):
    crm_api.patch(EDIT, json={"contacts": [record(7, "a@example.com")], "statusCodes": [200]})
    crm_api.post(NEW, status=201, json={"contacts": [record(9, "b@example.com")], "statusCodes": [201]})
    outcomes = MauticBackend().push([item("b@example.com"), item("a@example.com", "7")])
    assert sorted(o.external_id for o in outcomes) == ["7", "9"]
    bodies = {call.request.method: sent_json(call) for call in crm_api.calls}
    assert bodies == {"PATCH": [{"id": 7, "email": "a@example.com"}], "POST": [{"email": "b@example.com"}]}


def test_an_id_gone_is_not_in_crm_and_spares_the_others(crm_api):
    crm_api.patch(
        EDIT,
        json={
            "contacts": {"0": record(7, "a@example.com"), "2": record(8, "c@example.com")},
            "statusCodes": [200, 404, 200],
            "errors": {"1": GONE},
        },
    )
    outcomes = MauticBackend().push(
        [item("a@example.com", "7"), item("b@example.com", "5"), item("c@example.com", "8")]
    )
    assert [o.kind for o in outcomes] == [OutcomeKind.ACCEPTED, OutcomeKind.NOT_IN_CRM, OutcomeKind.ACCEPTED]
    assert outcomes[1].message == (
        "Mautic has no contact 5 any more (deleted or merged there). Select it again to create it anew."
    )
    assert len(crm_api.calls) == 1, "nothing is created for the gone id"


def test_an_email_another_contact_has_is_permanent_naming_that_contact(crm_api):
    crm_api.patch(EDIT, json={"contacts": [], "statusCodes": [422], "errors": [UNIQUE]})
    crm_api.get(LOOKUP, json=found(record(3, "taken@example.com")))
    [outcome] = MauticBackend().push([item("taken@example.com", "7")])
    assert outcome.kind is OutcomeKind.PERMANENT and outcome.http_status == 422
    assert "contact 3 already has it, so contact 7 was not changed" in outcome.message
    assert "Merge the two contacts in Mautic" in outcome.message
    assert lookup_query(crm_api.calls[1]) == {
        "where[0][col]": "email",
        "where[0][expr]": "eq",
        "where[0][val]": "taken@example.com",
        "start": "0",
        "limit": "200",
    }


def test_a_mautic_4_merge_records_the_surviving_id(crm_api):
    crm_api.patch(EDIT, json={"contacts": [record(3, "taken@example.com")], "statusCodes": [200]})
    [outcome] = MauticBackend().push([item("taken@example.com", "7")])
    assert (outcome.kind, outcome.external_id) == (OutcomeKind.ACCEPTED, "3")
    assert "merged contact 7 into contact 3" in outcome.message


def test_edited_contacts_join_the_segment(crm_api, settings):
    settings.MAUTIC_SEGMENT_ID = "4"
    crm_api.patch(EDIT, json={"contacts": [record(7, "a@example.com")], "statusCodes": [200]})
    crm_api.post(BASE + "/api/segments/4/contacts/add", json={"success": 1})
    MauticBackend().push([item("a@example.com", "7")])
    assert sent_json(crm_api.calls[1]) == {"ids": [7]}


# Sync modes


def test_update_only_looks_the_chunk_up_once_updates_the_found_by_id_and_creates_nothing(crm_api, settings):
    settings.MAUTIC_SYNC_MODE = "update_only"
    crm_api.get(LOOKUP, json=found(record(4, "a@example.com")))
    crm_api.patch(EDIT, json={"contacts": [record(4, "a@example.com")], "statusCodes": [200]})
    outcomes = MauticBackend().push([item("a@example.com", key=1), item("b@example.com", key=2)])
    by_key = {o.key: o for o in outcomes}
    assert (by_key[1].kind, by_key[1].external_id) == (OutcomeKind.ACCEPTED, "4")
    assert by_key[2].kind is OutcomeKind.NOT_IN_CRM and by_key[2].message.startswith("update_only: ")
    assert [c.request.method for c in crm_api.calls] == ["GET", "PATCH"]
    query = lookup_query(crm_api.calls[0])
    assert (query["where[0][expr]"], query["where[0][val]"]) == ("in", '"a@example.com","b@example.com"')
    assert sent_json(crm_api.calls[1]) == [{"id": 4, "email": "a@example.com"}]


def test_update_only_with_nothing_found_sends_no_write(crm_api, settings):
    settings.MAUTIC_SYNC_MODE = "update_only"
    crm_api.get(LOOKUP, json={"total": "0", "contacts": {}})
    [outcome] = MauticBackend().push([item("a@example.com")])
    assert outcome.kind is OutcomeKind.NOT_IN_CRM
    assert len(crm_api.calls) == 1


def test_create_only_leaves_a_known_contact_and_creates_only_the_missing(crm_api, settings):
    settings.MAUTIC_SYNC_MODE = "create_only"
    settings.MAUTIC_SEGMENT_ID = "4"
    crm_api.get(LOOKUP, json=found(record(4, "a@example.com")))
    crm_api.post(NEW, status=201, json={"contacts": [record(9, "b@example.com")], "statusCodes": [201]})
    crm_api.post(BASE + "/api/segments/4/contacts/add", json={"success": 1})
    outcomes = MauticBackend().push(
        [item("a@example.com", key=1), item("b@example.com", key=2), item("c@example.com", "6", key=3)]
    )
    by_key = {o.key: o for o in outcomes}
    assert (by_key[1].kind, by_key[1].external_id) == (OutcomeKind.ACCEPTED, "4")
    assert "left as it is" in by_key[1].message
    assert (by_key[2].kind, by_key[2].external_id) == (OutcomeKind.ACCEPTED, "9")
    assert (by_key[3].kind, by_key[3].external_id) == (OutcomeKind.ACCEPTED, "6")
    assert by_key[3].message.startswith("create_only: ")
    assert sent_json(crm_api.calls[1]) == [{"email": "b@example.com"}]
    assert sent_json(crm_api.calls[2]) == {"ids": [9]}, "only the created one joins the segment"
    assert not [c for c in crm_api.calls if c.request.method == "PATCH"]


def test_a_lookup_refused_by_the_rate_limit_makes_the_chunk_wait(crm_api, settings):
    settings.MAUTIC_SYNC_MODE = "update_only"
    crm_api.get(LOOKUP, status=429, json={"errors": [{"code": 429, "message": "limit", "details": []}]})
    outcomes = MauticBackend().push([item("a@example.com"), item("b@example.com")])
    assert {o.kind for o in outcomes} == {OutcomeKind.WAIT}


# Removal and erasure


def removal(operation, external_id="", email="gone@example.com"):
    return SyncItem(key=1, contact=None, payload=None, external_id=external_id, operation=operation, email=email)


@pytest.mark.parametrize("operation", [REMOVE, ERASE])
def test_removal_and_erasure_delete_by_id_and_keep_no_fields_in_the_proof(crm_api, operation):
    crm_api.delete(
        BASE + "/api/contacts/7/delete",
        json={"contact": {"id": None, "fields": {"all": {"email": "x@y.z", "firstname": "Ann"}}}},
    )
    [outcome] = MauticBackend().push([removal(operation, "7")])
    assert (outcome.kind, outcome.found) == (OutcomeKind.ACCEPTED, True)
    assert outcome.answer == "HTTP 200 Mautic deleted contact 7."


def test_a_gone_id_is_removed_not_found(crm_api):
    crm_api.delete(
        BASE + "/api/contacts/7/delete",
        status=404,
        json={"errors": [{"code": 404, "message": "Item was not found.", "details": [], "type": None}]},
    )
    [outcome] = MauticBackend().push([removal(ERASE, "7")])
    assert (outcome.kind, outcome.found) == (OutcomeKind.ACCEPTED, False)


def test_a_404_that_is_not_mautics_is_not_taken_for_done(crm_api):
    crm_api.delete(BASE + "/api/contacts/7/delete", status=404, body="<html>Not Found</html>")
    [outcome] = MauticBackend().push([removal(ERASE, "7")])
    assert outcome.kind is OutcomeKind.PERMANENT


def test_without_an_id_the_email_is_looked_up_exactly_then_deleted(crm_api):
    crm_api.get(LOOKUP, json=found(record(12, "gone@example.com")))
    crm_api.delete(BASE + "/api/contacts/12/delete", json={"contact": {"id": None}})
    [outcome] = MauticBackend().push([removal(ERASE)])
    assert (outcome.found, outcome.answer) == (True, "HTTP 200 Mautic deleted contact 12.")
    assert lookup_query(crm_api.calls[0])["where[0][expr]"] == "eq"


def test_without_an_id_and_no_match_it_is_not_found(crm_api):
    crm_api.get(LOOKUP, json={"total": "0", "contacts": {}})
    [outcome] = MauticBackend().push([removal(REMOVE)])
    assert (outcome.kind, outcome.found) == (OutcomeKind.ACCEPTED, False)
    assert len(crm_api.calls) == 1


# Webhooks


def call(payload, secret=SECRET, raw=None):
    body = raw if raw is not None else json.dumps(payload).replace("/", "\\/").encode()
    signature = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return WebhookCall(
        "POST",
        "https://crmsync.example/integrations/mautic/webhook/",
        {"Webhook-Signature": signature},
        body,
        datetime.now(UTC),
    )


DELETED = {
    "mautic.lead_post_delete": [
        {
            "id": 7,
            "contact": {"id": None, "fields": {"core": {"email": {"value": "a@example.com"}}}},
            "timestamp": "2026-01-02T03:04:05+00:00",
        }
    ]
}


def channel(verb, channel_name="email", contact_id=8):
    event = {
        "contact": {"id": contact_id, "fields": {"core": {}}},
        "channel": channel_name,
        "old_status": "contactable",
        "new_status": verb,
        "timestamp": "2026-01-02T03:04:05+00:00",
    }
    return {"mautic.lead_channel_subscription_changed": [event]}


@pytest.mark.parametrize(
    "payload, kind, external_id",
    [
        (DELETED, "deleted", "7"),
        (channel("unsubscribed"), "unsubscribed", "8"),
        (channel("bounced"), "hard_bounce", "8"),
    ],
)
def test_each_event_with_a_valid_signature_is_read_and_with_another_refused(payload, kind, external_id):
    MauticBackend.verify_webhook(call(payload), SECRET)
    [notice] = MauticBackend.parse_webhook(call(payload))
    assert (notice.kind, notice.external_id) == (kind, external_id)
    assert notice.occurred_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with pytest.raises(WebhookRejected) as refused:
        MauticBackend.verify_webhook(call(payload, secret="another-secret-entirely"), SECRET)
    assert refused.value.status == 401


def test_a_call_without_a_signature_is_refused():
    unsigned = WebhookCall("POST", "u", {}, b"{}", datetime.now(UTC))
    with pytest.raises(WebhookRejected):
        MauticBackend.verify_webhook(unsigned, SECRET)


def test_the_signature_covers_the_raw_bytes_not_the_parsed_json():
    body = json.dumps(DELETED).replace("/", "\\/").encode()
    tampered = call(None, raw=body)
    tampered = WebhookCall(
        tampered.method, tampered.url, tampered.headers, body.replace(b'"id": 7', b'"id":  7'), tampered.received_at
    )
    with pytest.raises(WebhookRejected):
        MauticBackend.verify_webhook(tampered, SECRET)


def test_other_channels_verbs_and_events_are_left_out_and_a_non_object_is_400():
    payload = {**channel("manual"), "mautic.lead_post_save_update": [{"contact": {"id": 1}}]}
    assert MauticBackend.parse_webhook(call(payload)) == []
    assert MauticBackend.parse_webhook(call(channel("unsubscribed", channel_name="sms"))) == []
    with pytest.raises(WebhookRejected) as refused:
        MauticBackend.parse_webhook(call(None, raw=b"[1, 2]"))
    assert refused.value.status == 400


def test_the_same_event_has_the_same_id_and_different_events_differ():
    first = MauticBackend.parse_webhook(call(DELETED))[0].event_id
    assert MauticBackend.parse_webhook(call(DELETED))[0].event_id == first
    other = json.loads(json.dumps(DELETED))
    other["mautic.lead_post_delete"][0]["timestamp"] = "2026-01-02T03:04:06+00:00"
    assert MauticBackend.parse_webhook(call(other))[0].event_id != first


@pytest.mark.django_db
def test_an_event_delivered_twice_is_applied_once():
    contact = Contact.objects.create(email="a@example.com")
    ContactSync.objects.create(
        contact=contact, crm="mautic", external_id="8", processing_status=ProcessingStatus.COMPLETE
    )
    notices = MauticBackend.parse_webhook(call(channel("unsubscribed")))
    now = datetime.now(UTC)
    assert apply_notices("mautic", "Mautic", notices, now) == 1
    assert apply_notices("mautic", "Mautic", MauticBackend.parse_webhook(call(channel("unsubscribed"))), now) == 0
    assert ContactSync.objects.get().crm_event == CRMEvent.UNSUBSCRIBED
