"""Import contacts in the admin: upload, per-line preview, confirm; a large file
through django-q2 (run synchronously here) with its progress; the file kept in
the database and deleted when done."""

import pytest
from django.contrib.admin.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django_q.conf import Conf

from contacts import import_jobs
from contacts.models import (
    Contact,
    ContactSync,
    ImportChunk,
    ImportJob,
    ProcessingStatus,
    Suppression,
    SyncStatus,
)
from contacts.suppression import SUPPRESSED_REASON, email_hash

from .conftest import make_staff

UPLOAD_URL = reverse("admin:contacts_contact_import")
FILE = (
    "email,first_name,company\n"
    "same@example.com,Sam,Acme\n"
    "changed@example.com,Chad,Globex\n"
    "new@example.com,Nora,\n"
    "not-an-email,Bad,\n"
)


@pytest.fixture
def staff_client(client, db):
    client.force_login(make_staff("importer", "add_contact", "change_contact", "view_contact"))
    return client


@pytest.fixture
def existing(make_contact):
    make_contact(email="same@example.com", first_name="Sam", company="Acme")
    make_contact(email="changed@example.com", first_name="Chad", company="Initech")


def upload(client, text, name="people.csv", **data):
    response = client.post(UPLOAD_URL, {"file": SimpleUploadedFile(name, text.encode()), **data})
    assert response.status_code == 302, response.content
    return ImportJob.objects.get(pk=int(response.url.rstrip("/").rsplit("/", 1)[1]))


def job_page(client, job):
    return client.get(reverse("admin:contacts_contact_import_job", args=[job.pk]))


def confirm(client, job):
    return client.post(reverse("admin:contacts_contact_import_confirm", args=[job.pk]))


@pytest.mark.django_db
class TestSmallFile:
    def test_the_preview_tells_each_line_and_writes_nothing(self, staff_client, existing):
        job = upload(staff_client, FILE)

        job.refresh_from_db()
        assert job.status == ImportJob.Status.PREVIEWED
        assert job.preview["counts"] == {
            "created": 1,
            "updated": 1,
            "unchanged": 1,
            "rejected": 1,
            "rows": 4,
            "queued": 0,
        }
        assert job.preview["lines"]["rejected"] == [[5, "", "email 'not-an-email' is not a valid email address"]]
        page = job_page(staff_client, job).content.decode()
        assert "Would be created: 1" in page and "new@example.com" in page
        assert "Unchanged (left as they are): 1" in page
        assert "is not a valid email address" in page
        assert not Contact.objects.filter(email="new@example.com").exists()
        assert Contact.objects.get(email="changed@example.com").company == "Initech"
        # The file waits in the database for the confirmation.
        assert b"".join(bytes(data) for data in ImportChunk.objects.values_list("data", flat=True)) == FILE.encode()

    def test_confirming_imports_records_it_once_and_deletes_the_file(self, staff_client, existing):
        job = upload(staff_client, FILE, crms=["brevo"])

        response = confirm(staff_client, job)

        assert response.status_code == 302
        job.refresh_from_db()
        assert job.status == ImportJob.Status.DONE
        assert job.counts["created"] == 1 and job.counts["updated"] == 1 and job.counts["unchanged"] == 1
        assert job.rejected_lines == [[5, "email 'not-an-email' is not a valid email address"]]
        assert Contact.objects.get(email="changed@example.com").company == "Globex"
        assert set(ContactSync.objects.values_list("contact__email", "sync_status")) == {
            (email, SyncStatus.SELECTED) for email in ("same@example.com", "changed@example.com", "new@example.com")
        }
        assert not ImportChunk.objects.exists()
        entry = LogEntry.objects.get()
        assert entry.change_message == (
            "Imported 3 contacts for Brevo. created 1, updated 1, unchanged 1, rejected 1 from people.csv"
        )
        page = job_page(staff_client, job).content.decode()
        assert "Imported" in page and "not a valid email address" in page

    def test_cancel_deletes_the_file_and_imports_nothing(self, staff_client):
        job = upload(staff_client, FILE)

        staff_client.post(reverse("admin:contacts_contact_import_cancel", args=[job.pk]))

        job.refresh_from_db()
        assert job.status == ImportJob.Status.CANCELLED
        assert not ImportChunk.objects.exists() and not Contact.objects.exists()
        confirm(staff_client, job)
        assert not Contact.objects.exists()

    def test_a_file_without_an_email_column_fails_with_the_reason(self, staff_client):
        job = upload(staff_client, "name,company\nAnn,Acme\n")

        job.refresh_from_db()
        assert job.status == ImportJob.Status.FAILED
        assert "no 'email' column" in job.error
        assert "no &#x27;email&#x27; column" in job_page(staff_client, job).content.decode()

    def test_a_suppressed_email_is_rejected_in_the_preview(self, staff_client, suppression_key):
        Suppression.objects.create(email_hash=email_hash("gone@example.com"))
        job = upload(staff_client, "email\ngone@example.com\nkept@example.com\n")

        job.refresh_from_db()
        assert job.preview["lines"]["rejected"] == [[2, "gone@example.com", SUPPRESSED_REASON]]


