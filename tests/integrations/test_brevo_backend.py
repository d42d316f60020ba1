"""BrevoBackend against Brevo's HTTP API, mocked with `responses`."""

import logging

import pytest
import requests

from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus
from integrations.backends.base import RATE_LIMIT_RETRIES, OutcomeKind
from integrations.backends.brevo import BrevoBackend, brevo_sms
from integrations.backends.pacing import BURST, PACE_SHARE
from integrations.exceptions import CRMUnavailable, InvalidContact
from integrations.ratelimit import share_pace

from .conftest import make_item, sent_json, unsaved_contact

API = "https://api.brevo.com/v3"
KEY = "xkeysib-test-0000000000000000000000"


@pytest.fixture
def brevo(settings):
    settings.BREVO_API_KEY = KEY
    settings.BREVO_REQUESTS_PER_SECOND = 1000  # no pacing waits in unit tests
    settings.BREVO_CONCURRENCY = 1  # deterministic order
    return BrevoBackend


def contact(**fields):
    """An unsaved contact: the backend only reads it, so no database is needed."""
    fields.setdefault("email", "ann@example.com")
    return unsaved_contact(**fields)


def push(backend_class, *contacts, external_ids=None):
    backend = backend_class()
    items = [make_item(c, backend, external_id=(external_ids or {}).get(c.pk, "")) for c in contacts]
    return backend.push(items)


class TestPayload:
    def test_full_contact(self, brevo, settings):
        settings.BREVO_LIST_ID = "3, 7"
        ann = contact(
            first_name="Ann", last_name="Lee", phone="+44 20 7946 0000", company="Acme", website="https://acme.test"
        )
        assert BrevoBackend().build_payload(ann) == {
            "email": "ann@example.com",
            "attributes": {
                "FIRSTNAME": "Ann",
                "LASTNAME": "Lee",
                "SMS": "+442079460000",
                "COMPANY": "Acme",
                "WEBSITE": "https://acme.test",
            },
            "updateEnabled": True,
            "listIds": [3, 7],
        }

    def test_sparse_contact_sends_only_what_it_has(self, brevo):
        assert BrevoBackend().build_payload(contact()) == {
            "email": "ann@example.com",
            "attributes": {},
            "updateEnabled": True,
        }

    def test_unicode_and_long_values_are_sent_as_they_are(self, brevo):
        long_company = "Ö" * 255
        zoe = contact(first_name="Zoë 🌱", company=long_company)
        attributes = BrevoBackend().build_payload(zoe)["attributes"]
        assert attributes == {"FIRSTNAME": "Zoë 🌱", "COMPANY": long_company}

    def test_phone_without_country_code_is_left_out_unless_a_default_is_set(self, brevo, settings):
        local = contact(phone="020 7946 0000")
        assert "SMS" not in BrevoBackend().build_payload(local)["attributes"]
        settings.BREVO_DEFAULT_COUNTRY_CODE = "44"
        assert BrevoBackend().build_payload(local)["attributes"]["SMS"] == "+442079460000"

    @pytest.mark.parametrize(
        "phone, expected",
        [("+1 (555) 010-9999", "+15550109999"), ("0033 1 23 45 67 89", "+33123456789"), ("n/a", None), ("+12", None)],
    )
    def test_sms_form(self, phone, expected):
        assert brevo_sms(phone) == expected

    def test_field_map_setting_adds_attributes_from_contact_attributes(self, brevo, settings):
        settings.BREVO_FIELD_MAP = "JOB_TITLE=job_title,COMPANY=source"
        ann = contact(company="Acme", attributes={"job_title": "CTO", "source": "fair"})
        assert BrevoBackend().build_payload(ann)["attributes"] == {"JOB_TITLE": "CTO", "COMPANY": "fair"}

    def test_an_email_brevo_cannot_take_is_refused_before_sending(self, brevo):
        with pytest.raises(InvalidContact, match="not an email address Brevo can take"):
            BrevoBackend().build_payload(Contact(email="not an email"))


