"""Export to CSV: the Contacts and Contact syncs lists as filtered and searched,
streamed, formula-safe, with each CRM's columns read set-based."""

import csv
import io

import pytest
from django.db import connection
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from contacts import export
from contacts.models import ContactSync, ProcessingStatus, SyncStatus

from .conftest import make_staff

CONTACTS_URL = reverse("admin:contacts_contact_export")
SYNCS_URL = reverse("admin:contacts_contactsync_export")


@pytest.fixture
def viewer(client, db):
    client.force_login(make_staff("viewer", "view_contact", "view_contactsync"))
    return client


def read_csv(response):
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="')
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.mark.django_db
class TestContacts:
    def test_the_search_and_filters_of_the_list_are_respected(self, viewer, make_contact, make_sync):
        make_contact(email="ann@acme.test", company="Acme")
        bob = make_contact(email="bob@acme.test", company="Acme")
        make_contact(email="carl@other.test", company="Other")
        make_sync(bob, "brevo", sync_status=SyncStatus.COMPLETE, processing_status=ProcessingStatus.COMPLETE)

        assert sorted(row["email"] for row in read_csv(viewer.get(CONTACTS_URL, {"q": "acme"}))) == [
            "ann@acme.test",
            "bob@acme.test",
        ]
        complete_in_brevo = read_csv(viewer.get(CONTACTS_URL, {"q": "acme", "crm": "brevo", "sync_status": "complete"}))
        assert [row["email"] for row in complete_in_brevo] == ["bob@acme.test"]

    def test_each_crm_has_its_four_columns(self, viewer, make_contact, make_sync):
        ann = make_contact(email="ann@example.com")
        make_sync(
            ann,
            "hubspot",
            sync_status=SyncStatus.ERROR,
            processing_status=ProcessingStatus.ERROR,
            external_id="1234",
            last_error="Property phone is invalid",
        )
        make_sync(ann, "brevo", sync_status=SyncStatus.SELECTED, processing_status=ProcessingStatus.QUEUED)

        (row,) = read_csv(viewer.get(CONTACTS_URL))

        assert (row["HubSpot sync status"], row["HubSpot processing status"]) == ("Error", "Error")
        assert (row["HubSpot external id"], row["HubSpot last error"]) == ("1234", "Property phone is invalid")
        assert (row["Brevo sync status"], row["Brevo processing status"]) == ("Selected", "Queued")
        assert (row["Mautic sync status"], row["Mautic processing status"], row["Mautic external id"]) == (
            "New",
            "",
            "",
        )

    def test_cells_a_spreadsheet_would_run_are_text(self, viewer, make_contact):
        make_contact(
            email="evil@example.com",
            first_name='=HYPERLINK("http://x.test")',
            last_name="+1+1",
            company="@SUM(A1)",
            phone="-2",
            attributes={"note": "\tcmd"},
        )

        (row,) = read_csv(viewer.get(CONTACTS_URL))

        assert row["first_name"] == '\'=HYPERLINK("http://x.test")'
        assert (row["last_name"], row["company"], row["phone"]) == ("'+1+1", "'@SUM(A1)", "'-2")
        assert row["email"] == "evil@example.com"

    @pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
    def test_every_formula_start_is_escaped(self, start):
        assert export.cell(start + "1") == "'" + start + "1"
        assert export.cell("a" + start) == "a" + start

    def test_queries_do_not_grow_with_the_rows(self, viewer, make_contacts, monkeypatch):
        monkeypatch.setattr(export, "CHUNK_SIZE", 100)

        def queries_for(count):
            ContactSync.objects.all().delete()
            contacts = make_contacts(count)
            ContactSync.objects.bulk_create(ContactSync(contact=contact, crm="brevo") for contact in contacts)
            with CaptureQueriesContext(connection) as queries:
                rows = read_csv(viewer.get(CONTACTS_URL, {"q": contacts.first().email.split("-")[0]}))
            assert len(rows) == count
            return len(queries)

        # Within one chunk of 100: the same queries for 10 rows as for 90.
        assert queries_for(10) == queries_for(90)

    def test_a_filter_the_list_does_not_know_goes_back_to_the_list(self, viewer):
        response = viewer.get(CONTACTS_URL, {"nonsense": "1"})
        assert response.status_code == 302
        assert response.url == reverse("admin:contacts_contact_changelist") + "?e=1"

    def test_without_the_view_permission_it_is_refused(self, client, db):
        client.force_login(make_staff("nobody"))
        assert client.get(CONTACTS_URL).status_code == 403


@pytest.mark.django_db
class TestContactSyncs:
    def test_the_filter_is_respected_and_statuses_are_words(self, viewer, make_contact, make_sync):
        ann, bob = make_contact(email="ann@example.com"), make_contact(email="bob@example.com")
        make_sync(
            ann, "brevo", sync_status=SyncStatus.ERROR, processing_status=ProcessingStatus.ERROR, last_error="=bad"
        )
        make_sync(bob, "brevo", sync_status=SyncStatus.COMPLETE, processing_status=ProcessingStatus.COMPLETE)

        rows = read_csv(viewer.get(SYNCS_URL, {"sync_status__exact": "error"}))

        assert [(row["email"], row["crm"], row["sync status"], row["last error"]) for row in rows] == [
            ("ann@example.com", "brevo", "Error", "'=bad")
        ]

    def test_the_list_links_to_the_export_with_its_filter(self, viewer):
        page = viewer.get(reverse("admin:contacts_contactsync_changelist"), {"sync_status__exact": "error"})
        assert SYNCS_URL + "?sync_status__exact=error" in page.content.decode()
