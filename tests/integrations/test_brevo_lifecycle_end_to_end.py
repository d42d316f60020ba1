"""Brevo's contact life over real sockets: crmsync's engine against the sandbox's
Brevo, and the sandbox's webhook calling crmsync's live server."""

import time
from io import StringIO

import pytest
import requests
from django.core.management import call_command

from contacts import erasure, selection
from contacts.models import (
    Contact,
    ContactSync,
    ErasureOutcome,
    ErasureStatus,
    ProcessingStatus,
    SyncStatus,
)
from crm_sandbox.brevo import API_KEY

SECRET = "brevo-webhook-secret-for-e2e-tests-01"


@pytest.fixture
def brevo_sandbox(sandbox, settings):
    """Only Brevo points at the sandbox, as a real account would be configured,
    so an erasure waits for Brevo alone."""
    settings.CRMSYNC_SANDBOX_URL = ""
    settings.BREVO_API_BASE_URL = sandbox.url + "/brevo/v3"
    settings.BREVO_API_KEY = API_KEY
    # One request at a time: a second request within a contact's turn (an
    # update_only lookup, the id of an email's holder) takes its paced slot from
    # the database, which a worker thread cannot write while this test's
    # transaction is open on SQLite.
    settings.BREVO_CONCURRENCY = 1
    return sandbox


def sync():
    call_command("sync_crm", "--crm", "brevo", "--until-empty", stdout=StringIO(), stderr=StringIO())


def synced(email="ann@example.com", **fields):
    contact = Contact.objects.create(email=email, **fields)
    selection.select(Contact.objects.filter(pk=contact.pk), ["brevo"])
    sync()
    row = ContactSync.objects.get(contact=contact, crm="brevo")
    assert row.processing_status == ProcessingStatus.COMPLETE and row.external_id
    return contact, row


def delete_in_brevo(sandbox, contact_id):
    response = requests.delete(
        "%s/brevo/v3/contacts/%s" % (sandbox.url, contact_id),
        params={"identifierType": "contact_id"},
        headers={"api-key": API_KEY},
        timeout=5,
    )
    assert response.status_code == 204


@pytest.mark.django_db
def test_an_email_change_updates_the_same_record(brevo_sandbox):
    contact, row = synced(first_name="Ann")
    contact.email, contact.first_name = "ann.lee@example.com", "Annie"
    contact.save()
    selection.select(Contact.objects.filter(pk=contact.pk), ["brevo"])
    sync()

    [record] = brevo_sandbox.contacts("brevo")
    assert (str(record["id"]), record["email"], record["attributes"]["FIRSTNAME"]) == (
        row.external_id,
        "ann.lee@example.com",
        "Annie",
    )
    row.refresh_from_db()
    assert row.processing_status == ProcessingStatus.COMPLETE


@pytest.mark.django_db
def test_an_email_another_record_has_is_an_error_naming_it(brevo_sandbox):
    contact, row = synced()
    _, other = synced(email="bob@example.com")
    Contact.objects.filter(pk=contact.pk).update(email="bob2@example.com")
    row.refresh_from_db()
    brevo_sandbox.settings("brevo", duplicate_code="invalid_parameter")
    requests.put(
        "%s/brevo/v3/contacts/%s" % (brevo_sandbox.url, other.external_id),
        params={"identifierType": "contact_id"},
        json={"attributes": {"EMAIL": "bob2@example.com"}},
        headers={"api-key": API_KEY},
        timeout=5,
    ).raise_for_status()  # Brevo's record of Bob now has the address Ann moves to
    selection.select(Contact.objects.filter(pk=contact.pk), ["brevo"])
    sync()

    row.refresh_from_db()
    assert row.processing_status == ProcessingStatus.ERROR
    assert "another Brevo contact, %s, already has it" % other.external_id in row.last_error
    assert len(brevo_sandbox.contacts("brevo")) == 2, "no record created"


@pytest.mark.django_db
def test_a_record_deleted_in_brevo_is_not_in_the_crm_and_not_created_again(brevo_sandbox):
    contact, row = synced()
    delete_in_brevo(brevo_sandbox, row.external_id)
    contact.first_name = "Changed"
    contact.save()
    selection.select(Contact.objects.filter(pk=contact.pk), ["brevo"])
    sync()

    row.refresh_from_db()
    assert row.processing_status == ProcessingStatus.NOT_IN_CRM
    assert "Brevo has no contact" in row.last_error
    assert brevo_sandbox.contacts("brevo") == []


@pytest.mark.django_db
def test_update_only_against_the_sandbox(brevo_sandbox, settings):
    settings.BREVO_SYNC_MODE = "update_only"
    known = Contact.objects.create(email="known@example.com", first_name="K")
    unknown = Contact.objects.create(email="unknown@example.com")
    requests.post(
        brevo_sandbox.url + "/brevo/v3/contacts",
        json={"email": "known@example.com"},
        headers={"api-key": API_KEY},
        timeout=5,
    ).raise_for_status()
    selection.select(Contact.objects.filter(pk__in=[known.pk, unknown.pk]), ["brevo"])
    sync()

    rows = {row.contact_id: row for row in ContactSync.objects.filter(crm="brevo")}
    [record] = brevo_sandbox.contacts("brevo")
    assert rows[known.pk].external_id == str(record["id"]) and record["attributes"]["FIRSTNAME"] == "K"
    assert rows[unknown.pk].processing_status == ProcessingStatus.NOT_IN_CRM


@pytest.mark.django_db
def test_an_erasure_erases_the_contact_in_brevo(brevo_sandbox, settings):
    settings.CRMSYNC_SUPPRESSION_KEY = "suppression-key-for-brevo-e2e-0123456789"
    contact, _row = synced()
    [started] = erasure.start([contact.email], requested_by="dpo", via="admin")
    sync()

    started.refresh_from_db()
    assert started.status == ErasureStatus.COMPLETE
    assert started.results.get(crm="brevo").outcome == ErasureOutcome.ERASED
    assert brevo_sandbox.contacts("brevo") == []
    assert not Contact.objects.filter(pk=contact.pk).exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_delete_in_brevo_reaches_crmsync_by_webhook(brevo_sandbox, settings, live_server):
    settings.BREVO_WEBHOOK_SECRET = SECRET
    brevo_sandbox.settings("brevo", webhook_url=live_server.url + "/integrations/brevo/webhook/", webhook_secret=SECRET)
    _contact, row = synced()
    delete_in_brevo(brevo_sandbox, row.external_id)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row.refresh_from_db()
        if row.processing_status == ProcessingStatus.NOT_IN_CRM:
            break
        time.sleep(0.1)
    assert (row.processing_status, row.external_id, row.crm_event) == (ProcessingStatus.NOT_IN_CRM, "", "deleted")
    assert row.sync_status == SyncStatus.COMPLETE
