"""The suppression list on the way in: the CSV import and upsert_contacts refuse an
erased person's email, line by line, and let everyone else in."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from contacts.importer import ContactRow, Result, import_contacts, upsert_contacts
from contacts.models import Contact, ContactSync, Suppression
from contacts.suppression import SUPPRESSED_REASON, email_hash, lift, suppressed

KEY = "suppression-key-for-tests-0123456789"

pytestmark = pytest.mark.django_db


@pytest.fixture
def suppress(settings):
    settings.CRMSYNC_SUPPRESSION_KEY = KEY

    def add(*emails):
        Suppression.objects.bulk_create([Suppression(email_hash=email_hash(email)) for email in emails])

    return add


def row(email, **values):
    return ContactRow(values={"email": email, **values}, attributes={})


def run_import(tmp_path, text, *args):
    path = tmp_path / "contacts.csv"
    path.write_text(text)
    out, err = StringIO(), StringIO()
    call_command("import_contacts", str(path), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


class TestUpsertContacts:
    def test_a_suppressed_row_is_rejected_with_the_reason_and_the_others_go_through(self, suppress):
        suppress("erased@example.com")

        batch = upsert_contacts([row("ann@example.com"), row("erased@example.com"), row("bob@example.com")])

        assert [(item.email, item.result) for item in batch.results] == [
            ("ann@example.com", Result.CREATED),
            ("erased@example.com", Result.REJECTED),
            ("bob@example.com", Result.CREATED),
        ]
        refused = batch.results[1]
        assert (refused.error, refused.field, refused.contact_id) == (SUPPRESSED_REASON, "email", None)
        assert set(Contact.objects.values_list("email", flat=True)) == {"ann@example.com", "bob@example.com"}

    def test_an_existing_contact_under_erasure_is_neither_updated_nor_queued(self, suppress, make_contact):
        # The suppression is added when an erasure starts, before the CRMs confirm
        # and the local contact goes.
        make_contact(email="erased@example.com", first_name="Old")
        suppress("erased@example.com")

        batch = upsert_contacts([row("erased@example.com", first_name="New")], ["brevo"])

        assert batch.results[0].result == Result.REJECTED
        assert batch.queued == 0
        assert Contact.objects.get().first_name == "Old"
        assert not ContactSync.objects.exists()

    def test_another_spelling_of_a_suppressed_mailbox_is_refused(self, suppress):
        suppress("erased@example.com")

        batch = upsert_contacts([row("erased@example.com")])
        assert batch.results[0].result == Result.REJECTED
        # The hash is of the canonical form, so any case of the address matches.
        assert suppressed(["Erased@EXAMPLE.com"]) == {"Erased@EXAMPLE.com"}

    def test_a_dry_run_reports_the_rejection_too(self, suppress):
        suppress("erased@example.com")

        batch = upsert_contacts([row("erased@example.com"), row("ann@example.com")], dry_run=True)

        assert [item.result for item in batch.results] == [Result.REJECTED, Result.CREATED]
        assert not Contact.objects.exists()

    def test_one_suppression_query_per_batch_whatever_its_size(self, suppress):
        suppress("erased@example.com")
        rows = [row("person%d@example.com" % i) for i in range(50)] + [row("erased@example.com")]

        with CaptureQueriesContext(connection) as queries:
            upsert_contacts(rows)

        table = Suppression._meta.db_table
        assert sum(table in query["sql"] for query in queries.captured_queries) == 1

    def test_a_lifted_suppression_lets_the_email_in_again(self, suppress):
        suppress("erased@example.com")
        assert upsert_contacts([row("erased@example.com")]).results[0].result == Result.REJECTED

        assert lift(["erased@example.com"]) == 1

        assert upsert_contacts([row("erased@example.com")]).results[0].result == Result.CREATED
        assert Contact.objects.filter(email="erased@example.com").exists()

    def test_without_a_key_nothing_is_suppressed(self, suppress, settings):
        suppress("erased@example.com")
        settings.CRMSYNC_SUPPRESSION_KEY = ""

        assert suppressed(["erased@example.com"]) == set()
        assert upsert_contacts([row("erased@example.com")]).results[0].result == Result.CREATED


class TestCSVImport:
    def test_the_command_reports_the_suppressed_line_and_imports_the_rest(self, suppress, tmp_path):
        suppress("erased@example.com")

        out, err = run_import(
            tmp_path,
            "email,first_name\nann@example.com,Ann\nERASED@example.com,Gone\nbob@example.com,Bob\n",
            "--select",
            "brevo",
        )

        assert err.splitlines() == ["line 3: rejected: %s" % SUPPRESSED_REASON]
        assert "Created 2, updated 0, unchanged 0, rejected 1 of 3 rows" in out
        assert set(Contact.objects.values_list("email", flat=True)) == {"ann@example.com", "bob@example.com"}
        assert ContactSync.objects.filter(crm="brevo").count() == 2

    def test_rejections_keep_their_lines_across_batches(self, suppress, tmp_path):
        suppress("erased1@example.com", "erased2@example.com")
        path = tmp_path / "contacts.csv"
        path.write_text(
            "email\n"
            "a@example.com\nerased1@example.com\nb@example.com\n"
            "c@example.com\nd@example.com\nerased2@example.com\n"
        )
        rejected = []

        with path.open("rb") as binary:
            report = import_contacts(binary, batch_size=2, on_reject=lambda line, reason: rejected.append(line))

        assert rejected == [3, 7]
        assert (report.created, report.rejected) == (4, 2)
