"""Re-importing contacts that nothing changed: reported unchanged, not written,
and not queued again where they are already Complete or on their way."""

from datetime import timedelta
from io import BytesIO, StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from contacts.importer import import_contacts
from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus

FILE = "email,first_name,company\nann@example.com,Ann,Acme\nbob@example.com,Bob,\n"


def run_import(tmp_path, text, *args):
    path = tmp_path / "contacts.csv"
    path.write_text(text)
    out = StringIO()
    call_command("import_contacts", str(path), *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def backdate_contacts():
    """Contacts last written a day ago, so a write now would show in updated_at."""
    a_day_ago = timezone.now() - timedelta(days=1)
    Contact.objects.update(updated_at=a_day_ago)
    return a_day_ago


@pytest.mark.django_db
class TestReimport:
    def test_the_same_file_twice_is_unchanged_and_not_written(self, tmp_path):
        assert "Created 2, updated 0, unchanged 0, rejected 0 of 2 rows" in run_import(tmp_path, FILE)
        a_day_ago = backdate_contacts()

        out = run_import(tmp_path, FILE)

        assert "Created 0, updated 0, unchanged 2, rejected 0 of 2 rows" in out
        assert set(Contact.objects.values_list("updated_at", flat=True)) == {a_day_ago}

    def test_a_changed_row_is_updated_and_the_rest_unchanged(self, tmp_path):
        run_import(tmp_path, FILE)
        a_day_ago = backdate_contacts()

        out = run_import(tmp_path, FILE.replace("Bob,", "Bob,Initech"))

        assert "Created 0, updated 1, unchanged 1, rejected 0 of 2 rows" in out
        assert Contact.objects.get(email="ann@example.com").updated_at == a_day_ago
        assert Contact.objects.get(email="bob@example.com").updated_at > a_day_ago

    def test_select_leaves_complete_and_queued_syncs_of_unchanged_contacts_alone(self, tmp_path, make_sync):
        run_import(tmp_path, FILE)
        ann, bob = Contact.objects.get(email="ann@example.com"), Contact.objects.get(email="bob@example.com")
        synced_at = timezone.now() - timedelta(days=1)
        complete = make_sync(
            ann,
            "brevo",
            sync_status=SyncStatus.COMPLETE,
            processing_status=ProcessingStatus.COMPLETE,
            synced_at=synced_at,
        )
        ContactSync.objects.filter(pk=complete.pk).update(updated_at=synced_at)
        failed = make_sync(bob, "brevo", sync_status=SyncStatus.ERROR, processing_status=ProcessingStatus.ERROR)

        out = run_import(tmp_path, FILE, "--select", "brevo,hubspot")

        assert "unchanged 2" in out
        complete.refresh_from_db()
        assert (complete.sync_status, complete.processing_status) == (SyncStatus.COMPLETE, ProcessingStatus.COMPLETE)
        assert complete.updated_at == synced_at
        # Not yet where they were asked to be: Bob's error in Brevo, both in HubSpot.
        queued = ContactSync.objects.filter(processing_status=ProcessingStatus.QUEUED)
        assert set(queued.values_list("contact__email", "crm")) == {
            ("bob@example.com", "brevo"),
            ("ann@example.com", "hubspot"),
            ("bob@example.com", "hubspot"),
        }
        assert failed.pk in set(queued.values_list("pk", flat=True))
        assert "Queued 3 syncs" in out

    def test_a_changed_complete_contact_is_queued_again(self, tmp_path, make_sync):
        run_import(tmp_path, FILE)
        ann = Contact.objects.get(email="ann@example.com")
        make_sync(ann, "brevo", sync_status=SyncStatus.COMPLETE, processing_status=ProcessingStatus.COMPLETE)

        run_import(tmp_path, FILE.replace("Ann,Acme", "Ann,Globex"), "--select", "brevo")

        assert ContactSync.objects.get(contact=ann).processing_status == ProcessingStatus.QUEUED

    def test_the_report_counts_each_kind_and_tells_each_row(self, make_contact):
        make_contact(email="ann@example.com", first_name="Ann", company="Acme")
        make_contact(email="bob@example.com", first_name="Robert")
        text = FILE + "new@example.com,New,\nnot-an-email,,\n"
        rows = []

        report = import_contacts(
            BytesIO(text.encode()), on_row=lambda line, item: rows.append((line, item.result, item.email))
        )

        assert (report.created, report.updated, report.unchanged, report.rejected) == (1, 1, 1, 1)
        assert sorted(rows) == [
            (2, "unchanged", "ann@example.com"),
            (3, "updated", "bob@example.com"),
            (4, "created", "new@example.com"),
            (5, "rejected", ""),
        ]
