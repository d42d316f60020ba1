"""Brevo's bulk path (integrations/backends/brevo_import.py) against its HTTP API,
mocked with `responses`: what the import sends, how each contact's outcome is
established, and where the single-contact path takes over."""

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from contacts import selection
from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus
from integrations.backends.base import MappedField, OutcomeKind
from integrations.backends.brevo import BrevoBackend
from integrations.engine import SyncEngine

from .conftest import make_item, unsaved_contact

API = "https://api.brevo.com/v3"
KEY = "xkeysib-test-0000000000000000000000"
REPORTS = "https://exports.brevo.test/report"


@pytest.fixture
def brevo(settings):
    settings.BREVO_API_KEY = KEY
    settings.BREVO_REQUESTS_PER_SECOND = 1000  # no pacing waits in unit tests
    settings.BREVO_CONCURRENCY = 1
    settings.BREVO_LIST_ID = "7"
    settings.BREVO_IMPORT_THRESHOLD = 3
    settings.BREVO_IMPORT_POLL_SECONDS = 0
    return BrevoBackend


def items_for(backend, *emails, external_ids=None):
    contacts = [unsaved_contact(email=email, first_name="F") for email in emails]
    return [make_item(c, backend, external_id=(external_ids or {}).get(c.email, "")) for c in contacts]


def process_answer(process_id=31, status="completed", **reports):
    answer = {"id": process_id, "name": "IMPORTUSER", "status": status}
    if status == "completed":
        answer["info"] = {"import": {"invalid_emails": None, "duplicate_phone_id": None, **reports}}
    return answer


def brevo_contacts(*pairs):
    return {"contacts": [{"id": contact_id, "email": email} for email, contact_id in pairs], "count": len(pairs)}


def calls_to(crm_api, path, method="GET"):
    return [c for c in crm_api.calls if c.request.method == method and urlsplit(c.request.url).path.endswith(path)]


