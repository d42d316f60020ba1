"""Brevo's whole contact life, mocked with `responses`: update by id and its
conflicts, sync modes, removal and erasure, and the inbound webhook."""

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from django.test import RequestFactory

from integrations.backends.base import ERASE, REMOVE, OutcomeKind, SyncItem
from integrations.backends.brevo import BrevoBackend
from integrations.backends.inbound import WebhookCall, WebhookRejected

from .conftest import make_item, sent_json, unsaved_contact

API = "https://api.brevo.com/v3"
KEY = "xkeysib-test-0000000000000000000000"
SECRET = "brevo-webhook-secret-for-tests-0001"
GONE = {"code": "document_not_found", "message": "Contact does not exist"}


def email_taken(code="duplicate_parameter"):
    return {
        "code": code,
        "message": "Unable to update contact, email is already associated with another Contact",
        "metadata": {"duplicate_identifiers": ["email"]},
    }


@pytest.fixture
def brevo(settings):
    settings.BREVO_API_KEY = KEY
    settings.BREVO_REQUESTS_PER_SECOND = 1000
    settings.BREVO_CONCURRENCY = 1
    return BrevoBackend


def item(backend, email="ann@example.com", external_id="", **fields):
    return make_item(unsaved_contact(email=email, **fields), backend, external_id=external_id)


def removal(operation, external_id="", email="ann@example.com"):
    return SyncItem(key=99, contact=None, payload=None, external_id=external_id, operation=operation, email=email)


class TestUpdateById:
    def test_an_email_change_updates_the_same_record_by_its_id(self, brevo, settings, crm_api):
        settings.BREVO_LIST_ID = "3"
        crm_api.put(API + "/contacts/42", status=204)
        backend = brevo()
        [outcome] = backend.push([item(backend, "new@example.com", "42", first_name="Ann")])
        assert (outcome.kind, outcome.external_id) == (OutcomeKind.ACCEPTED, "42")
        [call] = crm_api.calls
        assert call.request.params == {"identifierType": "contact_id"}
        assert sent_json(call) == {"attributes": {"FIRSTNAME": "Ann", "EMAIL": "new@example.com"}, "listIds": [3]}

    @pytest.mark.parametrize(
        ("opted_out", "previous_email", "blacklisted"),
        [
            (True, "old@example.com", True),
            (True, "", None),
            (False, "old@example.com", None),
        ],
    )
    def test_an_email_change_keeps_an_opt_out_brevo_would_otherwise_lift(
        self, brevo, crm_api, opted_out, previous_email, blacklisted
    ):
        crm_api.put(API + "/contacts/42", status=204)
        backend = brevo()
        changed = replace(item(backend, "new@example.com", "42"), opted_out=opted_out, previous_email=previous_email)
        backend.push([changed])
        assert sent_json(crm_api.calls[0]).get("emailBlacklisted") is blacklisted

    def test_an_id_brevo_no_longer_has_is_not_in_the_crm_and_spares_the_others(self, brevo, crm_api):
        crm_api.put(API + "/contacts/42", status=404, json=GONE)
        crm_api.put(API + "/contacts/43", status=204)
        backend = brevo()
        outcomes = backend.push([item(backend, "a@example.com", "42"), item(backend, "b@example.com", "43")])
        assert [o.kind for o in outcomes] == [OutcomeKind.NOT_IN_CRM, OutcomeKind.ACCEPTED]
        assert outcomes[0].message == (
            "Brevo has no contact 42 any more (deleted or merged there). Select it again to create it anew."
        )
        assert not any(call.request.method == "POST" for call in crm_api.calls), "no second record is created"

    @pytest.mark.parametrize("code", ["duplicate_parameter", "invalid_parameter"])
    def test_an_email_another_record_has_names_that_record(self, brevo, crm_api, code):
        crm_api.put(API + "/contacts/42", status=400, json=email_taken(code))
        crm_api.get(API + "/contacts/taken@example.com", json={"id": 57, "email": "taken@example.com"})
        backend = brevo()
        [outcome] = backend.push([item(backend, "taken@example.com", "42")])
        assert outcome.kind is OutcomeKind.PERMANENT
        assert "another Brevo contact, 57, already has it, so contact 42 was not changed" in outcome.message
        assert "Merge or delete one of the two in Brevo" in outcome.message
        assert crm_api.calls[1].request.params == {"identifierType": "email_id"}

    def test_another_duplicate_identifier_stays_brevos_message(self, brevo, crm_api):
        body = {**email_taken(), "metadata": {"duplicate_identifiers": ["SMS"]}}
        crm_api.put(API + "/contacts/42", status=400, json=body)
        backend = brevo()
        [outcome] = backend.push([item(backend, external_id="42")])
        assert outcome.kind is OutcomeKind.PERMANENT
        assert "already used by another Brevo contact: SMS" in outcome.message
        assert len(crm_api.calls) == 1

    def test_a_missing_list_still_pauses_brevo(self, brevo, settings, crm_api):
        from integrations.exceptions import CRMUnavailable

        settings.BREVO_LIST_ID = "9"
        crm_api.put(
            API + "/contacts/42", status=404, json={"code": "document_not_found", "message": "List ID does not exist"}
        )
        backend = brevo()
        with pytest.raises(CRMUnavailable, match="Check BREVO_LIST_ID"):
            backend.push([item(backend, external_id="42")])

    def test_a_contact_without_id_keeps_the_upsert_by_email(self, brevo, crm_api):
        crm_api.post(API + "/contacts", status=201, json={"id": 5})
        backend = brevo()
        [outcome] = backend.push([item(backend)])
        assert outcome.external_id == "5"
        assert sent_json(crm_api.calls[0])["updateEnabled"] is True


