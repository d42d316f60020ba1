"""A CRM that keeps a request going without ever going quiet, over real sockets:
it sends its status and headers and then its body a byte at a time (slow_body),
or its status line and then its headers a byte at a time (slow_headers). No read
ever waits a whole <CRM>_TIMEOUT_SECONDS, so only a total deadline ends the
request; it counts as a timeout and the contact is tried again later. Also a CRM
that closes every connection unanswered (down)."""

import signal
from contextlib import contextmanager

import pytest
from django.utils import timezone

from contacts import selection
from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus
from integrations.backends.base import OutcomeKind
from integrations.engine import SyncEngine
from integrations.registry import get_backend_class

from .conftest import make_item

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

TIMEOUT_SECONDS = 2
# Every answer is longer than 30 bytes: trickled, it takes more than 15 s.
SECONDS_PER_BYTE = 0.5
# Far past the deadline, far short of the trickle: a push still going then hangs.
GUARD_SECONDS = 12
VERBOSE_NAMES = {"brevo": "Brevo", "hubspot": "HubSpot", "mautic": "Mautic", "n8n": "n8n"}
API_PATHS = {
    "brevo": "/v3/contacts",
    "hubspot": "/crm/v3/objects/contacts/batch/upsert",
    "mautic": "/api/contacts/batch/new",
    "n8n": "/webhook/crmsync",
}


class StillWaiting(Exception):
    pass


@contextmanager
def gives_up_in_time():
    """Fails the test, rather than hang it, when the code inside is still waiting
    after GUARD_SECONDS (SIGALRM interrupts the blocked read on the main thread)."""

    def interrupt(signum, frame):
        raise StillWaiting("still waiting for the CRM after %d s" % GUARD_SECONDS)

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, GUARD_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def short_timeouts(settings):
    for crm in VERBOSE_NAMES:
        setattr(settings, "%s_TIMEOUT_SECONDS" % crm.upper(), TIMEOUT_SECONDS)


def api_requests(sandbox, crm):
    return [r for r in sandbox.requests(crm) if r["path"] == API_PATHS[crm]]


def people(count):
    Contact.objects.bulk_create(Contact(email="slow%d@example.com" % i, first_name="Slow%d" % i) for i in range(count))
    return Contact.objects.order_by("pk")


@pytest.mark.parametrize("fault", ["slow_body", "slow_headers"])
@pytest.mark.parametrize("crm", sorted(VERBOSE_NAMES))
def test_a_trickled_answer_is_a_timeout_and_the_contact_is_retried(crm, fault, sandbox, short_timeouts):
    [contact] = people(1)
    backend = get_backend_class(crm)()
    sandbox.faults(crm, **{fault: SECONDS_PER_BYTE})

    with gives_up_in_time():
        [outcome] = backend.push([make_item(contact, backend)])

    assert (outcome.kind, outcome.message) == (
        OutcomeKind.RETRY,
        "%s did not answer within %d s." % (VERBOSE_NAMES[crm], TIMEOUT_SECONDS),
    )
    assert len(api_requests(sandbox, crm)) == 1, "one request, given up on; not sent again meanwhile"


@pytest.mark.parametrize(
    "crm, contacts, received",
    [
        ("hubspot", 3, 3),  # upserts by email: the retry updated what the first push created
        ("n8n", 3, 6),  # n8n had taken each call before its answer was cut off
    ],
)
def test_the_engine_retries_a_contact_a_slow_crm_kept_waiting_and_syncs_it_once_it_answers(
    crm, contacts, received, sandbox, short_timeouts
):
    selection.select(people(contacts), [crm])
    sandbox.faults(crm, slow_body=SECONDS_PER_BYTE)

    with gives_up_in_time():
        SyncEngine(get_backend_class(crm)()).run()

    rows = ContactSync.objects.filter(crm=crm)
    message = "%s did not answer within %d s." % (VERBOSE_NAMES[crm], TIMEOUT_SECONDS)
    assert set(rows.values_list("processing_status", "attempts", "last_error")) == {
        (ProcessingStatus.QUEUED, 1, message)
    }
    assert all(row.next_attempt_at > timezone.now() for row in rows), "tried again later, not in a loop"
    sent = len(api_requests(sandbox, crm))

    sandbox.faults(crm, slow_body=0)
    rows.update(next_attempt_at=timezone.now())
    with gives_up_in_time():
        SyncEngine(get_backend_class(crm)()).run()

    assert set(rows.values_list("sync_status", "attempts")) == {(SyncStatus.COMPLETE, 2)}
    assert len(api_requests(sandbox, crm)) == 2 * sent, "each request once more, and no more"
    assert len(sandbox.contacts(crm)) == received


@pytest.mark.parametrize("crm", sorted(VERBOSE_NAMES))
def test_a_crm_that_closes_connections_unanswered_is_retried_later(crm, sandbox, short_timeouts):
    [contact] = people(1)
    backend = get_backend_class(crm)()
    sandbox.faults(crm, down=True)

    with gives_up_in_time():
        [outcome] = backend.push([make_item(contact, backend)])

    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.message.startswith("Could not connect to %s" % VERBOSE_NAMES[crm]), outcome.message
    assert sandbox.contacts(crm) == [], "the CRM never saw it"
