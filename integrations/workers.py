"""Running the engine: claim loops side by side (run_workers), and draining a CRM's
queue, waiting out back-offs and pauses and riding out lost database connections
(drain). The scheduled task and sync_crm both come through here."""

import logging
import threading
import time

from django.db import InterfaceError, OperationalError, connections
from django.utils import timezone

from contacts.models import ContactSync

from .engine import RunResult, SyncEngine
from .mappings import payload_or_why, use_mapping

logger = logging.getLogger(__name__)

# The longest single sleep while draining: a row queued meanwhile waits no longer.
MAX_WAIT_SECONDS = 10
# Lost database connections in a row that drain(until_empty=True) rides out before giving up.
MAX_CONNECTION_LOSSES = 3


def run_workers(backend_class, workers=1, *, engine_options=None, **run_options):
    """Run `workers` claim loops for one CRM side by side and add up their results.

    Each loop has its own thread, backend and database connection; SKIP LOCKED
    (or the compare-and-set claim on SQLite) keeps them from taking the same rows.
    """
    engine_options = engine_options or {}
    if workers <= 1:
        return SyncEngine(backend_class(), **engine_options).run(**run_options)
    results, errors = [], []

    def loop():
        try:
            results.append(SyncEngine(backend_class(), **engine_options).run(**run_options))
        except Exception as exc:
            logger.exception("crm=%s a claim loop failed", backend_class.name)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=loop, name="crmsync-%s-%d" % (backend_class.name, i)) for i in range(workers)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    total = RunResult(backend_class.name)
    for result in results:
        total.add(result)
    total.seconds = time.monotonic() - started
    return total


def drain(
    backend_class,
    workers=1,
    *,
    batch_size=None,
    limit=None,
    until_empty=False,
    on_batch=None,
    on_connection_lost=None,
    on_wait=None,
):
    """Run `workers` claim loops for one CRM until `limit` contacts are claimed or
    nothing is due; with `until_empty`, go on until nothing is queued, sleeping
    until the next row falls due or the CRM's pause ends, and carrying on over a
    fresh connection after a lost one (up to MAX_CONNECTION_LOSSES in a row).

    Callbacks, for the one showing progress: on_batch(RunResult) after each batch,
    from every worker thread; on_connection_lost(exc) before reconnecting;
    on_wait(seconds) before sleeping. Returns the RunResult of the whole drain."""
    crm = backend_class.name
    total = RunResult(crm)
    started = time.monotonic()
    losses = 0
    while True:
        remaining = None if limit is None else limit - total.claimed
        if remaining is not None and remaining <= 0:
            break
        try:
            result = run_workers(
                backend_class, workers, batch_size=batch_size, max_contacts=remaining, on_batch=on_batch
            )
        except (InterfaceError, OperationalError) as exc:
            losses += 1
            if not until_empty or losses > MAX_CONNECTION_LOSSES:
                raise
            result = _reconnect(crm, exc, on_connection_lost)
        else:
            losses = 0
        total.add(result)
        # A staff pause lasts until someone resumes it: waiting would never end.
        if result.paused_by or not until_empty or not wait_for_due(crm, result.paused_until, on_wait):
            break
    total.seconds = time.monotonic() - started
    return total


def _reconnect(crm, exc, on_connection_lost):
    """A run stopped on a lost database connection: the transaction it was in
    rolled back, and rows it had claimed but not recorded are claimed again when
    their lease runs out. Carry on over a fresh connection."""
    connections.close_all()
    if on_connection_lost:
        on_connection_lost(exc)
    return RunResult(crm)


def wait_for_due(crm, paused_until=None, on_wait=None):
    """Sleep until the next row of `crm` falls due, and its pause (if any) is over,
    at most MAX_WAIT_SECONDS; False when nothing is left queued or in flight."""
    next_due = ContactSync.objects.for_crm(crm).next_due_at()
    if next_due is None:
        return False
    # Rows that fell due while the CRM is paused wait for the pause to end.
    wait = (max(next_due, paused_until or next_due) - timezone.now()).total_seconds()
    if wait > 0:
        if on_wait:
            on_wait(wait)
        time.sleep(min(wait, MAX_WAIT_SECONDS))
    return True


def due_count(crm):
    """How many rows of `crm` a worker could claim now."""
    return ContactSync.objects.for_crm(crm).due(timezone.now()).count()


def preview(backend_class, count):
    """What the next `count` due contacts would be sent: [(contact, payload)], where
    an invalid contact's payload is {"invalid": why}. Sends and changes nothing."""
    rows = (
        ContactSync.objects.for_crm(backend_class.name)
        .due(timezone.now())
        .select_related("contact")
        .order_by("next_attempt_at", "pk")[:count]
    )
    backend = use_mapping(backend_class())
    try:
        return [(row.contact, payload_or_why(backend, row.contact)) for row in rows]
    finally:
        backend.close()
