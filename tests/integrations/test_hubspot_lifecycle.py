"""HubSpot's contact life beyond upsert, mocked with `responses`: update by id,
sync modes, archive and GDPR delete, and the signed inbound webhook."""

import json
from datetime import UTC, datetime

import pytest
import responses

from contacts.models import Contact, ContactSync, CRMEvent, ProcessingStatus
from integrations.backends.base import ERASE, RATE_LIMIT_RETRIES, REMOVE, OutcomeKind, SyncItem
from integrations.backends.hubspot import HubSpotBackend, signature_v3
from integrations.backends.inbound import WebhookCall, WebhookRejected

from .conftest import sent_json, unsaved_contact

API = "https://api.hubapi.com"
CONTACTS = API + "/crm/v3/objects/contacts"
UPDATE, UPSERT, READ, CREATE = (CONTACTS + "/batch/" + name for name in ("update", "upsert", "read", "create"))
GDPR = CONTACTS + "/gdpr-delete"
TOKEN = "pat-na1-00000000-0000-0000-0000-000000000000"
SECRET = "hubspot-app-client-secret-0000"
NOT_FOUND_MESSAGE = "Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid."


@pytest.fixture
def hubspot(settings):
    settings.HUBSPOT_API_KEY = TOKEN
    settings.HUBSPOT_REQUESTS_PER_SECOND = 1000
    return HubSpotBackend


def item(backend, email, external_id="", key=None, previous_email=""):
    contact = unsaved_contact(email=email, first_name="Ann")
    return SyncItem(
        key=key or contact.pk,
        contact=contact,
        payload=backend.build_payload(contact),
        external_id=external_id,
        email=backend.crm_email(email),
        previous_email=previous_email,
    )


def removal(operation, external_id="", email="gone@example.com"):
    return SyncItem(key=1, contact=None, payload=None, external_id=external_id, operation=operation, email=email)


def batch_answer(results, errors=()):
    body = {"status": "COMPLETE", "results": results, "startedAt": "x", "completedAt": "x"}
    if errors:
        body.update(numErrors=len(errors), errors=list(errors))
    return body


def record(record_id, email):
    return {"id": str(record_id), "properties": {"email": email, "hs_object_id": str(record_id)}}


def not_found_error(ids):
    return {"status": "error", "category": "OBJECT_NOT_FOUND", "message": NOT_FOUND_MESSAGE, "context": {"ids": ids}}


def updating(conflicts=None):
    """A batch/update callback: 409 for the whole call when an input's email belongs
    to another record ({email: owner id}), else every input updated."""
    conflicts = conflicts or {}

    def answer(request):
        inputs = json.loads(request.body)["inputs"]
        taken = [conflicts[i["properties"]["email"]] for i in inputs if i["properties"]["email"] in conflicts]
        if taken:
            body = {"status": "error", "message": "Contact already exists. Existing ID: %s" % taken[0]}
            return 409, {}, json.dumps({**body, "category": "CONFLICT", "correlationId": "c"})
        results = [record(i["id"], i["properties"]["email"]) for i in inputs]
        return 200, {}, json.dumps(batch_answer(results))

    return answer


def by_kind(outcomes):
    return {o.key: (o.kind, o.external_id) for o in outcomes}