class TestPush:
    def test_created_contact_gets_its_brevo_id(self, brevo, crm_api):
        crm_api.post(API + "/contacts", status=201, json={"id": 42})
        [outcome] = push(brevo, contact())
        assert (outcome.kind, outcome.external_id, outcome.http_status) == (OutcomeKind.ACCEPTED, "42", 201)
        call = crm_api.calls[0]
        assert call.request.headers["api-key"] == KEY
        assert call.request.headers["User-Agent"].startswith("crmsync/")
        assert sent_json(call)["updateEnabled"] is True

    def test_update_keeps_the_id_it_had(self, brevo, crm_api):
        # A contact with an id is updated by it (test_brevo_lifecycle has the rest).
        crm_api.put(API + "/contacts/42", status=204)
        ann = contact()
        [outcome] = push(brevo, ann, external_ids={ann.pk: "42"})
        assert (outcome.kind, outcome.external_id) == (OutcomeKind.ACCEPTED, "42")
        assert len(crm_api.calls) == 1

    def test_update_of_a_contact_brevo_already_had_looks_its_id_up_once(self, brevo, crm_api):
        crm_api.post(API + "/contacts", status=204)
        crm_api.get(API + "/contacts/ann%2Btag@example.com", json={"id": 77, "email": "ann+tag@example.com"})
        [outcome] = push(brevo, contact(email="ann+tag@example.com"))
        assert outcome.external_id == "77"
        assert crm_api.calls[1].request.params == {"identifierType": "email_id"}

    def test_invalid_attribute_is_permanent_with_brevos_message(self, brevo, crm_api):
        crm_api.post(
            API + "/contacts", status=400, json={"code": "invalid_parameter", "message": "Invalid phone number"}
        )
        [outcome] = push(brevo, contact())
        assert outcome.kind is OutcomeKind.PERMANENT
        assert outcome.message == "Brevo refused it: Invalid phone number [invalid_parameter]"

    def test_sms_already_used_says_so(self, brevo, crm_api):
        crm_api.post(
            API + "/contacts",
            status=400,
            json={
                "code": "duplicate_parameter",
                "message": "Unable to create contact, SMS is already associated with another Contact",
                "metadata": {"duplicate_identifiers": ["SMS"]},
            },
        )
        [outcome] = push(brevo, contact())
        assert "already used by another Brevo contact: SMS" in outcome.message

    def test_one_bad_contact_does_not_fail_its_neighbours(self, brevo, crm_api):
        crm_api.post(API + "/contacts", status=201, json={"id": 1})
        crm_api.post(
            API + "/contacts", status=400, json={"code": "invalid_parameter", "message": "Invalid email address"}
        )
        crm_api.post(API + "/contacts", status=201, json={"id": 3})
        outcomes = push(
            brevo, contact(email="a@example.com"), contact(email="b@example.com"), contact(email="c@example.com")
        )
        assert [o.kind for o in outcomes] == [OutcomeKind.ACCEPTED, OutcomeKind.PERMANENT, OutcomeKind.ACCEPTED]

    @pytest.mark.parametrize("status", [500, 502, 503])
    def test_server_errors_are_retried(self, brevo, crm_api, status):
        crm_api.post(API + "/contacts", status=status, json={"message": "oops"})
        [outcome] = push(brevo, contact())
        assert (outcome.kind, outcome.http_status) == (OutcomeKind.RETRY, status)
        assert outcome.message.startswith("Brevo answered HTTP %d" % status)

    @pytest.mark.parametrize(
        "error, message",
        [
            (requests.ConnectTimeout(), "Brevo did not answer within 30 s."),
            (requests.ConnectionError(), "Could not connect to Brevo (ConnectionError)."),
        ],
    )
    def test_network_errors_are_retried(self, brevo, crm_api, error, message):
        crm_api.post(API + "/contacts", body=error)
        [outcome] = push(brevo, contact())
        assert (outcome.kind, outcome.message) == (OutcomeKind.RETRY, message)

    def test_rate_limit_reads_the_reset_header_and_stops_sending(self, brevo, crm_api, no_pacing_sleep):
        crm_api.post(
            API + "/contacts",
            status=429,
            json={"code": "too_many_requests", "message": "The expected rate limit is exceeded."},
            headers={"x-sib-ratelimit-limit": "10", "x-sib-ratelimit-remaining": "0", "x-sib-ratelimit-reset": "7"},
        )
        outcomes = push(brevo, contact(email="a@example.com"), contact(email="b@example.com"))
        assert [(o.kind, o.retry_after) for o in outcomes] == [(OutcomeKind.WAIT, 7.0)] * 2
        # The first request is sent again after each hold, then the batch stops.
        assert len(crm_api.calls) == 1 + RATE_LIMIT_RETRIES

    def test_bad_key_fails_the_batch_with_an_actionable_message_and_no_secret(self, brevo, crm_api, caplog):
        caplog.set_level(logging.DEBUG)
        crm_api.post(API + "/contacts", status=401, json={"code": "unauthorized", "message": "Key not found"})
        with pytest.raises(CRMUnavailable) as excinfo:
            push(brevo, contact())
        assert excinfo.value.fail_contacts is True
        assert "Set a valid BREVO_API_KEY" in str(excinfo.value)
        assert KEY not in str(excinfo.value) and KEY not in caplog.text

    @pytest.mark.parametrize(
        "status, body, expected",
        [
            (402, {"code": "not_enough_credits", "message": "Not enough credits"}, "Brevo refused the account"),
            (403, {"code": "permission_denied", "message": "Permission denied"}, "Brevo refused the account"),
            (404, {"code": "document_not_found", "message": "List ID does not exist"}, "Check BREVO_LIST_ID"),
        ],
    )
    def test_account_problems_pause_without_failing_contacts(self, brevo, crm_api, status, body, expected):
        crm_api.post(API + "/contacts", status=status, json=body)
        with pytest.raises(CRMUnavailable, match=expected) as excinfo:
            push(brevo, contact())
        assert excinfo.value.fail_contacts is False

    def test_each_request_waits_for_its_own_slot_at_the_configured_rate(self, brevo, crm_api, settings, monkeypatch):
        settings.BREVO_REQUESTS_PER_SECOND = 20
        crm_api.post(API + "/contacts", status=201, json={"id": 1})
        waited_for = []
        monkeypatch.setattr("integrations.backends.pacing.wait_until", waited_for.append)
        push(brevo, *[contact(email="p%d@example.com" % i) for i in range(6)])
        gaps = [later - earlier for earlier, later in zip(sorted(waited_for), sorted(waited_for)[1:])]
        # Within the window of 20 a second: a little below it (PACE_SHARE), at most
        # BURST times the average rate.
        assert len(waited_for) == 6 and gaps == pytest.approx([0.05 / PACE_SHARE / BURST] * 5)