class TestSyncModes:
    def test_an_unknown_mode_is_a_configuration_error(self, brevo, settings):
        from integrations.exceptions import CRMConfigurationError

        settings.BREVO_SYNC_MODE = "merge"
        with pytest.raises(CRMConfigurationError, match="BREVO_SYNC_MODE"):
            brevo().sync_mode()

    def test_update_only_updates_a_contact_found_by_email_and_records_its_id(self, brevo, settings, crm_api):
        settings.BREVO_SYNC_MODE = "update_only"
        crm_api.get(API + "/contacts/ann@example.com", json={"id": 77, "email": "ann@example.com"})
        crm_api.put(API + "/contacts/77", status=204)
        backend = brevo()
        [outcome] = backend.push([item(backend, first_name="Ann")])
        assert (outcome.kind, outcome.external_id) == (OutcomeKind.ACCEPTED, "77")
        assert [c.request.method for c in crm_api.calls] == ["GET", "PUT"]
        assert sent_json(crm_api.calls[1])["attributes"] == {"FIRSTNAME": "Ann", "EMAIL": "ann@example.com"}

    def test_update_only_creates_nothing_for_an_unknown_email(self, brevo, settings, crm_api):
        settings.BREVO_SYNC_MODE = "update_only"
        crm_api.get(API + "/contacts/ann@example.com", status=404, json=GONE)
        backend = brevo()
        [outcome] = backend.push([item(backend)])
        assert outcome.kind is OutcomeKind.NOT_IN_CRM
        assert outcome.message.startswith("update_only: Brevo has no contact with this email")
        assert [c.request.method for c in crm_api.calls] == ["GET"]

    def test_update_only_with_an_id_updates_by_it_without_a_lookup(self, brevo, settings, crm_api):
        settings.BREVO_SYNC_MODE = "update_only"
        crm_api.put(API + "/contacts/42", status=204)
        backend = brevo()
        [outcome] = backend.push([item(backend, external_id="42")])
        assert outcome.external_id == "42" and len(crm_api.calls) == 1

    def test_create_only_does_not_send_a_contact_brevo_has(self, brevo, settings, crm_api):
        settings.BREVO_SYNC_MODE = "create_only"
        backend = brevo()
        [outcome] = backend.push([item(backend, external_id="42")])
        assert (outcome.kind, outcome.external_id) == (OutcomeKind.ACCEPTED, "42")
        assert outcome.message.startswith("create_only:") and "left as it is" in outcome.message
        assert len(crm_api.calls) == 0

    def test_create_only_creates_without_update_enabled(self, brevo, settings, crm_api):
        settings.BREVO_SYNC_MODE = "create_only"
        crm_api.post(API + "/contacts", status=201, json={"id": 8})
        backend = brevo()
        [outcome] = backend.push([item(backend)])
        assert outcome.external_id == "8"
        assert "updateEnabled" not in sent_json(crm_api.calls[0])

    def test_create_only_leaves_an_existing_email_as_it_is_with_its_id(self, brevo, settings, crm_api):
        settings.BREVO_SYNC_MODE = "create_only"
        crm_api.post(
            API + "/contacts",
            status=400,
            json={
                "code": "duplicate_parameter",
                "message": "Unable to create contact, email is already associated with another Contact",
                "metadata": {"duplicate_identifiers": ["email"]},
            },
        )
        crm_api.get(API + "/contacts/ann@example.com", json={"id": 31, "email": "ann@example.com"})
        backend = brevo()
        [outcome] = backend.push([item(backend)])
        assert (outcome.kind, outcome.external_id) == (OutcomeKind.ACCEPTED, "31")
        assert outcome.message == "create_only: Brevo already has this email (contact 31); left as it is."


