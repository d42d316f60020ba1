"""The template proven with a CRM of a few dozen lines (tests/integrations/tinycrm.py),
synced through the real engine against TinyCRM's API mocked with `responses`."""

import json

import pytest

from contacts import selection
from contacts.models import AttemptOutcome, Contact, ContactSync, ProcessingStatus, SyncAttempt, SyncStatus
from integrations.engine import SyncEngine
from integrations.models import CRMState
from integrations.ratelimit import share_pace

from .tinycrm import TinyCRMBackend

pytestmark = pytest.mark.django_db

BATCH = "https://api.tinycrm.test/v1/contacts/batch"
KEY = "tinycrm-key-0123456789abcdef"


@pytest.fixture
def tinycrm(settings):
    settings.CRMSYNC_EXTRA_BACKENDS = ["tests.integrations.tinycrm.TinyCRMBackend"]
    settings.TINYCRM_API_KEY = KEY
    settings.TINYCRM_REQUESTS_PER_SECOND = 1000  # no pacing waits here


def queue(count, bad=()):
    people = Contact.objects.bulk_create(
        Contact(email="p%d@example.com" % i, first_name="P%d" % i) for i in range(count)
    )
    selection.select(Contact.objects.filter(pk__in=[p.pk for p in people]), ["tinycrm"])
    return people


def tinycrm_answers(refuse=()):
    """A TinyCRM that refuses any batch holding an email in `refuse`."""

    def answer(request):
        sent = json.loads(request.body)["contacts"]
        bad = [person["email"] for person in sent if person["email"] in refuse]
        if bad:
            return 400, {}, json.dumps({"error": "%s is on the blocklist" % bad[0]})
        people = [{"email": person["email"], "id": "t-%s" % person["email"]} for person in sent]
        return 200, {}, json.dumps({"contacts": people})

    return answer


def sync():
    return SyncEngine(share_pace(TinyCRMBackend())).run()


def test_contacts_sync_ten_per_request_and_end_complete_with_their_ids(tinycrm, crm_api):
    queue(25)
    crm_api.add_callback("POST", BATCH, callback=tinycrm_answers())
    result = sync()
    assert result.accepted == 25 and len(crm_api.calls) == 3
    rows = ContactSync.objects.filter(crm="tinycrm")
    assert set(rows.values_list("processing_status", flat=True)) == {ProcessingStatus.COMPLETE}
    assert {row.external_id for row in rows.select_related("contact")} == {"t-p%d@example.com" % i for i in range(25)}
    assert crm_api.calls[0].request.headers["Authorization"] == "Token " + KEY


def test_one_bad_contact_is_found_by_halves_and_only_it_fails(tinycrm, crm_api):
    queue(10)
    crm_api.add_callback("POST", BATCH, callback=tinycrm_answers(refuse={"p6@example.com"}))
    sync()
    failed = ContactSync.objects.get(sync_status=SyncStatus.ERROR)
    assert failed.contact.email == "p6@example.com"
    assert failed.last_error == "TinyCRM refused it: p6@example.com is on the blocklist"
    assert ContactSync.objects.filter(sync_status=SyncStatus.COMPLETE).count() == 9


def test_rejected_credentials_pause_tinycrm_and_fail_the_batch_without_the_key(tinycrm, crm_api):
    queue(3)
    crm_api.post(BATCH, status=401, json={"error": "bad token %s" % KEY})
    sync()
    rows = ContactSync.objects.all()
    assert {row.sync_status for row in rows} == {SyncStatus.ERROR}
    assert all("TINYCRM_API_KEY" in row.last_error and KEY not in row.last_error for row in rows)
    assert CRMState.objects.get(crm="tinycrm").paused_until is not None


def test_a_rate_limit_puts_the_batch_back_without_spending_attempts(tinycrm, crm_api):
    queue(3)
    crm_api.post(BATCH, status=429, headers={"Retry-After": "30"})
    result = sync()
    assert result.waited == 3
    assert set(ContactSync.objects.values_list("attempts", "processing_status")) == {(0, ProcessingStatus.QUEUED)}
    assert set(SyncAttempt.objects.values_list("outcome", flat=True)) == {AttemptOutcome.WAITED}


def test_server_errors_schedule_a_retry(tinycrm, crm_api):
    queue(2)
    crm_api.post(BATCH, status=503)
    result = sync()
    assert result.retry_scheduled == 2
    assert all("TinyCRM answered HTTP 503" in row.last_error for row in ContactSync.objects.all())