class TestUpdateById:
    def test_an_email_change_updates_the_record_by_its_id_with_the_new_email(self, hubspot, crm_api):
        crm_api.add(responses.POST, UPDATE, json=batch_answer([record(501, "new@example.com")]))
        backend = hubspot()
        changed = item(backend, "new@example.com", external_id="501", previous_email="old@example.com")

        [outcome] = backend.push([changed])

        assert (outcome.kind, outcome.external_id) == (OutcomeKind.ACCEPTED, "501")
        [call] = crm_api.calls
        assert call.request.url == UPDATE
        assert sent_json(call) == {
            "inputs": [{"id": "501", "properties": {"email": "new@example.com", "firstname": "Ann"}}]
        }

    def test_contacts_with_and_without_an_id_go_in_separate_requests(self, hubspot, crm_api):
        crm_api.add(responses.POST, UPDATE, json=batch_answer([record(7, "known@example.com")]))
        crm_api.add(responses.POST, UPSERT, json=batch_answer([record(8, "fresh@example.com")]))
        backend = hubspot()
        known, fresh = item(backend, "known@example.com", "7"), item(backend, "fresh@example.com")

        outcomes = backend.push([fresh, known])

        assert by_kind(outcomes) == {known.key: (OutcomeKind.ACCEPTED, "7"), fresh.key: (OutcomeKind.ACCEPTED, "8")}
        assert [[i.get("id") for i in sent_json(c)["inputs"]] for c in crm_api.calls] == [["7"], ["fresh@example.com"]]

    def test_an_id_hubspot_no_longer_has_is_not_in_the_crm_and_the_others_are_updated(self, hubspot, crm_api):
        answer = batch_answer([record(11, "a@example.com")], [not_found_error(["12"])])
        crm_api.add(responses.POST, UPDATE, json=answer, status=207)
        backend = hubspot()
        kept, gone = item(backend, "a@example.com", "11"), item(backend, "b@example.com", "12")

        outcomes = {o.key: o for o in backend.push([kept, gone])}

        assert (outcomes[kept.key].kind, outcomes[kept.key].external_id) == (OutcomeKind.ACCEPTED, "11")
        assert outcomes[gone.key].kind is OutcomeKind.NOT_IN_CRM
        assert outcomes[gone.key].message == (
            "HubSpot has no contact 12 any more (deleted or merged there). Select it again to create it anew."
        )
        assert len(crm_api.calls) == 1  # nothing was created in its place

    def test_an_email_another_record_has_fails_that_contact_alone_naming_the_record(self, hubspot, crm_api):
        crm_api.add_callback(responses.POST, UPDATE, callback=updating({"taken@example.com": "77"}))
        backend = hubspot()
        items = [item(backend, "p%d@example.com" % i, str(100 + i)) for i in range(3)]
        items.insert(1, item(backend, "taken@example.com", "200"))

        outcomes = {o.key: o for o in backend.push(items)}

        refused = outcomes[items[1].key]
        assert refused.kind is OutcomeKind.PERMANENT
        assert "another HubSpot contact (record 77)" in refused.message
        assert "merge the two records in HubSpot" in refused.message
        assert [outcomes[i.key].kind for i in items if i is not items[1]] == [OutcomeKind.ACCEPTED] * 3
        assert UPSERT not in [c.request.url for c in crm_api.calls]

    def test_a_conflict_answer_without_the_id_is_looked_up_by_email(self, hubspot, crm_api):
        body = {"status": "error", "message": "Contact already exists", "category": "CONFLICT"}
        crm_api.add(responses.POST, UPDATE, json=body, status=409)
        crm_api.add(responses.POST, READ, json=batch_answer([record(88, "taken@example.com")]))
        backend = hubspot()

        [outcome] = backend.push([item(backend, "taken@example.com", "5")])

        assert outcome.kind is OutcomeKind.PERMANENT
        assert "(record 88)" in outcome.message
        assert sent_json(crm_api.calls[1])["inputs"] == [{"id": "taken@example.com"}]

    def test_the_newer_409_body_names_the_record_too(self, hubspot, crm_api):
        body = {
            "message": "Contact already exists. Existing ID: 2926551",
            "identityProfile": {"vid": 2926551},
            "status": "error",
            "category": "OBJECT_ALREADY_EXISTS",
            "error": "CONTACT_EXISTS",
        }
        crm_api.add(responses.POST, UPDATE, json=body, status=409)
        backend = hubspot()

        [outcome] = backend.push([item(backend, "lee@example.com", "5")])

        assert "(record 2926551)" in outcome.message
        assert len(crm_api.calls) == 1


