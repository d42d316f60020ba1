"""GET /api/v3/contacts and GET /api/v3/contacts/{id}."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import resolve
from django.utils import timezone

from api.views.contacts import RECENT_ATTEMPTS, ContactCursorPagination, ContactDetailView
from contacts.models import AttemptOutcome, ContactSync, ProcessingStatus, SyncAttempt, SyncStatus

from .conftest import CHANGE_CONTACTS, PAUSE_CRMS, VIEW_SYNCS

LIST = "/api/v3/contacts"

pytestmark = pytest.mark.django_db


def detail(contact_id):
    return "%s/%d" % (LIST, contact_id)


@pytest.fixture
def viewer(client_with):
    return client_with(VIEW_SYNCS)


def emails(response):
    assert response.status_code == 200, response.content
    return [contact["email"] for contact in response.json()["results"]]


class TestPermissions:
    @pytest.mark.parametrize("permissions", [(), (CHANGE_CONTACTS,), (PAUSE_CRMS,)])
    def test_without_view_syncs_it_is_403(self, client_with, make_contact, permissions):
        client = client_with(*permissions)
        contact = make_contact()
        assert client.get(LIST).status_code == 403
        assert client.get(detail(contact.pk)).status_code == 403

    def test_without_credentials_it_is_401(self, anonymous, make_contact):
        contact = make_contact()
        assert anonymous.get(LIST).status_code == 401
        assert anonymous.get(detail(contact.pk)).status_code == 401

    def test_a_wrong_token_is_401(self, anonymous, make_contact):
        anonymous.credentials(HTTP_AUTHORIZATION="Token not-a-token")
        assert anonymous.get(LIST).status_code == 401

    def test_view_syncs_is_enough(self, viewer, make_contact):
        contact = make_contact()
        assert viewer.get(LIST).status_code == 200
        assert viewer.get(detail(contact.pk)).status_code == 200


class TestList:
    def test_each_contact_comes_with_its_dual_status_per_crm(self, viewer, make_contact, make_sync):
        jane = make_contact("jane@example.com", first_name="Jane")
        synced_at = timezone.now()
        make_sync(
            jane,
            "hubspot",
            sync_status=SyncStatus.COMPLETE,
            processing_status=ProcessingStatus.COMPLETE,
            attempts=1,
            external_id="51",
            synced_at=synced_at,
        )
        make_sync(
            jane,
            "brevo",
            sync_status=SyncStatus.ERROR,
            processing_status=ProcessingStatus.ERROR,
            attempts=5,
            last_error="400: invalid phone",
        )
        [body] = viewer.get(LIST).json()["results"]
        assert (body["id"], body["email"], body["first_name"]) == (jane.pk, "jane@example.com", "Jane")
        brevo, hubspot = body["syncs"]
        assert brevo == {
            "crm": "brevo",
            "operation": "",
            "sync_status": "error",
            "processing_status": "error",
            "attempts": 5,
            "last_error": "400: invalid phone",
            "external_id": "",
            "synced_email": "",
            "synced_at": None,
            "next_attempt_at": None,
            "crm_event": "",
            "crm_event_at": None,
            "opted_out_at": None,
        }
        assert (hubspot["crm"], hubspot["external_id"], hubspot["sync_status"]) == ("hubspot", "51", "complete")
        assert hubspot["synced_at"] is not None

    def test_a_contact_without_rows_has_no_syncs(self, viewer, make_contact):
        make_contact()
        assert viewer.get(LIST).json()["results"][0]["syncs"] == []

    def test_pages_follow_ids_and_show_every_contact_once(self, viewer, make_contacts):
        contacts = make_contacts(7)
        seen, url = [], LIST + "?page_size=3"
        while url:
            page = viewer.get(url).json()
            assert len(page["results"]) <= 3
            seen += [contact["id"] for contact in page["results"]]
            url = page["next"]
        assert seen == sorted(contacts.values_list("pk", flat=True))

    @pytest.mark.parametrize("page_size", ["0", "-1", "2.0", "two", "%d" % (ContactCursorPagination.max_page_size + 1)])
    def test_a_page_size_out_of_range_is_400(self, viewer, make_contacts, page_size):
        make_contacts(3)
        response = viewer.get(LIST, {"page_size": page_size})
        assert response.status_code == 400
        assert "%d" % ContactCursorPagination.max_page_size in response.json()["page_size"][0]

    def test_the_largest_page_size_is_accepted(self, viewer, make_contacts):
        make_contacts(3)
        assert len(emails(viewer.get(LIST, {"page_size": ContactCursorPagination.max_page_size}))) == 3

    def test_a_malformed_cursor_is_404(self, viewer):
        assert viewer.get(LIST + "?cursor=not-a-cursor").status_code == 404

    def test_queries_do_not_grow_with_the_page(self, viewer, make_contacts, django_assert_max_num_queries):
        def queries_for_a_page(count):
            contacts = make_contacts(count)
            ContactSync.objects.bulk_create(
                ContactSync(contact=contact, crm=crm) for contact in contacts for crm in ("brevo", "hubspot")
            )
            with CaptureQueriesContext(connection) as queries:
                response = viewer.get(LIST + "?page_size=100&search=" + contacts[0].email.split("-")[0])
            assert len(response.json()["results"]) == count
            return len(queries)

        assert queries_for_a_page(2) == queries_for_a_page(40)
        with django_assert_max_num_queries(12):
            viewer.get(LIST + "?page_size=100")


class TestFilters:
    @pytest.fixture
    def rows(self, make_contact, make_sync):
        """ann: Error for Brevo, Complete for HubSpot; bob: Error for HubSpot only; cy: nothing."""
        ann, bob = make_contact("ann@example.com", company="Acme"), make_contact("bob@example.com")
        make_contact("cy@example.com", last_name="Acme")
        make_sync(ann, "brevo", sync_status=SyncStatus.ERROR, last_error="400: invalid phone")
        make_sync(ann, "hubspot", sync_status=SyncStatus.COMPLETE, processing_status=ProcessingStatus.COMPLETE)
        make_sync(bob, "hubspot", sync_status=SyncStatus.ERROR, processing_status=ProcessingStatus.QUEUED)

    @pytest.mark.parametrize(
        "query, expected",
        [
            ("crm=brevo", ["ann@example.com"]),
            ("crm=hubspot", ["ann@example.com", "bob@example.com"]),
            # The status is tested for the chosen CRM, not for any of the contact's rows.
            ("crm=brevo&sync_status=error", ["ann@example.com"]),
            ("crm=hubspot&sync_status=error", ["bob@example.com"]),
            ("sync_status=new", ["cy@example.com"]),
            ("processing_status=queued", ["bob@example.com"]),
            ("sync_error=400: invalid phone", ["ann@example.com"]),
            ("search=ACME", ["ann@example.com", "cy@example.com"]),
            ("search=acme ann", ["ann@example.com"]),
            ("crm=&sync_status=&search=", ["ann@example.com", "bob@example.com", "cy@example.com"]),
        ],
    )
    def test_filters_have_the_admin_lists_meaning(self, viewer, rows, query, expected):
        assert emails(viewer.get(LIST, dict(pair.split("=") for pair in query.split("&")))) == expected

    @pytest.mark.parametrize(
        "params, field, names",
        [
            ({"crm": "zoho"}, "crm", ["brevo", "hubspot", "mautic", "n8n"]),
            ({"sync_status": "done"}, "sync_status", SyncStatus.values),
            ({"processing_status": "waiting"}, "processing_status", ["queued", "processing", "complete", "error"]),
            ({"crms": "brevo"}, "parameters", ["crm", "sync_status", "cursor", "page_size"]),
        ],
    )
    def test_an_unknown_value_is_400_naming_the_valid_ones(self, viewer, params, field, names):
        response = viewer.get(LIST, params)
        assert response.status_code == 400
        [message] = response.json()[field]
        assert all(name in message for name in names), message

    def test_a_parameter_given_twice_is_400(self, viewer, rows):
        response = viewer.get(LIST + "?crm=brevo&crm=hubspot")
        assert response.status_code == 400
        assert list(response.json()) == ["crm"]

    @pytest.mark.parametrize("field", ["search", "sync_error", "crm", "sync_status"])
    def test_a_nul_byte_is_400(self, viewer, field):
        response = viewer.get(LIST, {field: "ab\x00c"})
        assert response.status_code == 400
        assert "NUL" in response.content.decode()

    def test_a_search_too_long_is_400(self, viewer):
        assert viewer.get(LIST, {"search": "x" * 201}).status_code == 400


class TestDetail:
    def test_the_contact_with_its_syncs_and_latest_attempts_newest_first(self, viewer, make_contact, make_sync):
        jane, other = make_contact(), make_contact()
        make_sync(jane, "brevo", sync_status=SyncStatus.SELECTED, processing_status=ProcessingStatus.QUEUED)
        start = timezone.now() - timedelta(days=1)
        SyncAttempt.objects.bulk_create(
            SyncAttempt(
                contact=contact,
                crm="brevo",
                attempted_at=start + timedelta(minutes=i),
                outcome=AttemptOutcome.RETRY,
                http_status=503,
                error="503 #%d" % i,
            )
            for i in range(RECENT_ATTEMPTS + 5)
            for contact in (jane, other)
        )
        body = viewer.get(detail(jane.pk)).json()
        assert (body["id"], body["email"]) == (jane.pk, jane.email)
        assert [sync["crm"] for sync in body["syncs"]] == ["brevo"]
        attempts = body["recent_attempts"]
        assert [attempt["error"] for attempt in attempts] == ["503 #%d" % i for i in range(24, 4, -1)]
        assert attempts[0] == {
            "crm": "brevo",
            "attempted_at": attempts[0]["attempted_at"],
            "outcome": "retry",
            "http_status": 503,
            "error": "503 #24",
        }

    def test_a_contact_never_attempted_has_no_attempts(self, viewer, make_contact):
        assert viewer.get(detail(make_contact().pk)).json()["recent_attempts"] == []

    @pytest.mark.parametrize("contact_id", ["0", "999999", str(2**63 + 1), "-1", "null,null", "1.5", "%20"])
    def test_an_unknown_id_is_a_json_404(self, viewer, contact_id):
        response = viewer.get("%s/%s" % (LIST, contact_id))
        assert response.status_code == 404
        assert "detail" in response.json()

    def test_the_detail_route_does_not_take_the_paths_of_other_contact_endpoints(self):
        # contacts/<str:pk> matches any segment; v3_urls must keep contacts/bulk before it.
        for url in ("/api/v3/contacts/bulk", "/api/v3/contacts/crm/select"):
            assert resolve(url).func.view_class is not ContactDetailView
