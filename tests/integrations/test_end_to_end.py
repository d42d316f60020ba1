"""Staff select contacts in the admin, sync_crm pushes them to the sandbox over real
sockets, and both sides agree on what arrived."""

from io import StringIO

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import call_command
from django.urls import reverse

from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
CRMS = ["brevo", "hubspot"]


def people(count):
    Contact.objects.bulk_create(
        Contact(
            email="person%d@example.com" % i,
            first_name="Zoë%d" % i,
            last_name="Lee",
            phone="+44 20 7946 %04d" % i,
            company="Acme %d" % (i % 3),
            website="https://acme%d.example.com" % (i % 3),
        )
        for i in range(count)
    )
    return Contact.objects.order_by("pk")


def queue_in_admin(client, contacts, crms):
    ids = [str(pk) for pk in contacts.values_list("pk", flat=True)[:100]]
    response = client.post(
        reverse("admin:contacts_contact_changelist"),
        {
            "action": "queue_for_crm",
            "index": 0,
            ACTION_CHECKBOX_NAME: ids,
            "select_across": "1",
            "post": "yes",
            "crms": crms,
        },
    )
    assert response.status_code == 302


def sync(*args):
    out, err = StringIO(), StringIO()
    call_command("sync_crm", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def by_email(sandbox_contacts, crm):
    if crm == "brevo":
        return {c["email"]: c for c in sandbox_contacts}
    return {c["properties"]["email"]: c for c in sandbox_contacts}


def assert_all_complete_and_linked(sandbox, crm, count):
    rows = ContactSync.objects.filter(crm=crm).select_related("contact")
    assert rows.count() == count
    remote = by_email(sandbox.contacts(crm), crm)
    assert len(remote) == count and len(sandbox.contacts(crm)) == count, "each email once"
    for row in rows:
        assert (row.sync_status, row.processing_status) == (SyncStatus.COMPLETE, ProcessingStatus.COMPLETE), (
            row.last_error
        )
        assert row.external_id == str(remote[row.contact.email]["id"])


def test_staff_selection_reaches_both_crms_with_the_right_fields(sandbox, staff_client):
    contacts = people(30)
    call_command("crm_setup", stdout=StringIO())
    queue_in_admin(staff_client, contacts, CRMS)

    _out, err = sync()

    assert "SANDBOX MODE" in err
    for crm in CRMS:
        assert_all_complete_and_linked(sandbox, crm, 30)
    first = contacts.first()
    brevo = by_email(sandbox.contacts("brevo"), "brevo")[first.email]
    assert brevo["attributes"]["FIRSTNAME"] == first.first_name
    assert brevo["attributes"]["COMPANY"] == first.company
    assert brevo["attributes"]["WEBSITE"] == first.website
    hubspot = by_email(sandbox.contacts("hubspot"), "hubspot")[first.email]["properties"]
    assert (hubspot["firstname"], hubspot["lastname"], hubspot["company"]) == (first.first_name, "Lee", first.company)
    upserts = [r for r in sandbox.requests("hubspot") if r["path"].endswith("/batch/upsert")]
    assert len(upserts) == 1, "30 contacts in one batch upsert"


def test_a_second_sync_creates_no_duplicates(sandbox, staff_client):
    contacts = people(12)
    queue_in_admin(staff_client, contacts, CRMS)
    sync()
    ids_before = dict(ContactSync.objects.values_list("pk", "external_id"))
    Contact.objects.update(company="Renamed Ltd")
    queue_in_admin(staff_client, contacts, CRMS)

    sync()

    for crm in CRMS:
        assert_all_complete_and_linked(sandbox, crm, 12)
    assert dict(ContactSync.objects.values_list("pk", "external_id")) == ids_before
    hubspot = sandbox.contacts("hubspot")
    assert {c["properties"]["company"] for c in hubspot} == {"Renamed Ltd"}


def spend_hubspot_window(sandbox, requests_in_window):
    """Use up HubSpot's window as another app sharing the token would, unseen by crmsync."""
    import requests

    for _ in range(requests_in_window):
        requests.get(
            sandbox.url + "/hubspot/crm/v3/properties/contacts",
            headers={"Authorization": "Bearer sandbox-hubspot-token"},
            timeout=5,
        )


def test_injected_errors_timeouts_and_rate_limits_end_with_every_contact_complete(sandbox, settings):
    settings.BREVO_SYNC_RETRY_DELAY_MINUTES = settings.HUBSPOT_SYNC_RETRY_DELAY_MINUTES = 0
    settings.BREVO_SYNC_MAX_RETRIES = settings.HUBSPOT_SYNC_MAX_RETRIES = 20
    settings.BREVO_TIMEOUT_SECONDS = settings.HUBSPOT_TIMEOUT_SECONDS = 1
    # Push faster than the sandbox allows, so its 429s do Brevo's pacing (a per-second
    # window: its headers hold crmsync only for a longer one). HubSpot's quota headers
    # keep crmsync clear of its 429s, so another client spends its window first.
    settings.BREVO_REQUESTS_PER_SECOND = settings.HUBSPOT_REQUESTS_PER_SECOND = 100
    settings.HUBSPOT_SYNC_SCHEDULER_BATCH_SIZE = 2
    # Three failed requests in a row open the circuit breaker; probe soon after.
    settings.CRMSYNC_BREAKER_PROBE_SECONDS, settings.CRMSYNC_BREAKER_PROBE_MAX_SECONDS = 0.5, 1
    from contacts import selection

    selection.select(people(40), CRMS)
    for crm in CRMS:
        sandbox.faults(
            crm, rate_limit={"requests": 4, "seconds": 1} if crm == "brevo" else {"requests": 8, "seconds": 2}
        )
        if crm == "hubspot":
            spend_hubspot_window(sandbox, 8)
        sandbox.faults(crm, error_rate=0.25, timeout_rate=0.05, timeout_seconds=1.5)

        sync("--crm", crm, "--until-empty")

        assert_all_complete_and_linked(sandbox, crm, 40)
        statuses = [r["status"] for r in sandbox.requests(crm)]
        assert 429 in statuses and any(s >= 500 for s in statuses), statuses


def test_mautic_gets_each_contact_once_with_its_fields(sandbox, staff_client):
    contacts = people(25)
    queue_in_admin(staff_client, contacts, ["mautic"])
    sync("--crm", "mautic")
    queue_in_admin(staff_client, contacts, ["mautic"])
    sync("--crm", "mautic")

    stored = {c["fields"]["all"]["email"]: c for c in sandbox.contacts("mautic")}
    assert len(sandbox.contacts("mautic")) == 25, "the second sync updated, it did not duplicate"
    for row in ContactSync.objects.filter(crm="mautic").select_related("contact"):
        assert (row.sync_status, row.external_id) == (SyncStatus.COMPLETE, str(stored[row.contact.email]["id"]))
        assert stored[row.contact.email]["fields"]["all"]["firstname"] == row.contact.first_name


@pytest.mark.django_db(transaction=True)
def test_n8n_receives_every_contact_and_its_workflow_calls_back_once(on_postgres, sandbox, live_server, settings):
    """Needs PostgreSQL: the callbacks write from the live server's thread while the
    test runs, which SQLite's in-memory test database cannot take."""
    import time

    settings.N8N_INBOUND_SECRET = "inbound-e2e-secret"
    sandbox.settings(
        "n8n",
        callback_url=live_server.url + "/integrations/n8n/enrichment/",
        callback_secret="inbound-e2e-secret",
        callback_delay_seconds=0.1,
        callback_duplicate_rate=1.0,
    )
    contacts = people(6)
    from contacts import selection

    selection.select(contacts, ["n8n"])
    sync("--crm", "n8n")

    assert sorted(item["email"] for item in sandbox.contacts("n8n")) == sorted(contacts.values_list("email", flat=True))
    from integrations.models import Enrichment

    for _ in range(50):
        if Enrichment.objects.count() >= 6:
            break
        time.sleep(0.1)
    time.sleep(0.3)  # the duplicates arrive too
    assert Enrichment.objects.count() == 6, "each duplicate callback changed nothing"
    assert [c.enrichment.get("sources") for c in Contact.objects.all()] == [["sandbox"]] * 6


def test_an_inactive_n8n_workflow_pauses_n8n_and_spends_no_attempt(sandbox):
    from contacts import selection
    from integrations.models import CRMState

    sandbox.settings("n8n", active=False)
    selection.select(people(3), ["n8n"])
    out, _ = sync("--crm", "n8n")

    assert "n8n is paused until" in out and "The n8n workflow is not active" in out
    assert set(ContactSync.objects.values_list("processing_status", "attempts")) == {(ProcessingStatus.QUEUED, 0)}
    assert "workflow is not active" in CRMState.objects.get(crm="n8n").pause_reason


def test_mautic_over_oauth2_fetches_a_token_and_refreshes_it_after_a_401(sandbox, settings):
    import requests

    from contacts import selection
    from crm_sandbox import mautic as mautic_sandbox
    from integrations.backends.mautic import MauticBackend

    MauticBackend._tokens.clear()
    # As a real instance would be configured, not sandbox mode.
    settings.CRMSYNC_SANDBOX_URL = ""
    settings.MAUTIC_BASE_URL = sandbox.url + "/mautic"
    settings.MAUTIC_CLIENT_ID = mautic_sandbox.CLIENT_ID
    settings.MAUTIC_CLIENT_SECRET = mautic_sandbox.CLIENT_SECRET
    contacts = people(4)
    selection.select(contacts.filter(pk__in=list(contacts.values_list("pk", flat=True)[:2])), ["mautic"])
    sync("--crm", "mautic")
    assert [(r["path"], r["status"]) for r in sandbox.requests("mautic")] == [
        ("/oauth/v2/token", 200),
        ("/api/contacts/batch/new", 201),
    ]
    # The instance forgets every token it issued (and its request log); the
    # cached token now gets a 401.
    requests.post(sandbox.url + "/_sandbox/reset", timeout=5)
    # Only contacts never synced: the two synced ones have ids the reset instance
    # no longer has, and would each end Not in the CRM.
    selection.select(contacts.exclude(pk__in=list(contacts.values_list("pk", flat=True)[:2])), ["mautic"])
    sync("--crm", "mautic")

    assert [(r["path"], r["status"]) for r in sandbox.requests("mautic")] == [
        ("/api/contacts/batch/new", 401),
        ("/oauth/v2/token", 200),
        ("/api/contacts/batch/new", 201),
    ]
    assert ContactSync.objects.filter(crm="mautic", sync_status=SyncStatus.COMPLETE).count() == 4