class TestSyncModes:
    def test_update_only_looks_contacts_up_in_one_read_and_updates_those_found(self, hubspot, crm_api, settings):
        settings.HUBSPOT_SYNC_MODE = "update_only"
        read = batch_answer([record(31, "found@example.com")], [not_found_error(["missing@example.com"])])
        crm_api.add(responses.POST, READ, json=read, status=207)
        crm_api.add(responses.POST, UPDATE, json=batch_answer([record(31, "found@example.com")]))
        backend = hubspot()
        found, missing = item(backend, "Found@Example.com"), item(backend, "missing@example.com")

        outcomes = {o.key: o for o in backend.push([found, missing])}

        assert (outcomes[found.key].kind, outcomes[found.key].external_id) == (OutcomeKind.ACCEPTED, "31")
        assert outcomes[missing.key].kind is OutcomeKind.NOT_IN_CRM
        assert outcomes[missing.key].message.startswith("update_only: ")
        assert [c.request.url for c in crm_api.calls] == [READ, UPDATE]
        assert sent_json(crm_api.calls[0]) == {
            "idProperty": "email",
            "inputs": [{"id": "found@example.com"}, {"id": "missing@example.com"}],
            "properties": ["email"],
        }
        assert sent_json(crm_api.calls[1])["inputs"][0]["id"] == "31"

    def test_update_only_updates_a_contact_with_an_id_without_looking_it_up(self, hubspot, crm_api, settings):
        settings.HUBSPOT_SYNC_MODE = "update_only"
        crm_api.add(responses.POST, UPDATE, json=batch_answer([record(4, "a@example.com")]))
        backend = hubspot()

        [outcome] = backend.push([item(backend, "a@example.com", "4")])

        assert (outcome.kind, outcome.external_id) == (OutcomeKind.ACCEPTED, "4")
        assert [c.request.url for c in crm_api.calls] == [UPDATE]

    def test_create_only_creates_only_contacts_hubspot_does_not_have(self, hubspot, crm_api, settings):
        settings.HUBSPOT_SYNC_MODE = "create_only"
        read = batch_answer([record(41, "there@example.com")], [not_found_error(["new@example.com"])])
        crm_api.add(responses.POST, READ, json=read, status=207)
        crm_api.add(responses.POST, CREATE, json=batch_answer([record(42, "new@example.com")]), status=201)
        backend = hubspot()
        synced = item(backend, "synced@example.com", "40")
        there, new = item(backend, "there@example.com"), item(backend, "new@example.com")

        outcomes = {o.key: o for o in backend.push([synced, there, new])}

        assert by_kind(outcomes.values()) == {
            synced.key: (OutcomeKind.ACCEPTED, "40"),
            there.key: (OutcomeKind.ACCEPTED, "41"),
            new.key: (OutcomeKind.ACCEPTED, "42"),
        }
        assert "left as it is" in outcomes[synced.key].message
        assert "left as it is" in outcomes[there.key].message
        assert outcomes[new.key].message == ""
        assert [c.request.url for c in crm_api.calls] == [READ, CREATE]
        assert sent_json(crm_api.calls[0])["inputs"] == [{"id": "there@example.com"}, {"id": "new@example.com"}]
        assert sent_json(crm_api.calls[1]) == {
            "inputs": [{"properties": {"email": "new@example.com", "firstname": "Ann"}}]
        }

    def test_create_only_leaves_a_contact_created_since_the_lookup_as_it_is(self, hubspot, crm_api, settings):
        settings.HUBSPOT_SYNC_MODE = "create_only"
        crm_api.add(responses.POST, READ, json=batch_answer([], [not_found_error(["a@example.com"])]), status=207)
        body = {"status": "error", "message": "Contact already exists. Existing ID: 61", "category": "CONFLICT"}
        crm_api.add(responses.POST, CREATE, json=body, status=409)
        backend = hubspot()

        [outcome] = backend.push([item(backend, "a@example.com")])

        assert (outcome.kind, outcome.external_id) == (OutcomeKind.ACCEPTED, "61")
        assert "left as it is" in outcome.message

    def test_a_rate_limited_lookup_makes_the_contacts_wait(self, hubspot, crm_api, settings, no_pacing_sleep):
        settings.HUBSPOT_SYNC_MODE = "update_only"
        crm_api.add(responses.POST, READ, json={"policyName": "TEN_SECONDLY_ROLLING"}, status=429)
        backend = hubspot()

        [outcome] = backend.push([item(backend, "a@example.com")])

        # The lookup is sent again after each hold, then its contacts wait; nothing
        # is updated without it.
        assert outcome.kind is OutcomeKind.WAIT
        assert len(crm_api.calls) == 1 + RATE_LIMIT_RETRIES
        assert {call.request.url for call in crm_api.calls} == {READ}

    def test_an_unknown_mode_is_a_configuration_error(self, hubspot, settings):
        from integrations.exceptions import CRMConfigurationError

        settings.HUBSPOT_SYNC_MODE = "merge"
        backend = hubspot()
        with pytest.raises(CRMConfigurationError, match="HUBSPOT_SYNC_MODE"):
            backend.push([item(backend, "a@example.com")])