@pytest.mark.django_db
class TestPermissions:
    def test_view_only_staff_cannot_import(self, client):
        client.force_login(make_staff("viewer", "view_contact"))

        assert client.get(UPLOAD_URL).status_code == 403
        changelist = client.get(reverse("admin:contacts_contact_changelist")).content.decode()
        assert "Import contacts" not in changelist
        assert "Export to CSV" in changelist

    def test_staff_who_may_add_and_change_see_the_link(self, staff_client):
        changelist = staff_client.get(reverse("admin:contacts_contact_changelist")).content.decode()
        assert UPLOAD_URL in changelist


@pytest.fixture
def in_background(monkeypatch):
    """Every file is large, batches are of 3 rows, and django-q2 runs each task at
    once in this process (its sync mode), through async_task as in production."""
    monkeypatch.setattr(import_jobs, "BACKGROUND_ABOVE_BYTES", 10)
    monkeypatch.setattr(import_jobs, "BATCH_SIZE", 3)
    monkeypatch.setattr(import_jobs, "CHUNK_BYTES", 16)
    monkeypatch.setattr(Conf, "SYNC", True)


def big_file(count):
    return "email,first_name\n" + "".join("person%03d@example.com,P%d\n" % (i, i) for i in range(count))


@pytest.mark.django_db
class TestLargeFile:
    def test_runs_through_django_q_in_slices_and_ends_with_the_same_counts(
        self, staff_client, in_background, monkeypatch
    ):
        text = big_file(20) + "broken,\n"
        job = upload(staff_client, text)
        job.refresh_from_db()
        assert job.in_background and job.status == ImportJob.Status.PREVIEWED
        assert job.preview["counts"]["created"] == 20 and job.preview["counts"]["rejected"] == 1
        # Chunks of 16 bytes: lines are cut across them and put back together.
        assert ImportChunk.objects.filter(job=job).count() == -(-len(text) // 16)
        queued, slices = [], []
        monkeypatch.setattr(import_jobs, "async_task", lambda *args, **kwargs: queued.append(args))
        # A budget spent at once: each task writes one batch and queues the next.
        monkeypatch.setattr(import_jobs, "budget_seconds", lambda: -1)

        confirm(staff_client, job)
        while queued:
            function, job_id = queued.pop()
            assert function == "contacts.import_jobs.import_task"
            slices.append(ImportJob.objects.get(pk=job_id).resume_line)
            import_jobs.import_task(job_id)

        job.refresh_from_db()
        assert job.status == ImportJob.Status.DONE
        # Each slice wrote one batch of 3 and queued the next, resuming after it.
        assert slices == [0, 5, 8, 11, 14, 17, 20]
        assert (job.counts["created"], job.counts["rejected"], job.counts["rows"]) == (20, 1, 21)
        assert Contact.objects.count() == 20
        assert job.rejected_lines == [[22, "email 'broken' is not a valid email address"]]
        assert LogEntry.objects.count() == 1

    def test_the_whole_flow_through_django_q(self, staff_client, in_background):
        job = upload(staff_client, big_file(7))

        confirm(staff_client, job)

        job.refresh_from_db()
        assert (job.status, job.counts["created"]) == (ImportJob.Status.DONE, 7)
        assert Contact.objects.count() == 7 and not ImportChunk.objects.exists()

    def test_progress_endpoint_and_page_while_it_runs(self, staff_client, monkeypatch):
        monkeypatch.setattr(import_jobs, "BACKGROUND_ABOVE_BYTES", 10)
        queued = []
        monkeypatch.setattr(import_jobs, "async_task", lambda *args, **kwargs: queued.append(args))
        job = upload(staff_client, big_file(10))
        assert queued == [("contacts.import_jobs.preview_task", job.pk)]
        url = reverse("admin:contacts_contact_import_progress", args=[job.pk])

        assert staff_client.get(url).json() == {
            "status": "previewing",
            "status_label": "Checking the file",
            "percent": 0,
            "counts": {},
            "finished": False,
        }
        page = job_page(staff_client, job).content.decode()
        assert 'id="import-progress-bar"' in page and url in page

        import_jobs.preview_task(job.pk)

        progress = staff_client.get(url).json()
        assert (progress["status"], progress["percent"], progress["finished"]) == ("previewed", 100, True)
        assert progress["counts"]["created"] == 10

    def test_a_cancelled_import_is_not_run_by_its_queued_task(self, staff_client, in_background, monkeypatch):
        monkeypatch.setattr(import_jobs, "async_task", lambda *args, **kwargs: None)
        job = upload(staff_client, big_file(5))
        import_jobs.preview_task(job.pk)
        import_jobs.cancel(job)

        import_jobs.import_task(job.pk)

        assert not Contact.objects.exists()


@pytest.mark.django_db
def test_reimporting_the_same_file_reports_unchanged_and_queues_nothing_complete(staff_client, make_sync):
    upload(staff_client, FILE)
    confirm(staff_client, ImportJob.objects.get())
    for contact in Contact.objects.all():
        make_sync(contact, "brevo", sync_status=SyncStatus.COMPLETE, processing_status=ProcessingStatus.COMPLETE)

    job = upload(staff_client, FILE, crms=["brevo"])
    job.refresh_from_db()
    assert job.preview["counts"]["unchanged"] == 3 and job.preview["counts"]["updated"] == 0
    confirm(staff_client, job)

    job.refresh_from_db()
    assert (job.counts["unchanged"], job.counts["queued"]) == (3, 0)
    assert set(ContactSync.objects.values_list("processing_status", flat=True)) == {ProcessingStatus.COMPLETE}
