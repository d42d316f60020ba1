"""Brevo's bulk import end to end against the sandbox over real sockets: the
engine, the import, its report and the read-back; and, on PostgreSQL, a worker
that dies once the import's id is recorded, whose rows the next worker finishes
by following the same import."""

from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from contacts import selection
from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus
from integrations import imports
from integrations.backends.brevo import BrevoBackend
from integrations.engine import SyncEngine
from integrations.workers import run_workers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

VALID, INVALID, PHONE_TAKEN = 2940, 50, 10
TAKEN_PHONE = "+33612345678"


@pytest.fixture
def brevo_import(sandbox, settings):
    """Brevo on the sandbox at its real rate limits, with quick imports and polls."""
    settings.BREVO_LIST_ID = "2"
    settings.BREVO_IMPORT_POLL_SECONDS = 0.2
    sandbox.settings("brevo", import_delay_seconds=0.3, import_delay_per_1000_rows=0.1)
    return sandbox


def make_contacts():
    """Valid contacts; addresses Brevo refuses though crmsync takes them (a domain
    without a dot); and contacts whose phone another Brevo contact already has (it
    is synced first, alone: by the single path)."""
    holder = Contact.objects.create(email="holder@example.com", phone=TAKEN_PHONE)
    selection.select(Contact.objects.filter(pk=holder.pk), ["brevo"])
    assert SyncEngine(BrevoBackend()).run().accepted == 1
    contacts = [Contact(email="v%d@example.com" % i, first_name="V%d" % i) for i in range(VALID)]
    contacts += [Contact(email="bad%d@localhost" % i) for i in range(INVALID)]
    contacts += [Contact(email="p%d@example.com" % i, phone=TAKEN_PHONE) for i in range(PHONE_TAKEN)]
    Contact.objects.bulk_create(contacts)
    selection.select(Contact.objects.exclude(pk=holder.pk), ["brevo"])


def assert_every_contact_settled(sandbox):
    held = sandbox.contacts("brevo")
    emails = Counter(contact["email"] for contact in held)
    assert not [email for email, count in emails.items() if count > 1], "each email once in Brevo"
    ids = {contact["email"]: str(contact["id"]) for contact in held}
    rows = list(ContactSync.objects.select_related("contact"))
    complete = [r for r in rows if r.contact.email.startswith("v")]
    assert {(r.sync_status, r.processing_status) for r in complete} == {
        (SyncStatus.COMPLETE, ProcessingStatus.COMPLETE)
    }
    assert all(r.external_id == ids[r.contact.email] for r in complete), "each row has its Brevo id"
    assert all(2 in c["listIds"] for c in held if c["email"].startswith("v")), "list membership applied"
    refused = [r for r in rows if r.contact.email.startswith(("bad", "p"))]
    assert {(r.sync_status, r.processing_status) for r in refused} == {(SyncStatus.ERROR, ProcessingStatus.ERROR)}
    invalid = {r.last_error.split(" left it out")[1] for r in refused if r.contact.email.startswith("bad")}
    assert invalid == {", as an invalid email address (its invalid_emails report): Invalid email address."}
    taken = {r.last_error.split(" left it out")[1] for r in refused if r.contact.email.startswith("p")}
    assert taken == {
        ", as an SMS number another Brevo contact has (its duplicate_phone_id report): "
        "SMS is already associated with another Contact."
    }
    assert not ContactSync.objects.exclude(crm_process_id="").exists(), "the record cleared the process ids"


def test_thousands_of_contacts_end_complete_or_in_error_with_brevos_words(brevo_import):
    make_contacts()
    result = SyncEngine(BrevoBackend()).run()
    assert result.claimed == VALID + INVALID + PHONE_TAKEN
    assert_every_contact_settled(brevo_import)
    log = brevo_import.requests("brevo")
    imported = [entry for entry in log if entry["path"] == "/v3/contacts/import"]
    assert [entry["status"] for entry in imported] == [202], "one import for the whole batch"
    pages = [entry for entry in log if entry["path"] == "/v3/contacts" and entry["method"] == "GET"]
    assert len(pages) == 3, "a read-back page per 1,000 contacts"
    assert len([entry for entry in log if entry["method"] == "POST" and entry["path"] == "/v3/contacts"]) == 1


class Killed(BaseException):
    """The worker dies: nothing of the engine catches it."""


def test_a_worker_killed_after_recording_the_import_is_followed_not_imported_again(
    on_postgres, brevo_import, monkeypatch
):
    make_contacts()
    record = imports.ImportLedger.record

    def record_then_die(ledger, process_id, keys):
        record(ledger, process_id, keys)
        raise Killed()

    monkeypatch.setattr(imports.ImportLedger, "record", record_then_die)
    with pytest.raises(Killed):
        SyncEngine(BrevoBackend()).run()
    monkeypatch.setattr(imports.ImportLedger, "record", record)
    rows = ContactSync.objects.exclude(contact__email="holder@example.com")
    assert set(rows.values_list("processing_status", flat=True)) == {ProcessingStatus.PROCESSING}
    process_ids = set(rows.values_list("crm_process_id", flat=True))
    assert len(process_ids) == 1 and "" not in process_ids, "the id was recorded on every row"
    # Its lease runs out, as it does when no one renews it.
    rows.update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    result = run_workers(BrevoBackend, workers=2)
    assert result.claimed == VALID + INVALID + PHONE_TAKEN
    log = brevo_import.requests("brevo")
    assert len([entry for entry in log if entry["path"] == "/v3/contacts/import"]) == 1, "imported once"
    polls = {entry["path"] for entry in log if entry["path"].startswith("/v3/processes/")}
    assert polls == {"/v3/processes/%s" % process_ids.pop()}, "the second worker followed the same import"
    singles = [e for e in log if e["method"] == "POST" and e["path"] == "/v3/contacts"]
    assert len(singles) == 1, "only the phone's holder went one by one"
    assert_every_contact_settled(brevo_import)
