"""HubSpot's contact life over real sockets: crmsync's engine against the sandbox's
HubSpot, and the sandbox's signed webhook calling crmsync's live server."""

import time
from io import StringIO

import pytest
import requests
from django.core.management import call_command

from contacts import erasure, selection
from contacts.models import (
    Contact,
    ContactSync,
    CRMEvent,
    ErasureOutcome,
    ErasureStatus,
    ProcessingStatus,
    SyncStatus,
)
from crm_sandbox.hubspot import ACCESS_TOKEN

SECRET = "hubspot-client-secret-for-e2e-tests-01"


@pytest.fixture
def hubspot_sandbox(sandbox, settings):
    """Only HubSpot points at the sandbox, as a real account would be configured,
    so an erasure waits for HubSpot alone."""
    settings.CRMSYNC_SANDBOX_URL = ""
    settings.HUBSPOT_API_BASE_URL = sandbox.url + "/hubspot"
    settings.HUBSPOT_API_KEY = ACCESS_TOKEN
    return sandbox


def api(sandbox, method, path, **kwargs):
    headers = {"Authorization": "Bearer " + ACCESS_TOKEN}
    return requests.request(
        method, sandbox.url + "/hubspot/crm/v3/objects/contacts" + path, headers=headers, timeout=5, **kwargs
    )


def sync():
    call_command("sync_crm", "--crm", "hubspot", "--until-empty", stdout=StringIO(), stderr=StringIO())


def select(*contacts):
    selection.select(Contact.objects.filter(pk__in=[c.pk for c in contacts]), ["hubspot"])


def synced(email="ann@example.com", **fields):
    contact = Contact.objects.create(email=email, **fields)
    select(contact)
    sync()
    row = ContactSync.objects.get(contact=contact, crm="hubspot")
    assert row.processing_status == ProcessingStatus.COMPLETE and row.external_id
    return contact, row


def records(sandbox):
    return {r["id"]: r["properties"] for r in sandbox.contacts("hubspot")}


def wait_for(row, status):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row.refresh_from_db()
        if row.processing_status == status:
            return
        time.sleep(0.1)


def point_webhook_at(sandbox, settings, live_server):
    settings.HUBSPOT_WEBHOOK_SECRET = SECRET
    url = live_server.url + "/integrations/hubspot/webhook/"
    sandbox.settings("hubspot", webhook_url=url, webhook_secret=SECRET)


@pytest.mark.django_db
def test_an_email_change_updates_the_same_record(hubspot_sandbox):
    contact, row = synced(first_name="Ann")
    contact.email, contact.first_name = "ann.lee@example.com", "Annie"
    contact.save()
    select(contact)
    sync()

    stored = records(hubspot_sandbox)
    assert list(stored) == [row.external_id], "one record, the same id"
    properties = stored[row.external_id]
    assert (properties["email"], properties["firstname"]) == ("ann.lee@example.com", "Annie")
    row.refresh_from_db()
    assert row.processing_status == ProcessingStatus.COMPLETE


@pytest.mark.django_db
def test_an_email_another_record_has_is_an_error_naming_it(hubspot_sandbox):
    contact, row = synced()
    _, other = synced(email="bob@example.com")
    # HubSpot's record of Bob gets the address Ann is about to move to.
    api(hubspot_sandbox, "PATCH", "/" + other.external_id, json={"properties": {"email": "ann.new@example.com"}})
    contact.email = "ann.new@example.com"
    contact.save()
    select(contact)
    sync()

    row.refresh_from_db()
    assert row.processing_status == ProcessingStatus.ERROR
    assert "another HubSpot contact (record %s)" % other.external_id in row.last_error
    assert records(hubspot_sandbox)[row.external_id]["email"] == "ann@example.com", "nothing changed"
    assert len(records(hubspot_sandbox)) == 2, "no record created"


@pytest.mark.django_db
def test_a_record_deleted_in_hubspot_is_not_in_the_crm_and_not_created_again(hubspot_sandbox):
    contact, row = synced()
    assert api(hubspot_sandbox, "DELETE", "/" + row.external_id).status_code == 204
    contact.first_name = "Changed"
    contact.save()
    select(contact)
    sync()

    row.refresh_from_db()
    assert row.processing_status == ProcessingStatus.NOT_IN_CRM
    assert "HubSpot has no contact" in row.last_error
    assert records(hubspot_sandbox) == {}


@pytest.mark.django_db
def test_update_only_updates_known_contacts_and_creates_none(hubspot_sandbox, settings):
    settings.HUBSPOT_SYNC_MODE = "update_only"
    known = Contact.objects.create(email="known@example.com", first_name="K")
    unknown = Contact.objects.create(email="unknown@example.com")
    created = api(hubspot_sandbox, "POST", "", json={"properties": {"email": "known@example.com"}}).json()
    select(known, unknown)
    sync()

    rows = {row.contact_id: row for row in ContactSync.objects.filter(crm="hubspot")}
    assert rows[known.pk].external_id == created["id"]
    stored = records(hubspot_sandbox)
    assert list(stored) == [created["id"]] and stored[created["id"]]["firstname"] == "K"
    assert rows[unknown.pk].processing_status == ProcessingStatus.NOT_IN_CRM