class TestRemoval:
    @pytest.mark.parametrize("operation", [REMOVE, ERASE])
    def test_by_id(self, brevo, crm_api, operation):
        crm_api.delete(API + "/contacts/42", status=204)
        [outcome] = brevo().push([removal(operation, external_id="42")])
        assert (outcome.kind, outcome.found, outcome.http_status) == (OutcomeKind.ACCEPTED, True, 204)
        assert crm_api.calls[0].request.params == {"identifierType": "contact_id"}

    @pytest.mark.parametrize("operation", [REMOVE, ERASE])
    def test_by_email_without_id(self, brevo, crm_api, operation):
        crm_api.delete(API + "/contacts/ann%2Bx@example.com", status=204)
        [outcome] = brevo().push([removal(operation, email="ann+x@example.com")])
        assert (outcome.kind, outcome.found) == (OutcomeKind.ACCEPTED, True)
        assert "ann%2Bx@example.com" in crm_api.calls[0].request.url
        assert crm_api.calls[0].request.params == {"identifierType": "email_id"}

    @pytest.mark.parametrize("operation", [REMOVE, ERASE])
    def test_not_found_is_done(self, brevo, crm_api, operation):
        crm_api.delete(API + "/contacts/42", status=404, json=GONE)
        [outcome] = brevo().push([removal(operation, external_id="42")])
        assert (outcome.kind, outcome.found) == (OutcomeKind.ACCEPTED, False)
        assert "Contact does not exist" in outcome.answer

    def test_a_refusal_is_not_taken_for_done(self, brevo, crm_api):
        crm_api.delete(
            API + "/contacts/42", status=405, json={"code": "method_not_allowed", "message": "Cannot delete"}
        )
        [outcome] = brevo().push([removal(ERASE, external_id="42")])
        assert outcome.kind is OutcomeKind.PERMANENT

    def test_removals_and_upserts_in_one_batch(self, brevo, crm_api):
        crm_api.delete(API + "/contacts/42", status=204)
        crm_api.put(API + "/contacts/43", status=204)
        backend = brevo()
        upsert = replace(item(backend, external_id="43"), key=1)
        outcomes = backend.push([upsert, removal(REMOVE, external_id="42")])
        assert {(o.key, o.kind) for o in outcomes} == {(1, OutcomeKind.ACCEPTED), (99, OutcomeKind.ACCEPTED)}


def call(body, authorization=None):
    headers = RequestFactory().post("/", HTTP_AUTHORIZATION=authorization or "").headers if authorization else {}
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return WebhookCall("POST", "https://crm.example.com/integrations/brevo/webhook/", headers, raw, datetime.now(UTC))


