"""PUT /api/v3/contacts/crm/select and its siblings: the old system's call, the
other ways to name contacts, what the answer reports, bad input and permissions."""

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from api.selection_serializers import MAX_CONTACTS_PER_CALL
from contacts import selection
from contacts.models import ContactSync, PendingDecision, ProcessingStatus, SyncStatus
from integrations.conf import SyncPolicy
from integrations.engine import SyncEngine
from tests.integrations.conftest import DOUBLES, Clock, UpperBound
from tests.integrations.doubles import ScriptedBackend

from .conftest import CHANGE_CONTACTS, PAUSE_CRMS, VIEW_SYNCS

P, S = ProcessingStatus, SyncStatus
URL = "/api/v3/contacts/crm/select"
OLD_ANSWER_KEYS = {"updated_count", "queued_count", "crms", "action", "message"}


@pytest.fixture
def api(client_with):
    return client_with(CHANGE_CONTACTS)


def ids(contacts):
    return list(contacts.order_by("pk").values_list("pk", flat=True))


def states(crm="brevo"):
    return sorted(ContactSync.objects.filter(crm=crm).values_list("sync_status", "processing_status"))


def per_crm(response, crm):
    return per_crm_of(response.json(), crm)


def per_crm_of(answer, crm):
    return next(report for report in answer["per_crm"] if report["crm"] == crm)


def in_flight(make_sync, contact, crm="brevo"):
    return make_sync(
        contact,
        crm=crm,
        sync_status=S.SELECTED,
        processing_status=P.PROCESSING,
        attempts=1,
        claim_token=uuid.uuid4(),
        lease_expires_at=timezone.now() + timedelta(minutes=5),
    )


class TestTheOldCall:
    def test_select_with_the_exact_old_body_and_answer(self, api, make_contacts):
        contacts = make_contacts(3)
        body = {"contact_ids": ids(contacts), "crms": ["brevo", "hubspot"], "action": "select"}

        response = api.put(URL, body, format="json")

        assert response.status_code == 200, response.content
        answer = response.json()
        assert set(answer) >= OLD_ANSWER_KEYS
        assert (answer["updated_count"], answer["queued_count"]) == (3, 6)
        assert (answer["crms"], answer["action"]) == (["brevo", "hubspot"], "select")
        assert "6 (contact, CRM) pair(s) queued" in answer["message"]
        assert states("brevo") == states("hubspot") == [(S.SELECTED, P.QUEUED)] * 3

    def test_post_works_too_and_select_is_the_default_action(self, api, make_contacts):
        contacts = make_contacts(2)
        response = api.post(URL, {"contact_ids": ids(contacts), "crms": ["brevo"]}, format="json")
        assert response.status_code == 200
        assert (response.json()["action"], response.json()["queued_count"]) == ("select", 2)

    def test_unselect_with_the_exact_old_body(self, api, make_contact, make_sync):
        queued, complete, untouched = make_contact(), make_contact(), make_contact()
        make_sync(queued, sync_status=S.SELECTED, processing_status=P.QUEUED, next_attempt_at=timezone.now())
        make_sync(complete, sync_status=S.COMPLETE, processing_status=P.COMPLETE, external_id="ext-9")
        body = {"contact_ids": [queued.pk, complete.pk, untouched.pk], "crms": ["brevo"], "action": "unselect"}

        response = api.put(URL, body, format="json")

        assert response.status_code == 200, response.content
        answer = response.json()
        assert set(answer) >= OLD_ANSWER_KEYS
        assert (answer["updated_count"], answer["queued_count"], answer["action"]) == (3, 0, "unselect")
        assert per_crm(response, "brevo") == {
            "crm": "brevo",
            "changed": 2,
            "already": 1,
            "in_flight": 0,
            "not_in_error": 0,
        }
        assert states() == [(S.NEW, P.NONE)] * 2
        row = ContactSync.objects.get(contact=complete)
        assert (row.next_attempt_at, row.external_id) == (None, "ext-9"), "nothing deleted in the CRM"
        assert not ContactSync.objects.filter(contact=untouched).exists(), "New already: no row made"

    def test_some_ids_missing_counts_the_ones_found(self, api, make_contacts):
        contacts = make_contacts(2)
        response = api.put(URL, {"contact_ids": [*ids(contacts), 999_999], "crms": ["brevo"]}, format="json")
        assert response.json()["updated_count"] == 2