@pytest.mark.django_db
def test_create_only_leaves_a_contact_hubspot_has_as_it_is(hubspot_sandbox, settings):
    settings.HUBSPOT_SYNC_MODE = "create_only"
    there = Contact.objects.create(email="there@example.com", first_name="New name")
    new = Contact.objects.create(email="new@example.com", first_name="N")
    created = api(hubspot_sandbox, "POST", "", json={"properties": {"email": "there@example.com", "firstname": "Old"}})
    select(there, new)
    sync()

    rows = {row.contact_id: row for row in ContactSync.objects.filter(crm="hubspot")}
    stored = records(hubspot_sandbox)
    assert stored[created.json()["id"]]["firstname"] == "Old"
    assert rows[there.pk].external_id == created.json()["id"]
    assert stored[rows[new.pk].external_id]["firstname"] == "N"
    assert len(stored) == 2


@pytest.mark.django_db
def test_a_skipped_contact_is_archived_when_deletes_are_mirrored(hubspot_sandbox, settings):
    settings.HUBSPOT_MIRROR_DELETES = True
    contact, row = synced()
    selection.skip(Contact.objects.filter(pk=contact.pk), ["hubspot"])
    sync()

    row.refresh_from_db()
    assert (row.processing_status, row.external_id) == (ProcessingStatus.REMOVED, "")
    assert records(hubspot_sandbox) == {}
    deletes = [r for r in hubspot_sandbox.requests("hubspot") if r["method"] == "DELETE"]
    assert len(deletes) == 1


@pytest.mark.django_db
def test_an_erasure_erases_the_contact_in_hubspot(hubspot_sandbox, settings):
    settings.CRMSYNC_SUPPRESSION_KEY = "suppression-key-for-hubspot-e2e-0123456789"
    contact, _row = synced()
    [started] = erasure.start([contact.email], requested_by="dpo", via="admin")
    sync()

    started.refresh_from_db()
    assert started.status == ErasureStatus.COMPLETE
    assert started.results.get(crm="hubspot").outcome == ErasureOutcome.ERASED
    assert records(hubspot_sandbox) == {}
    assert not Contact.objects.filter(pk=contact.pk).exists()
    gdpr_calls = [r for r in hubspot_sandbox.requests("hubspot") if r["path"].endswith("/gdpr-delete")]
    assert len(gdpr_calls) == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_delete_in_hubspot_reaches_crmsync_by_webhook(hubspot_sandbox, settings, live_server):
    point_webhook_at(hubspot_sandbox, settings, live_server)
    _contact, row = synced()
    assert api(hubspot_sandbox, "DELETE", "/" + row.external_id).status_code == 204

    wait_for(row, ProcessingStatus.NOT_IN_CRM)
    assert (row.processing_status, row.external_id, row.crm_event) == (ProcessingStatus.NOT_IN_CRM, "", "deleted")
    assert row.sync_status == SyncStatus.COMPLETE


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_after_a_merge_in_hubspot_a_sync_updates_the_surviving_record(hubspot_sandbox, settings, live_server):
    point_webhook_at(hubspot_sandbox, settings, live_server)
    survivor = api(hubspot_sandbox, "POST", "", json={"properties": {"email": "ann.work@example.com"}}).json()["id"]
    contact, row = synced(first_name="Ann")
    merge = {"primaryObjectId": survivor, "objectIdToMerge": row.external_id}
    assert api(hubspot_sandbox, "POST", "/merge", json=merge).status_code == 200

    deadline = time.monotonic() + 10
    while row.external_id != survivor and time.monotonic() < deadline:
        time.sleep(0.1)
        row.refresh_from_db()
    assert (row.external_id, row.crm_event) == (survivor, CRMEvent.MERGED)
    contact.first_name = "Annie"
    contact.save()
    select(contact)
    sync()

    row.refresh_from_db()
    assert row.processing_status == ProcessingStatus.COMPLETE and row.external_id == survivor
    stored = records(hubspot_sandbox)
    assert list(stored) == [survivor]
    assert (stored[survivor]["email"], stored[survivor]["firstname"]) == ("ann@example.com", "Annie")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_stale_webhook_call_is_refused_and_changes_nothing(hubspot_sandbox, settings, live_server):
    point_webhook_at(hubspot_sandbox, settings, live_server)
    _contact, row = synced()
    stale = int(time.time() * 1000) - 6 * 60 * 1000
    answer = requests.post(
        hubspot_sandbox.url + "/_sandbox/hubspot/events",
        json={"kind": "deleted", "id": row.external_id, "timestamp_ms": stale},
        timeout=10,
    ).json()

    assert answer["target_status"] == 401
    row.refresh_from_db()
    assert row.processing_status == ProcessingStatus.COMPLETE and row.external_id