class TestRemoveAndErase:
    def test_a_removal_archives_the_record_by_its_id(self, hubspot, crm_api):
        crm_api.add(responses.DELETE, CONTACTS + "/55", status=204)

        [outcome] = hubspot().push([removal(REMOVE, "55")])

        assert (outcome.kind, outcome.found) == (OutcomeKind.ACCEPTED, True)
        assert [c.request.method for c in crm_api.calls] == ["DELETE"]

    def test_a_removal_without_an_id_finds_the_record_by_email_first(self, hubspot, crm_api):
        crm_api.add(responses.GET, CONTACTS + "/gone%40example.com", json=record(56, "gone@example.com"))
        crm_api.add(responses.DELETE, CONTACTS + "/56", status=204)

        [outcome] = hubspot().push([removal(REMOVE)])

        assert (outcome.kind, outcome.found) == (OutcomeKind.ACCEPTED, True)
        assert "idProperty=email" in crm_api.calls[0].request.url
        assert crm_api.calls[1].request.url == CONTACTS + "/56"

    def test_a_removal_of_a_contact_hubspot_does_not_have_is_done(self, hubspot, crm_api):
        crm_api.add(responses.GET, CONTACTS + "/gone%40example.com", json={"category": "OBJECT_NOT_FOUND"}, status=404)

        [outcome] = hubspot().push([removal(REMOVE)])

        assert (outcome.kind, outcome.found) == (OutcomeKind.ACCEPTED, False)
        assert len(crm_api.calls) == 1  # nothing to archive

    def test_an_erasure_by_id_uses_the_gdpr_delete(self, hubspot, crm_api):
        crm_api.add(responses.POST, GDPR, status=204)

        [outcome] = hubspot().push([removal(ERASE, "57")])

        assert (outcome.kind, outcome.found, outcome.answer) == (OutcomeKind.ACCEPTED, True, "HTTP 204")
        assert sent_json(crm_api.calls[0]) == {"objectId": "57"}

    def test_an_erasure_without_an_id_goes_by_email(self, hubspot, crm_api):
        crm_api.add(responses.POST, GDPR, status=204)

        [outcome] = hubspot().push([removal(ERASE)])

        assert outcome.kind is OutcomeKind.ACCEPTED
        assert sent_json(crm_api.calls[0]) == {"objectId": "gone@example.com", "idProperty": "email"}

    def test_an_erasure_of_an_id_hubspot_does_not_have_is_done(self, hubspot, crm_api):
        crm_api.add(responses.POST, GDPR, json={"category": "OBJECT_NOT_FOUND", "message": "x"}, status=404)

        [outcome] = hubspot().push([removal(ERASE, "58")])

        assert (outcome.kind, outcome.found) == (OutcomeKind.ACCEPTED, False)

    def test_an_erasure_hubspot_fails_is_retried(self, hubspot, crm_api):
        crm_api.add(responses.POST, GDPR, json={"category": "INTERNAL_ERROR", "message": "x"}, status=500)

        [outcome] = hubspot().push([removal(ERASE, "59")])

        assert outcome.kind is OutcomeKind.RETRY


# Webhooks

URL = "https://crm.example.com/integrations/hubspot/webhook/"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def event(subscription_type, object_id=101, event_id=1, **extra):
    return {
        "eventId": event_id,
        "subscriptionId": 2,
        "portalId": 3,
        "appId": 4,
        "occurredAt": NOW_MS - 1000,
        "subscriptionType": subscription_type,
        "attemptNumber": 0,
        "objectId": object_id,
        "changeSource": "CRM_UI",
        **extra,
    }


def signed_call(events, *, secret=SECRET, timestamp_ms=NOW_MS, url=URL, received_at=NOW):
    body = json.dumps(events).encode()
    timestamp = str(timestamp_ms)
    headers = {
        "X-HubSpot-Signature-v3": signature_v3(secret, "POST", url, body, timestamp),
        "X-HubSpot-Request-Timestamp": timestamp,
    }
    return WebhookCall(method="POST", url=url, headers=headers, body=body, received_at=received_at)