class TestImportPath:
    def test_every_contact_ends_accepted_with_its_id_from_the_read_back(self, brevo, crm_api):
        crm_api.post(API + "/contacts/import", status=202, json={"processId": 31})
        crm_api.get(API + "/processes/31", json=process_answer(status="queued"))
        crm_api.get(API + "/processes/31", json=process_answer(status="in_process"))
        crm_api.get(API + "/processes/31", json=process_answer())
        crm_api.get(
            API + "/contacts", json=brevo_contacts(("a@example.com", 1), ("b@example.com", 2), ("c@example.com", 3))
        )
        backend = BrevoBackend()
        items = items_for(backend, "a@example.com", "b@example.com", "c@example.com")
        outcomes = backend.push(items)
        assert [(o.kind, o.external_id) for o in outcomes] == [(OutcomeKind.ACCEPTED, str(i)) for i in (1, 2, 3)]
        assert len(calls_to(crm_api, "/processes/31")) == 3, "polled until completed"
        assert not calls_to(crm_api, "/contacts", "POST"), "no contact went one by one"
        read = parse_qs(urlsplit(calls_to(crm_api, "/contacts")[0].request.url).query)
        assert read["limit"] == ["1000"] and read["sort"] == ["asc"] and read["modifiedSince"][0].endswith("Z")

    def test_the_body_carries_the_lists_and_the_staff_mapping_as_the_single_path(self, brevo, crm_api):
        crm_api.post(API + "/contacts/import", status=202, json={"processId": 31})
        crm_api.get(API + "/processes/31", json=process_answer())
        crm_api.get(API + "/contacts", json=brevo_contacts())
        backend = BrevoBackend()
        backend.mapping = [MappedField("LASTNAME", "company"), MappedField("SOURCE", "crmsync", kind="constant")]
        contacts = [unsaved_contact(email="m%d@example.com" % i, company="Acme %d" % i) for i in range(3)]
        items = [make_item(c, backend) for c in contacts]
        backend.push(items)
        body = json.loads(calls_to(crm_api, "/contacts/import", "POST")[0].request.body)
        assert body["listIds"] == [7] == items[0].payload["listIds"]
        assert body["jsonBody"][0] == {
            "email": "m0@example.com",
            "attributes": {"LASTNAME": "Acme 0", "SOURCE": "crmsync"},
        }
        assert body["jsonBody"][0]["attributes"] == items[0].payload["attributes"]
        assert (body["updateExistingContacts"], body["emptyContactsAttributes"]) == (True, False)

    def test_rows_in_the_report_end_in_error_with_brevos_words(self, brevo, crm_api):
        crm_api.post(API + "/contacts/import", status=202, json={"processId": 31})
        crm_api.get(API + "/processes/31", json=process_answer(invalid_emails=REPORTS + "/31/invalid.csv"))
        crm_api.get(REPORTS + "/31/invalid.csv", body="EMAIL;ERROR\nbad@example.com;Invalid email address\n")
        crm_api.get(API + "/contacts", json=brevo_contacts(("a@example.com", 1), ("b@example.com", 2)))
        backend = BrevoBackend()
        outcomes = backend.push(items_for(backend, "a@example.com", "b@example.com", "bad@example.com"))
        refused = outcomes[-1]
        assert refused.kind is OutcomeKind.PERMANENT
        assert refused.message == (
            "Brevo's import 31 left it out, as an invalid email address (its invalid_emails report): "
            "Invalid email address."
        )
        report = calls_to(crm_api, "/31/invalid.csv")[0]
        assert "api-key" not in report.request.headers, "the key never goes to the report's storage"

    def test_contacts_without_an_outcome_go_one_by_one(self, brevo, crm_api):
        crm_api.post(API + "/contacts/import", status=202, json={"processId": 31})
        crm_api.get(API + "/processes/31", json=process_answer())
        crm_api.get(API + "/contacts", json=brevo_contacts(("a@example.com", 1), ("b@example.com", 2)))
        crm_api.post(
            API + "/contacts", status=400, json={"code": "invalid_parameter", "message": "Invalid phone number"}
        )
        backend = BrevoBackend()
        outcomes = backend.push(items_for(backend, "a@example.com", "b@example.com", "lost@example.com"))
        assert outcomes[-1].kind is OutcomeKind.PERMANENT
        assert outcomes[-1].message == "Brevo refused it: Invalid phone number [invalid_parameter]"
        single = calls_to(crm_api, "/contacts", "POST")
        assert [json.loads(c.request.body)["email"] for c in single] == ["lost@example.com"]

    def test_a_failed_process_leaves_every_contact_to_the_single_path(self, brevo, crm_api):
        crm_api.post(API + "/contacts/import", status=202, json={"processId": 31})
        crm_api.get(API + "/processes/31", json=process_answer(status="failed"))
        for contact_id in (1, 2, 3):
            crm_api.post(API + "/contacts", status=201, json={"id": contact_id})
        backend = BrevoBackend()
        outcomes = backend.push(items_for(backend, "a@example.com", "b@example.com", "c@example.com"))
        assert [o.external_id for o in outcomes] == ["1", "2", "3"]
        assert not calls_to(crm_api, "/contacts"), "nothing to read back"

    def test_bodies_stay_under_the_size_cap(self, brevo, crm_api, settings):
        settings.BREVO_IMPORT_MAX_BYTES = 400
        for process_id in (31, 32, 33):
            crm_api.post(API + "/contacts/import", status=202, json={"processId": process_id})
            crm_api.get(API + "/processes/%d" % process_id, json=process_answer(process_id))
        crm_api.get(API + "/contacts", json=brevo_contacts(*(("p%d@example.com" % i, i) for i in range(6))))
        backend = BrevoBackend()
        outcomes = backend.push(items_for(backend, *("p%d@example.com" % i for i in range(6))))
        bodies = [c.request.body for c in calls_to(crm_api, "/contacts/import", "POST")]
        assert len(bodies) > 1 and all(len(body) <= 400 for body in bodies)
        assert sorted(row["email"] for b in bodies for row in json.loads(b)["jsonBody"]) == sorted(
            "p%d@example.com" % i for i in range(6)
        )
        assert {o.kind for o in outcomes} == {OutcomeKind.ACCEPTED}