def basic(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


SPAM = {
    "id": 123,
    "camp_id": 45,
    "email": "a@b.com",
    "campaign name": "My First Campaign",
    "date_sent": "2020-10-09 00:00:00",
    "date_event": "2020-10-09 00:00:00",
    "event": "spam",
    "reason": "undesired",
    "tag": "",
    "ts_sent": 1604933619,
    "ts_event": 1604933737,
    "ts": 1604937337,
}
DELETED = {"id": 123, "email": "a@b.com", "event": "contact_deleted", "key": "k", "list_id": [35], "ts": 1604937111}


class TestWebhook:
    @pytest.mark.parametrize(
        "authorization", ["Bearer " + SECRET, "bearer  %s " % SECRET, basic("brevo", SECRET), basic("", SECRET)]
    )
    def test_the_secret_as_bearer_token_or_basic_password_is_accepted(self, authorization):
        BrevoBackend.verify_webhook(call(SPAM, authorization), SECRET)

    @pytest.mark.parametrize(
        "authorization",
        [None, "Bearer wrong", "Bearer " + SECRET[:-1], basic(SECRET, "x"), "Basic !!notbase64", "Token " + SECRET],
    )
    def test_anything_else_is_refused(self, authorization):
        with pytest.raises(WebhookRejected) as refused:
            BrevoBackend.verify_webhook(call(SPAM, authorization), SECRET)
        assert refused.value.status == 401 and SECRET not in refused.value.message

    @pytest.mark.parametrize(
        "event, kind",
        [
            ("unsubscribed", "unsubscribed"),
            ("hard_bounce", "hard_bounce"),
            ("hard_bounced", "hard_bounce"),
            ("spam", "spam_complaint"),
            ("contact_deleted", "deleted"),
        ],
    )
    def test_each_event_maps_to_what_crmsync_records(self, event, kind):
        [notice] = BrevoBackend.parse_webhook(call({**SPAM, "event": event}))
        assert (notice.kind, notice.email, notice.external_id) == (kind, "a@b.com", "")
        assert notice.occurred_at == datetime.fromtimestamp(1604933737, UTC)

    def test_events_crmsync_does_not_act_on_are_left_out(self):
        body = [{**SPAM, "event": "opened"}, {"id": 1, "event": "contact_updated", "content": []}, DELETED]
        assert [n.kind for n in BrevoBackend.parse_webhook(call(body))] == ["deleted"]

    def test_the_same_event_twice_has_one_id_and_different_events_differ(self):
        first = BrevoBackend.parse_webhook(call(SPAM))[0].event_id
        reordered = dict(reversed(list(SPAM.items())))
        assert BrevoBackend.parse_webhook(call(reordered))[0].event_id == first
        assert BrevoBackend.parse_webhook(call({**SPAM, "ts_event": 1604933738}))[0].event_id != first

    def test_a_batched_call_carries_several_events(self):
        notices = BrevoBackend.parse_webhook(call([SPAM, DELETED]))
        assert [n.kind for n in notices] == ["spam_complaint", "deleted"]
        assert notices[1].occurred_at is None  # contact events carry only the CET-shifted ts

    @pytest.mark.parametrize("body", [b"not json", b"[]", b"[1, 2]", b'"spam"'])
    def test_a_body_that_is_not_brevos_is_refused(self, body):
        with pytest.raises(WebhookRejected) as refused:
            BrevoBackend.parse_webhook(call(body))
        assert refused.value.status == 400


@pytest.mark.django_db
class TestWebhookEndpoint:
    """Through the real view: /integrations/brevo/webhook/."""

    URL = "/integrations/brevo/webhook/"

    @pytest.fixture
    def synced(self, settings):
        from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus

        settings.BREVO_WEBHOOK_SECRET = SECRET
        contact = Contact.objects.create(email="a@b.com")
        return ContactSync.objects.create(
            contact=contact,
            crm="brevo",
            external_id="42",
            sync_status=SyncStatus.COMPLETE,
            processing_status=ProcessingStatus.COMPLETE,
        )

    def post(self, client, body, authorization="Bearer " + SECRET):
        return client.post(
            self.URL, data=json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=authorization
        )

    def test_a_delete_leaves_the_row_not_in_the_crm_once(self, client, synced):
        from contacts.models import ProcessingStatus

        assert self.post(client, DELETED).json() == {"events": 1, "applied": 1}
        synced.refresh_from_db()
        assert (synced.processing_status, synced.external_id, synced.crm_event) == (
            ProcessingStatus.NOT_IN_CRM,
            "",
            "deleted",
        )
        assert self.post(client, DELETED).json() == {"events": 1, "applied": 0}, "a replay is taken once"

    def test_an_opt_out_is_recorded(self, client, synced):
        assert self.post(client, [SPAM, SPAM]).json() == {"events": 2, "applied": 1}, "a duplicate in one call"
        synced.refresh_from_db()
        assert synced.crm_event == "spam_complaint" and synced.opted_out_at is not None

    def test_a_wrong_token_changes_nothing(self, client, synced):
        response = self.post(client, DELETED, authorization="Bearer nope")
        assert response.status_code == 401
        synced.refresh_from_db()
        assert synced.external_id == "42" and synced.crm_event == ""