EVENTS = [
    (event("contact.propertyChange", propertyName="hs_email_optout", propertyValue="true"), "unsubscribed"),
    (
        event("contact.propertyChange", propertyName="hs_email_hard_bounce_reason_enum", propertyValue="OTHER"),
        "hard_bounce",
    ),
    (event("contact.deletion"), "deleted"),
    (event("contact.privacyDeletion"), "privacy_deleted"),
]


class TestWebhook:
    def test_the_signature_matches_the_vector_computed_with_hubspots_sdk(self):
        body = (
            b'[{"eventId":1,"subscriptionId":2,"portalId":3,"appId":4,"occurredAt":1700000000000,'
            b'"subscriptionType":"contact.propertyChange","attemptNumber":0,"objectId":101,'
            b'"propertyName":"hs_email_optout","propertyValue":"true","changeSource":"EMAIL"}]'
        )
        signature = signature_v3("secret", "POST", "https://example.com/hubspot/webhook", body, "1700000000000")
        assert signature == "PPMbZKiu3vfTQUr5wdvY2ZbbFweGG21fqwQw481kWfw="

    @pytest.mark.parametrize("hubspot_event, kind", EVENTS)
    def test_each_event_is_read_from_a_validly_signed_call(self, hubspot_event, kind):
        call = signed_call([hubspot_event])
        HubSpotBackend.verify_webhook(call, SECRET)

        [notice] = HubSpotBackend.parse_webhook(call)

        assert (notice.kind, notice.external_id) == (kind, "101")
        assert notice.occurred_at == datetime.fromtimestamp((NOW_MS - 1000) / 1000, UTC)

    @pytest.mark.parametrize("hubspot_event, kind", EVENTS)
    def test_each_event_is_refused_with_another_secret(self, hubspot_event, kind):
        call = signed_call([hubspot_event], secret="someone-elses-secret-000")
        with pytest.raises(WebhookRejected) as refused:
            HubSpotBackend.verify_webhook(call, SECRET)
        assert refused.value.status == 401

    def test_a_merge_names_the_survivor_for_each_record_merged_away(self):
        merge = event("contact.merge", 300, primaryObjectId=300, mergedObjectIds=[301, 302], newObjectId=300)
        call = signed_call([merge])
        HubSpotBackend.verify_webhook(call, SECRET)

        notices = HubSpotBackend.parse_webhook(call)

        assert [(n.kind, n.external_id, n.merged_into) for n in notices] == [
            ("merged", "301", "300"),
            ("merged", "302", "300"),
        ]
        assert len({n.event_id for n in notices}) == 2

    def test_a_merge_into_a_new_record_moves_the_primary_too(self):
        merge = event("contact.merge", 300, primaryObjectId=300, mergedObjectIds=[301], newObjectId=399)
        notices = HubSpotBackend.parse_webhook(signed_call([merge]))
        assert sorted((n.external_id, n.merged_into) for n in notices) == [("300", "399"), ("301", "399")]

    def test_a_call_signed_for_another_url_is_refused(self):
        call = signed_call([event("contact.deletion")], url="https://attacker.example.com/hook/")
        moved = WebhookCall(call.method, URL, call.headers, call.body, call.received_at)
        with pytest.raises(WebhookRejected):
            HubSpotBackend.verify_webhook(moved, SECRET)

    def test_a_uri_is_signed_with_the_escapes_hubspot_decodes(self):
        encoded = URL + "?crm=a%3Ab%20c"
        body = json.dumps([event("contact.deletion")]).encode()
        signature = signature_v3(SECRET, "POST", URL + "?crm=a:b%20c", body, str(NOW_MS))
        headers = {"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": str(NOW_MS)}
        HubSpotBackend.verify_webhook(WebhookCall("POST", encoded, headers, body, NOW), SECRET)

    def test_a_call_more_than_five_minutes_old_is_refused_as_a_replay(self):
        stale = signed_call([event("contact.deletion")], timestamp_ms=NOW_MS - 5 * 60 * 1000 - 1)
        with pytest.raises(WebhookRejected, match="replay"):
            HubSpotBackend.verify_webhook(stale, SECRET)
        fresh = signed_call([event("contact.deletion")], timestamp_ms=NOW_MS - 5 * 60 * 1000 + 1000)
        HubSpotBackend.verify_webhook(fresh, SECRET)

    def test_a_call_without_the_headers_is_refused(self):
        call = signed_call([event("contact.deletion")])
        bare = WebhookCall(call.method, call.url, {}, call.body, call.received_at)
        with pytest.raises(WebhookRejected):
            HubSpotBackend.verify_webhook(bare, SECRET)

    def test_a_retried_event_has_the_same_id_and_another_event_a_new_one(self):
        first = event("contact.deletion", event_id=9)
        retried = {**first, "attemptNumber": 3}
        same_event_id_other_record = event("contact.deletion", object_id=102, event_id=9)

        notices = HubSpotBackend.parse_webhook(signed_call([first, retried, same_event_id_other_record]))

        assert notices[0].event_id == notices[1].event_id
        assert notices[2].event_id != notices[0].event_id

    @pytest.mark.parametrize(
        "ignored",
        [
            event("contact.propertyChange", propertyName="hs_email_optout", propertyValue="false"),
            event("contact.propertyChange", propertyName="firstname", propertyValue="Ann"),
            event("contact.creation"),
            event("contact.restore"),
        ],
    )
    def test_events_crmsync_does_not_act_on_give_no_notice(self, ignored):
        assert HubSpotBackend.parse_webhook(signed_call([ignored])) == []

    @pytest.mark.parametrize("body", [b"not json", b'{"eventId": 1}', b"[1, 2]"])
    def test_a_body_that_is_not_hubspots_is_a_400(self, body):
        call = WebhookCall("POST", URL, {}, body, NOW)
        with pytest.raises(WebhookRejected) as refused:
            HubSpotBackend.parse_webhook(call)
        assert refused.value.status == 400


