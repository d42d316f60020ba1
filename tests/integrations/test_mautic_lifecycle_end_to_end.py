"""A contact's whole life in Mautic over real sockets, against the sandbox set up
as a real instance would be (MAUTIC_BASE_URL and basic credentials, so Mautic is
the only CRM configured): an email change, an id deleted there, an erasure, and
Mautic's delete webhook."""

import time

import pytest
import requests

from contacts import erasure, selection
from contacts.models import Contact, ContactSync, ErasureOutcome, ErasureStatus, ProcessingStatus
from crm_sandbox import mautic as mautic_sandbox
from integrations import engine

SECRET = "mautic-webhook-secret-end-to-end"


@pytest.fixture
def mautic(sandbox, settings):
    settings.CRMSYNC_SANDBOX_URL = ""
    for name, value in mautic_sandbox.crm_settings(sandbox.url).items():
        setattr(settings, "MAUTIC_" + name, value)
    return sandbox


def sync():
    return engine.run("mautic")


def synced(email, **fields):
    contact = Contact.objects.create(email=email, **fields)
    selection.select(Contact.objects.filter(pk=contact.pk), ["mautic"])
    sync()
    return contact, ContactSync.objects.get(contact=contact, crm="mautic")


def delete_in_mautic(sandbox, contact_id):
    answer = requests.delete(
        "%s/mautic/api/contacts/%s/delete" % (sandbox.url, contact_id),
        auth=(mautic_sandbox.USERNAME, mautic_sandbox.PASSWORD),
        timeout=5,
    )
    assert answer.status_code == 200


@pytest.mark.django_db
def test_an_email_change_updates_the_same_record(mautic):
    contact, row = synced("old@example.com", first_name="Ann")
    contact.email = "new@example.com"
    contact.save()
    selection.select(Contact.objects.filter(pk=contact.pk), ["mautic"])
    sync()

    [record] = mautic.contacts("mautic")
    assert (str(record["id"]), record["fields"]["all"]["email"]) == (row.external_id, "new@example.com")
    assert ContactSync.objects.get(pk=row.pk).external_id == row.external_id


@pytest.mark.django_db
def test_an_id_deleted_in_mautic_is_not_in_the_crm_and_not_created_again(mautic):
    contact, row = synced("a@example.com")
    delete_in_mautic(mautic, row.external_id)
    selection.select(Contact.objects.filter(pk=contact.pk), ["mautic"])
    sync()

    row.refresh_from_db()
    assert row.processing_status == ProcessingStatus.NOT_IN_CRM
    assert "Mautic has no contact" in row.last_error
    assert mautic.contacts("mautic") == []


@pytest.mark.django_db
def test_an_email_another_contact_has_is_refused_and_names_it(mautic):
    contact, row = synced("mine@example.com")
    # A contact made in Mautic itself (a form, an import) has the new email.
    other = requests.post(
        mautic.url + "/mautic/api/contacts/new",
        json={"email": "taken@example.com"},
        auth=(mautic_sandbox.USERNAME, mautic_sandbox.PASSWORD),
        timeout=5,
    ).json()["contact"]["id"]
    contact.email = "taken@example.com"
    contact.save()
    selection.select(Contact.objects.filter(pk=contact.pk), ["mautic"])
    sync()

    row.refresh_from_db()
    assert row.processing_status == ProcessingStatus.ERROR
    assert "contact %s already has it, so contact %s was not changed" % (other, row.external_id) in row.last_error
    emails = sorted(c["fields"]["all"]["email"] for c in mautic.contacts("mautic"))
    assert emails == ["mine@example.com", "taken@example.com"], "nothing created, nothing overwritten"


@pytest.mark.django_db
def test_an_erasure_deletes_the_contact_in_mautic_and_completes(mautic, settings):
    settings.CRMSYNC_SUPPRESSION_KEY = "suppression-key-for-mautic-erasure"
    synced("erase-me@example.com", first_name="Eve")
    [request] = erasure.start(["erase-me@example.com"], requested_by="dpo", via="test")
    sync()

    assert mautic.contacts("mautic") == []
    request.refresh_from_db()
    assert request.status == ErasureStatus.COMPLETE
    assert request.results.get(crm="mautic").outcome == ErasureOutcome.ERASED


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_delete_in_mautic_reaches_crmsync_by_webhook(on_postgres, mautic, live_server, settings):
    """Needs PostgreSQL: the webhook writes from the live server's thread."""
    settings.MAUTIC_WEBHOOK_SECRET = SECRET
    mautic.settings("mautic", webhook_url=live_server.url + "/integrations/mautic/webhook/", webhook_secret=SECRET)
    _, row = synced("a@example.com")

    delete_in_mautic(mautic, row.external_id)

    for _ in range(50):
        row.refresh_from_db()
        if row.processing_status == ProcessingStatus.NOT_IN_CRM:
            break
        time.sleep(0.1)
    assert (row.processing_status, row.external_id) == (ProcessingStatus.NOT_IN_CRM, "")
    assert row.crm_event == "deleted"