class TestSinglePathStays:
    def test_below_the_threshold_nothing_is_imported(self, brevo, crm_api):
        crm_api.post(API + "/contacts", status=201, json={"id": 1})
        crm_api.post(API + "/contacts", status=201, json={"id": 2})
        backend = BrevoBackend()
        outcomes = backend.push(items_for(backend, "a@example.com", "b@example.com"))
        assert [o.external_id for o in outcomes] == ["1", "2"]
        assert not calls_to(crm_api, "/contacts/import", "POST")

    def test_contacts_brevo_gave_an_id_are_updated_by_it_not_imported(self, brevo, crm_api):
        crm_api.put(API + "/contacts/9", status=204)
        crm_api.post(API + "/contacts/import", status=202, json={"processId": 31})
        crm_api.get(API + "/processes/31", json=process_answer())
        crm_api.get(
            API + "/contacts", json=brevo_contacts(("b@example.com", 2), ("c@example.com", 3), ("d@example.com", 4))
        )
        backend = BrevoBackend()
        emails = ("a@example.com", "b@example.com", "c@example.com", "d@example.com")
        outcomes = backend.push(items_for(backend, *emails, external_ids={"a@example.com": "9"}))
        body = json.loads(calls_to(crm_api, "/contacts/import", "POST")[0].request.body)
        assert [row["email"] for row in body["jsonBody"]] == list(emails[1:])
        assert len(calls_to(crm_api, "/contacts/9", "PUT")) == 1
        assert sorted(o.external_id for o in outcomes) == ["2", "3", "4", "9"]

    def test_without_a_list_there_is_no_import(self, brevo, crm_api, settings):
        settings.BREVO_LIST_ID = ""
        assert BrevoBackend().bulk_claim() is None
        settings.BREVO_LIST_ID = "7"
        assert BrevoBackend().bulk_claim() == (3, 10_000)


@pytest.mark.django_db
class TestThroughTheEngine:
    def test_the_engine_claims_an_import_batch_and_records_the_process_first(self, brevo, crm_api, settings):
        settings.BREVO_SYNC_SCHEDULER_BATCH_SIZE = 2
        Contact.objects.bulk_create(Contact(email="e%d@example.com" % i) for i in range(5))
        selection.select(Contact.objects.all(), ["brevo"])
        seen = []

        def process(request):
            seen.append(set(ContactSync.objects.values_list("crm_process_id", flat=True)))
            return 200, {}, json.dumps(process_answer())

        crm_api.post(API + "/contacts/import", status=202, json={"processId": 31})
        crm_api.add_callback("GET", API + "/processes/31", callback=process)
        crm_api.get(API + "/contacts", json=brevo_contacts(*(("e%d@example.com" % i, 100 + i) for i in range(5))))
        result = SyncEngine(BrevoBackend()).run()
        assert (result.batches, result.accepted) == (1, 5), "one batch of 5, not batches of 2"
        assert seen == [{"31"}], "the process id was on every row before the first poll"
        rows = ContactSync.objects.order_by("contact__email")
        assert [r.external_id for r in rows] == [str(100 + i) for i in range(5)]
        assert {(r.sync_status, r.processing_status, r.crm_process_id) for r in rows} == {
            (SyncStatus.COMPLETE, ProcessingStatus.COMPLETE, "")
        }

    def test_below_the_threshold_the_engine_keeps_its_batch_size(self, brevo, crm_api, settings):
        settings.BREVO_SYNC_SCHEDULER_BATCH_SIZE = 1
        Contact.objects.bulk_create(Contact(email="e%d@example.com" % i) for i in range(2))
        selection.select(Contact.objects.all(), ["brevo"])
        crm_api.post(API + "/contacts", status=201, json={"id": 1})
        crm_api.post(API + "/contacts", status=201, json={"id": 2})
        result = SyncEngine(BrevoBackend()).run()
        assert (result.batches, result.accepted) == (2, 2)
