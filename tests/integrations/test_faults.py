"""Every CRM against a faulty sandbox over real sockets: injected 5xx, timeouts and
bursts of 429 end with every contact Complete, and a CRM that stays down ends in
Error until staff retry it."""

import json
import math
import time
from collections import defaultdict
from io import StringIO

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import call_command
from django.urls import reverse

from contacts import selection
from contacts.models import AttemptOutcome, Contact, ContactSync, ProcessingStatus, SyncAttempt, SyncStatus
from crm_sandbox import brevo, hubspot, mautic, n8n

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

CONTACTS = 40
ERROR_RATE, TIMEOUT_RATE = 0.20, 0.05
MAX_RETRIES = 10
# After 3 requests, then after every 12 more, the CRM answers 429 to everything for 1 s.
BURST = {"after": 3, "seconds": 1, "every": 12}
SECRETS = (brevo.API_KEY, hubspot.ACCESS_TOKEN, mautic.USERNAME, mautic.PASSWORD, n8n.WEBHOOK_SECRET)


class CRM:
    """What the fault tests need to know about one CRM."""

    def __init__(self, name, verbose_name, batch_size, concurrency, email_of, faults=None):
        self.name, self.verbose_name = name, verbose_name
        # Contacts per request: 1 for a CRM without a batch API, else the batch size.
        self.batch_size, self.per_request = batch_size, batch_size or 1
        # Requests crmsync may have in flight at once for this CRM.
        self.concurrency = concurrency
        self.email_of = email_of
        # Faults that keep the sandbox's own rate limit out of the way, so that
        # every 429 is an injected one.
        self.faults = faults or {}


CRMS = {
    crm.name: crm
    for crm in (
        CRM("brevo", "Brevo", None, 4, lambda c: c["email"], {"rate_limit": {"requests": 100, "seconds": 1}}),
        # A one-second window: without Retry-After, crmsync waits a window's length.
        CRM(
            "hubspot",
            "HubSpot",
            4,
            1,
            lambda c: c["properties"]["email"],
            {"rate_limit": {"requests": 100, "seconds": 1}},
        ),
        # Mautic with its optional rate limiter on, so its 429 names a real limit.
        CRM(
            "mautic",
            "Mautic",
            4,
            1,
            lambda c: c["fields"]["all"]["email"],
            {"rate_limit": {"requests": 10_000, "seconds": 3600}},
        ),
        CRM("n8n", "n8n", None, 4, lambda c: c["email"]),
    )
}


@pytest.fixture
def crm_settings(settings):
    def apply(crm, max_retries=MAX_RETRIES):
        prefix = crm.name.upper()
        values = {
            "SYNC_MAX_RETRIES": max_retries,
            "SYNC_RETRY_DELAY_MINUTES": 0,
            "TIMEOUT_SECONDS": 1,
            "REQUESTS_PER_SECOND": 50,
        }
        if crm.batch_size:
            values["SYNC_SCHEDULER_BATCH_SIZE"] = crm.batch_size
        for name, value in values.items():
            setattr(settings, "%s_%s" % (prefix, name), value)
        # Three failed requests in a row open the circuit breaker; probe soon after.
        settings.CRMSYNC_BREAKER_PROBE_SECONDS, settings.CRMSYNC_BREAKER_PROBE_MAX_SECONDS = 0.5, 1
        return crm

    return apply


def people(count):
    Contact.objects.bulk_create(
        Contact(email="person%d@example.com" % i, first_name="Zoë%d" % i, last_name="Lee", company="Acme")
        for i in range(count)
    )
    return Contact.objects.order_by("pk")


def sync(crm):
    out, err = StringIO(), StringIO()
    call_command("sync_crm", "--crm", crm, "--until-empty", stdout=out, stderr=err)
    return out.getvalue()


def emails_in_crm(sandbox, crm):
    return sorted(crm.email_of(c) for c in sandbox.contacts(crm.name))


def settled_log(sandbox, crm, failed_requests, wait_seconds=10):
    """The sandbox's request log once the requests crmsync gave up on (timeouts) are
    in it: the sandbox logs one only when it answers, after crmsync stopped waiting."""
    deadline = time.monotonic() + wait_seconds
    while True:
        log = sandbox.requests(crm.name)
        if sum(r["status"] >= 500 for r in log) >= failed_requests or time.monotonic() > deadline:
            return log
        time.sleep(0.1)