class TestNamingContacts:
    def test_by_emails_in_any_spelling(self, api, make_contact):
        zoe = make_contact(email="zoe@exämple.com")
        make_contact(email="other@example.com")
        response = api.put(URL, {"emails": ["  ZOE@xn--exmple-cua.com"], "crms": ["hubspot"]}, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["updated_count"] == 1
        assert list(ContactSync.objects.values_list("contact", "crm")) == [(zoe.pk, "hubspot")]

    def test_by_filter_with_the_admin_lists_rules(self, api, make_contact, make_sync):
        failed_brevo, failed_hubspot, fine = make_contact(), make_contact(), make_contact()
        make_sync(failed_brevo, sync_status=S.ERROR, processing_status=P.ERROR, last_error="boom")
        make_sync(failed_hubspot, crm="hubspot", sync_status=S.ERROR, processing_status=P.ERROR)
        make_sync(fine, sync_status=S.COMPLETE, processing_status=P.COMPLETE)
        body = {"filter": {"crm": "brevo", "sync_status": "error"}, "crms": ["brevo"], "action": "retry"}

        response = api.put(URL, body, format="json")

        assert response.status_code == 200, response.content
        assert (response.json()["updated_count"], response.json()["queued_count"]) == (1, 1)
        assert ContactSync.objects.get(contact=failed_brevo).processing_status == P.QUEUED
        assert ContactSync.objects.get(contact=failed_hubspot).processing_status == P.ERROR

    def test_by_search(self, api, make_contact):
        acme = make_contact(company="Acme Corp")
        make_contact(company="Other")
        response = api.put(URL, {"filter": {"search": "acme"}, "crms": ["n8n"]}, format="json")
        assert response.json()["updated_count"] == 1
        assert list(ContactSync.objects.values_list("contact", flat=True)) == [acme.pk]

    @pytest.mark.parametrize(
        "body, message",
        [
            ({"contact_ids": [999_999]}, "None of the contacts exists."),
            ({"emails": ["nobody@example.com"]}, "No contact has any of these emails."),
            ({"filter": {"sync_status": "error"}}, "No contact matches the filter."),
        ],
    )
    def test_404_when_nothing_is_found(self, api, make_contact, body, message):
        make_contact()
        response = api.put(URL, {**body, "crms": ["brevo"]}, format="json")
        assert (response.status_code, response.json()) == (404, {"detail": message})
        assert not ContactSync.objects.exists()


class TestWhatIsReported:
    def test_select_reports_already_queued_and_in_flight_per_crm(self, api, make_contact, make_sync):
        new, queued, pushing = make_contact(), make_contact(), make_contact()
        make_sync(queued, sync_status=S.SELECTED, processing_status=P.QUEUED, attempts=2)
        row = in_flight(make_sync, pushing)

        response = api.put(URL, {"contact_ids": [new.pk, queued.pk, pushing.pk], "crms": ["brevo"]}, format="json")

        answer = response.json()
        assert (answer["updated_count"], answer["queued_count"]) == (3, 2)
        assert per_crm(response, "brevo") == {
            "crm": "brevo",
            "changed": 1,
            "already": 1,
            "in_flight": 1,
            "not_in_error": 0,
        }
        assert "1 pair(s) being pushed now will be queued" in answer["message"]
        row.refresh_from_db()
        assert (row.processing_status, row.pending_decision) == (P.PROCESSING, PendingDecision.SELECT)
        assert ContactSync.objects.get(contact=queued).attempts == 0, "queued again with a fresh budget"

    def test_skip_path_and_unselect_remember_a_decision_in_flight(self, api, make_contact, make_sync):
        pushing = make_contact()
        row = in_flight(make_sync, pushing)
        response = api.put(
            "/api/v3/contacts/crm/unselect", {"contact_ids": [pushing.pk], "crms": ["brevo"]}, format="json"
        )
        assert (response.json()["action"], per_crm(response, "brevo")["in_flight"]) == ("unselect", 1)
        row.refresh_from_db()
        assert (row.processing_status, row.pending_decision) == (P.PROCESSING, PendingDecision.UNSELECT)

        response = api.put("/api/v3/contacts/crm/skip", {"contact_ids": [pushing.pk], "crms": ["brevo"]}, format="json")
        assert per_crm(response, "brevo")["in_flight"] == 1
        row.refresh_from_db()
        assert row.pending_decision == PendingDecision.SKIP

    def test_skip_reports_already_skipped(self, api, make_contacts, make_sync):
        contacts = make_contacts(3)
        make_sync(contacts.first(), sync_status=S.SKIPPED)
        response = api.put(URL, {"contact_ids": ids(contacts), "crms": ["brevo"], "action": "skip"}, format="json")
        assert (response.json()["queued_count"], per_crm(response, "brevo")["already"]) == (0, 1)
        assert per_crm(response, "brevo")["changed"] == 2
        assert states() == [(S.SKIPPED, P.NONE)] * 3

    def test_retry_path_reports_what_was_not_in_error(self, api, make_contacts, make_sync):
        failed, complete = make_contacts(2).order_by("pk")
        make_sync(failed, sync_status=S.ERROR, processing_status=P.ERROR, attempts=5)
        make_sync(complete, sync_status=S.COMPLETE, processing_status=P.COMPLETE)
        response = api.post(
            "/api/v3/contacts/crm/retry", {"contact_ids": [failed.pk, complete.pk], "crms": ["brevo"]}, format="json"
        )
        assert response.json()["queued_count"] == 1
        assert (per_crm(response, "brevo")["changed"], per_crm(response, "brevo")["not_in_error"]) == (1, 1)
        assert "1 pair(s) not in Error were left alone." in response.json()["message"]
        assert ContactSync.objects.get(contact=complete).processing_status == P.COMPLETE

    def test_an_alias_refuses_another_action(self, api, make_contact):
        body = {"contact_ids": [make_contact().pk], "crms": ["brevo"], "action": "select"}
        response = api.put("/api/v3/contacts/crm/skip", body, format="json")
        assert response.status_code == 400
        assert "action" in response.json()
        assert not ContactSync.objects.exists()


class TestBadInput:
    def test_unknown_crm_is_a_400_listing_the_known_ones(self, api, make_contact):
        response = api.put(URL, {"contact_ids": [make_contact().pk], "crms": ["brevo", "salesforce"]}, format="json")
        assert response.status_code == 400
        assert "Unknown CRM 'salesforce'. Known CRMs: brevo, hubspot, mautic, n8n." in str(response.json()["crms"])
        assert not ContactSync.objects.exists(), "nothing half-applied"

    def test_unknown_crm_in_the_filter(self, api, make_contact):
        response = api.put(URL, {"filter": {"crm": "salesforce"}, "crms": ["brevo"]}, format="json")
        assert response.status_code == 400
        assert "Known CRMs" in str(response.json()["filter"]["crm"])

    @pytest.mark.parametrize(
        "filter_, field",
        [
            ({"sync_status": "lost"}, "sync_status"),
            ({"processing_status": ""}, "processing_status"),
            ({"sync_stauts": "error"}, "sync_stauts"),
        ],
    )
    def test_unknown_filter_values_and_keys(self, api, make_contact, filter_, field):
        make_contact()
        response = api.put(URL, {"filter": filter_, "crms": ["brevo"]}, format="json")
        assert response.status_code == 400
        assert field in response.json()["filter"]
        assert not ContactSync.objects.exists()

    @pytest.mark.parametrize(
        "field, item",
        [("contact_ids", lambda i: i + 1), ("emails", lambda i: "person%d@example.com" % i)],
    )
    def test_more_than_the_limit_per_call(self, api, make_contact, field, item):
        make_contact(email="person0@example.com")
        body = {field: [item(i) for i in range(MAX_CONTACTS_PER_CALL + 1)], "crms": ["brevo"]}
        response = api.put(URL, body, format="json")
        assert response.status_code == 400
        assert response.json()[field] == ["Ensure this field has no more than %d elements." % MAX_CONTACTS_PER_CALL]
        assert not ContactSync.objects.exists()

    def test_the_limit_itself_is_taken(self, api, make_contacts):
        contacts = make_contacts(2)
        body = {"contact_ids": [*ids(contacts), *range(10**9, 10**9 + MAX_CONTACTS_PER_CALL - 2)], "crms": ["brevo"]}
        response = api.put(URL, body, format="json")
        assert (response.status_code, response.json()["queued_count"]) == (200, 2)

    @pytest.mark.parametrize(
        "body, field",
        [
            ({"emails": ["zoe\x00@example.com"], "crms": ["brevo"]}, "emails"),
            ({"contact_ids": [1], "crms": ["bre\x00vo"]}, "crms"),
            ({"filter": {"search": "a\x00b"}, "crms": ["brevo"]}, "filter"),
        ],
    )
    def test_nul_bytes_are_refused(self, api, body, field):
        response = api.put(URL, body, format="json")
        assert response.status_code == 400
        assert "Null characters are not allowed." in str(response.json()[field])

    @pytest.mark.parametrize(
        "body, field",
        [
            ({"contact_ids": "12", "crms": ["brevo"]}, "contact_ids"),
            ({"contact_ids": [True], "crms": ["brevo"]}, "contact_ids"),
            ({"contact_ids": [1.5], "crms": ["brevo"]}, "contact_ids"),
            ({"contact_ids": [2**70], "crms": ["brevo"]}, "contact_ids"),
            ({"contact_ids": [1], "crms": "brevo"}, "crms"),
            ({"contact_ids": [1], "crms": []}, "crms"),
            ({"contact_ids": [1], "crms": ["brevo"], "action": "delete"}, "action"),
            ({"emails": ["not-an-email"], "crms": ["brevo"]}, "emails"),
            ({"emails": [{"a": 1}], "crms": ["brevo"]}, "emails"),
            ({"filter": ["brevo"], "crms": ["brevo"]}, "filter"),
            ({"crms": ["brevo"]}, "non_field_errors"),
            ({"contact_ids": [1], "emails": ["a@example.com"], "crms": ["brevo"]}, "non_field_errors"),
        ],
    )
    def test_wrong_types_and_values_name_the_field(self, api, make_contact, body, field):
        make_contact()
        response = api.put(URL, body, format="json")
        assert response.status_code == 400, response.content
        assert field in response.json()
        assert not ContactSync.objects.exists()

    def test_a_body_that_is_not_an_object(self, api):
        assert api.put(URL, [1, 2], format="json").status_code == 400
        assert api.generic("PUT", URL, "{not json", content_type="application/json").status_code == 400


class TestPermissions:
    @pytest.mark.parametrize(
        "path", [URL, "/api/v3/contacts/crm/unselect", "/api/v3/contacts/crm/skip", "/api/v3/contacts/crm/retry"]
    )
    def test_the_matrix(self, anonymous, client_with, make_contact, path):
        body = {"contact_ids": [make_contact().pk], "crms": ["brevo"]}
        assert anonymous.put(path, body, format="json").status_code == 401
        assert client_with(VIEW_SYNCS, PAUSE_CRMS).put(path, body, format="json").status_code == 403
        assert not ContactSync.objects.exists()
        assert client_with(CHANGE_CONTACTS).put(path, body, format="json").status_code == 200


def test_the_schema_documents_every_path_and_code(staff_client):
    schema = staff_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    for path in ("select", "unselect", "skip", "retry"):
        operation = schema["paths"]["/api/v3/contacts/crm/%s" % path]
        for method in ("put", "post"):
            assert {"200", "400", "401", "403", "404"} <= set(operation[method]["responses"])


def test_the_contacts_work_is_three_statements_whatever_the_number(api, make_contacts):
    body = {"contact_ids": ids(make_contacts(200)), "crms": ["brevo", "hubspot"]}
    with CaptureQueriesContext(connection) as queries:
        response = api.put(URL, body, format="json")
    assert response.json()["queued_count"] == 400
    on_contacts = [q["sql"] for q in queries.captured_queries if "contacts_" in q["sql"]]
    # The count, the already-queued count and the upsert; none per row or per CRM.
    assert len(on_contacts) == 3, on_contacts


# ---------------------------------------------------------------- a call that comes mid-push


@pytest.fixture
def scripted_crm(settings):
    settings.CRMSYNC_EXTRA_BACKENDS = DOUBLES
    settings.SCRIPTED_API_KEY = "scripted-secret-key"


def policy():
    return SyncPolicy(
        crm="scripted",
        interval_minutes=5,
        batch_size=50,
        max_instances=1,
        max_retries=3,
        retry_delay_minutes=5,
        retry_exponential=True,
        retry_max_delay_minutes=60,
        lease_seconds=300,
    )


@pytest.mark.parametrize(
    "action, ends, pushes",
    [
        ("select", (S.COMPLETE, P.COMPLETE), 2),
        ("skip", (S.SKIPPED, P.NONE), 1),
        ("unselect", (S.NEW, P.NONE), 1),
    ],
)
def test_a_call_on_rows_in_flight_is_applied_when_the_batch_records(
    api, scripted_crm, make_contacts, action, ends, pushes
):
    contacts = make_contacts(3)
    selection.select(contacts, ["scripted"])
    answers, pushed = [], []

    def respond(items):
        if not pushed:  # the call comes while the first batch is in flight, under its claim token
            assert ContactSync.objects.filter(processing_status=P.PROCESSING, claim_token__isnull=False).count() == 3
            body = {"contact_ids": ids(contacts), "crms": ["scripted"], "action": action}
            answers.append(api.put(URL, body, format="json").json())
        pushed.append(len(items))
        return ScriptedBackend.accept_all(items)

    SyncEngine(ScriptedBackend(respond), policy(), clock=Clock(), rng=UpperBound()).run()

    (answer,) = answers
    assert (answer["updated_count"], answer["queued_count"]) == (3, 0), "in flight: not counted as queued"
    assert per_crm_of(answer, "scripted") == {
        "crm": "scripted",
        "changed": 0,
        "already": 0,
        "in_flight": 3,
        "not_in_error": 0,
    }
    assert states("scripted") == [ends] * 3
    assert len(pushed) == pushes