@pytest.mark.django_db
class TestWebhookView:
    """The real view at /integrations/hubspot/webhook/ with HubSpot's headers."""

    URL = "http://testserver/integrations/hubspot/webhook/"

    def post(self, client, events):
        body = json.dumps(events).encode()
        timestamp = str(int(datetime.now(UTC).timestamp() * 1000))
        return client.post(
            "/integrations/hubspot/webhook/",
            data=body,
            content_type="application/json",
            headers={
                "X-HubSpot-Signature-v3": signature_v3(SECRET, "POST", self.URL, body, timestamp),
                "X-HubSpot-Request-Timestamp": timestamp,
            },
        )

    def test_an_opt_out_is_recorded_once_however_often_hubspot_sends_it(self, client, settings, hubspot):
        settings.HUBSPOT_WEBHOOK_SECRET = SECRET
        contact = Contact.objects.create(email="ann@example.com")
        ContactSync.objects.create(contact=contact, crm="hubspot", external_id="101")
        opt_out = event("contact.propertyChange", propertyName="hs_email_optout", propertyValue="true")

        first = self.post(client, [opt_out])
        again = self.post(client, [{**opt_out, "attemptNumber": 1}])

        assert (first.status_code, first.json()) == (200, {"events": 1, "applied": 1})
        assert (again.status_code, again.json()) == (200, {"events": 1, "applied": 0})
        row = ContactSync.objects.get()
        assert row.crm_event == CRMEvent.UNSUBSCRIBED and row.opted_out_at is not None

    def test_a_deletion_leaves_the_row_not_in_the_crm(self, client, settings, hubspot):
        settings.HUBSPOT_WEBHOOK_SECRET = SECRET
        contact = Contact.objects.create(email="ann@example.com")
        ContactSync.objects.create(contact=contact, crm="hubspot", external_id="101")

        response = self.post(client, [event("contact.deletion")])

        assert response.json() == {"events": 1, "applied": 1}
        row = ContactSync.objects.get()
        assert (row.processing_status, row.external_id) == (ProcessingStatus.NOT_IN_CRM, "")

    def test_a_call_signed_with_another_secret_changes_nothing(self, client, settings, hubspot):
        settings.HUBSPOT_WEBHOOK_SECRET = "another-secret-0000000000"
        contact = Contact.objects.create(email="ann@example.com")
        ContactSync.objects.create(contact=contact, crm="hubspot", external_id="101")

        response = self.post(client, [event("contact.deletion")])

        assert response.status_code == 401
        assert ContactSync.objects.get().external_id == "101"