def bursts_started(sandbox, crm):
    import requests

    return requests.get("%s/_sandbox/%s/faults" % (sandbox.url, crm.name), timeout=5).json()["rate_limit_burst"][
        "bursts"
    ]


def attempts_by_contact(crm):
    history = defaultdict(list)
    for row in SyncAttempt.objects.filter(crm=crm.name).values(
        "contact_id", "outcome", "http_status", "error", "attempted_at"
    ):
        history[row["contact_id"]].append(row)
    return history


def released(attempt):
    """A rate-limit wait: back in the queue with the attempt given back."""
    return attempt["outcome"] == AttemptOutcome.WAITED and attempt["http_status"] == 429


def failed(attempt):
    return attempt["outcome"] == AttemptOutcome.RETRY


def met_a_server_failure(attempt):
    """A 5xx or a timeout: an attempt spent, or, in a batch the circuit breaker judged
    CRM-wide (three failed requests in a row), a wait for the CRM that spent none."""
    return failed(attempt) or (attempt["outcome"] == AttemptOutcome.WAITED and attempt["http_status"] != 429)


@pytest.mark.parametrize("name", CRMS)
def test_5xx_timeouts_and_429_bursts_end_complete_without_spending_attempts_on_rate_limits(name, sandbox, crm_settings):
    crm = crm_settings(CRMS[name])
    selection.select(people(CONTACTS), [crm.name])
    sandbox.faults(crm.name, **crm.faults)
    sandbox.faults(
        crm.name, error_rate=ERROR_RATE, timeout_rate=TIMEOUT_RATE, timeout_seconds=1.5, rate_limit_burst=BURST
    )

    sync(crm.name)

    # Every contact Complete, within the configured attempts, each in the CRM once.
    rows = list(ContactSync.objects.filter(crm=crm.name))
    assert len(rows) == CONTACTS
    assert {(r.sync_status, r.processing_status) for r in rows} == {(SyncStatus.COMPLETE, ProcessingStatus.COMPLETE)}
    assert max(r.attempts for r in rows) <= MAX_RETRIES + 1
    assert emails_in_crm(sandbox, crm) == sorted(Contact.objects.values_list("email", flat=True))

    # No attempt spent on a rate-limit wait: a contact's attempts are its one accepted
    # push plus its pushes that met a 5xx or a timeout; its 429s cost nothing.
    history = attempts_by_contact(crm)
    for row in rows:
        attempts = history[row.contact_id]
        assert [a["outcome"] for a in attempts].count(AttemptOutcome.ACCEPTED) == 1
        assert row.attempts == 1 + sum(map(failed, attempts)), attempts
        for attempt in filter(failed, attempts):
            assert attempt["http_status"] in (None, 500, 502, 503, 504), attempt
            assert "answered HTTP 5" in attempt["error"] or "did not answer within 1 s" in attempt["error"], attempt
    all_attempts = [a for attempts in history.values() for a in attempts]
    failed_attempts = list(filter(met_a_server_failure, all_attempts))
    # Each failed request fails every contact it carried, all recorded at one moment.
    if crm.batch_size:
        failed_requests = len({a["attempted_at"] for a in failed_attempts})
    else:
        failed_requests = len(failed_attempts)

    # The sandbox saw the same: each 5xx or timeout it answered cost one attempt per
    # contact in that request, and it refused requests only in its injected bursts.
    log = settled_log(sandbox, crm, failed_requests)
    statuses = [r["status"] for r in log]
    server_errors, rate_limited = sum(s >= 500 for s in statuses), statuses.count(429)
    bursts = bursts_started(sandbox, crm)
    assert server_errors == failed_requests
    assert len(failed_attempts) <= crm.per_request * server_errors
    assert server_errors >= 1 and rate_limited >= 1 and bursts >= 1, statuses
    # A 429 is sent again within its batch (integrations.backends.base.request); a
    # contact whose retries ran out goes back to the queue: never an attempt spent.
    assert all(released(a) for a in all_attempts if a["http_status"] == 429), "a 429 spent no attempt"
    assert set(statuses) <= {200, 201, 429, 500, 502, 503, 504}, statuses

    # The bound on requests. R requests carry every contact once when nothing fails;
    # each fails with p = error_rate + timeout_rate, so about R / (1 - p) are answered
    # with anything but 429: allow twice that. crmsync waits out each burst of 429s
    # after its first refusal, so a burst refuses at most one request per connection
    # crmsync has open (c): requests <= 2 * R / (1 - p) + c * bursts.
    needed = math.ceil(CONTACTS / crm.per_request)
    answered_bound = 2 * needed / (1 - ERROR_RATE - TIMEOUT_RATE)
    seen = "%d requests: %d answered (bound %.0f), %d 5xx or timeouts, %d 429s in %d bursts (bound %d)" % (
        len(statuses),
        len(statuses) - rate_limited,
        answered_bound,
        server_errors,
        rate_limited,
        bursts,
        crm.concurrency * bursts,
    )
    assert len(statuses) - rate_limited <= answered_bound, seen
    assert rate_limited <= crm.concurrency * bursts, seen
    assert len(statuses) <= answered_bound + crm.concurrency * bursts, seen