@pytest.mark.django_db
class TestSharedPace:
    """The engine's pacer keeps the next free slot in the database (CRMState)."""

    def test_workers_share_one_pace(self, brevo, settings):
        settings.BREVO_REQUESTS_PER_SECOND = 10
        first_worker, second_worker = share_pace(BrevoBackend()).pacer, share_pace(BrevoBackend()).pacer
        first_slots = first_worker.reserve(10)
        second_slots = second_worker.reserve(2)
        # The first worker took Brevo's ten of the second: the second worker's wait
        # for that window to pass the first slots, because the recent slots live in
        # the database, not in the process.
        assert second_slots[0] - first_slots[0] == pytest.approx(1 / PACE_SHARE, abs=0.02)
        assert second_slots[1] - first_slots[1] == pytest.approx(1 / PACE_SHARE, abs=0.02)


@pytest.mark.django_db
class TestThroughTheEngine:
    def test_contacts_end_complete_with_their_brevo_ids(self, brevo, crm_api):
        from contacts import selection
        from integrations.engine import SyncEngine

        Contact.objects.create(email="a@example.com"), Contact.objects.create(email="b@example.com")
        selection.select(Contact.objects.all(), ["brevo"])
        crm_api.post(API + "/contacts", status=201, json={"id": 5})
        crm_api.post(API + "/contacts", status=201, json={"id": 6})
        result = SyncEngine(BrevoBackend()).run()
        assert result.accepted == 2
        assert sorted(ContactSync.objects.values_list("external_id", flat=True)) == ["5", "6"]

    def test_bad_key_errors_the_batch_pauses_brevo_and_stores_no_secret(self, brevo, crm_api):
        from contacts import selection
        from integrations.engine import SyncEngine
        from integrations.models import CRMState

        Contact.objects.create(email="ann@example.com")
        selection.select(Contact.objects.all(), ["brevo"])
        crm_api.post(API + "/contacts", status=401, json={"code": "unauthorized", "message": "Key not found"})
        SyncEngine(BrevoBackend()).run()
        row = ContactSync.objects.get()
        assert (row.sync_status, row.processing_status) == (SyncStatus.ERROR, ProcessingStatus.ERROR)
        assert "BREVO_API_KEY" in row.last_error and KEY not in row.last_error
        state = CRMState.objects.get(crm="brevo")
        assert state.paused_until is not None and "BREVO_API_KEY" in state.pause_reason


@pytest.mark.django_db
class TestSetup:
    """crm_setup paces its requests with the shared pacer, which lives in the database."""

    def test_creates_the_missing_attributes_once(self, brevo, crm_api):
        from io import StringIO

        from django.core.management import call_command

        crm_api.get(
            API + "/contacts/attributes",
            json={
                "attributes": [
                    {"name": "FIRSTNAME", "category": "normal", "type": "text"},
                    {"name": "LASTNAME", "category": "normal", "type": "text"},
                    {"name": "SMS", "category": "normal", "type": "text"},
                    {"name": "WEBSITE", "category": "normal", "type": "text"},
                ]
            },
        )
        crm_api.post(API + "/contacts/attributes/normal/COMPANY", status=201)
        out = StringIO()
        call_command("crm_setup", "--crm", "brevo", stdout=out)
        assert out.getvalue().strip() == "Brevo: created COMPANY; already there: WEBSITE."
        created = [c for c in crm_api.calls if c.request.method == "POST"]
        assert [sent_json(c) for c in created] == [{"type": "text"}]


class TestEmailForm:
    """Brevo takes an address with a Unicode domain only in its punycode form
    (docs/crm-api.md, section 1, "Email addresses")."""

    @pytest.mark.parametrize("spelling", ["zoe@ex\u00e4mple.com", "zoe@exa\u0308mple.com"])
    def test_every_spelling_is_sent_with_the_punycode_domain(self, brevo, crm_api, spelling):
        crm_api.post(API + "/contacts", status=201, json={"id": 42})
        # Unsaved, the contact keeps the spelling as given (the ORM would store the canonical one).
        push(brevo, contact(email=spelling))
        assert sent_json(crm_api.calls[0])["email"] == "zoe@xn--exmple-cua.com"

    def test_the_id_lookup_after_an_update_uses_the_form_that_was_sent(self, brevo, crm_api):
        crm_api.post(API + "/contacts", status=204)
        crm_api.get(API + "/contacts/zoe@xn--exmple-cua.com", json={"id": 77})
        [outcome] = push(brevo, contact(email="zoe@ex\u00e4mple.com"))
        assert outcome.external_id == "77"