def retry_failed_in_admin(client, contacts):
    ids = [str(pk) for pk in contacts.values_list("pk", flat=True)]
    response = client.post(
        reverse("admin:contacts_contact_changelist"),
        {"action": "retry_failed", "index": 0, ACTION_CHECKBOX_NAME: ids},
        follow=True,
    )
    assert response.status_code == 200
    return [str(m) for m in response.context["messages"]]


@pytest.mark.parametrize(
    "name, fault, last_error",
    [
        ("brevo", {"error_rate": 1.0}, "Brevo answered HTTP 50"),
        ("hubspot", {"error_rate": 1.0}, "HubSpot answered HTTP 50"),
        ("hubspot", {"timeout_rate": 1.0, "timeout_seconds": 1.5}, "HubSpot did not answer within 1 s."),
        ("mautic", {"error_rate": 1.0}, "Mautic answered HTTP 50"),
        ("n8n", {"error_rate": 1.0}, "n8n answered HTTP 50"),
    ],
)
def test_without_breaker_or_give_up_window_a_crm_down_past_all_retries_ends_in_error_and_retry_failed_brings_contacts_home(  # noqa: E501
    name, fault, last_error, sandbox, crm_settings, staff_client, settings
):
    # The old rule alone (attempts only): the breaker and the give-up window, which
    # keep an outage from costing anything (test_change_and_outage.py), are off.
    settings.CRMSYNC_BREAKER_FAILURES = 10_000
    settings.CRMSYNC_GIVE_UP_AFTER_HOURS = 0
    crm = crm_settings(CRMS[name], max_retries=2)
    contacts = people(6)
    selection.select(contacts, [crm.name])
    sandbox.faults(crm.name, **fault)

    sync(crm.name)

    rows = ContactSync.objects.filter(crm=crm.name)
    assert {(r.sync_status, r.processing_status, r.attempts) for r in rows} == {
        (SyncStatus.ERROR, ProcessingStatus.ERROR, 3)
    }
    for row in rows:
        assert row.last_error.startswith("Gave up after 3 attempts over "), row.last_error
        assert ". Last error: %s" % last_error in row.last_error, row.last_error
        assert "will retry" not in row.last_error, "nothing will: the row is in Error"
    recorded = json.dumps(
        list(rows.values_list("last_error", flat=True)) + list(SyncAttempt.objects.values_list("error", flat=True))
    )
    assert not [secret for secret in SECRETS if secret in recorded]
    assert sandbox.contacts(crm.name) == []

    sandbox.faults(crm.name, error_rate=0, timeout_rate=0)
    assert retry_failed_in_admin(staff_client, contacts) == ["6 failed syncs queued again."]
    assert set(rows.values_list("sync_status", "processing_status", "attempts", "last_error")) == {
        (SyncStatus.SELECTED, ProcessingStatus.QUEUED, 0, "")
    }
    sync(crm.name)

    assert set(rows.values_list("sync_status", "processing_status", "attempts")) == {
        (SyncStatus.COMPLETE, ProcessingStatus.COMPLETE, 1)
    }
    assert emails_in_crm(sandbox, crm) == sorted(contacts.values_list("email", flat=True)), "each email once"
