"""django-q2 entry points, referenced by dotted path from the schedules."""

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from contacts.models import SyncAttempt

from . import rollups
from .attempt_totals import delete_attempts
from .conf import SyncPolicy, attempt_retention_days
from .models import WebhookEvent
from .registry import get_enabled_backend_class
from .resync import requeue_drifted
from .workers import run_workers

logger = logging.getLogger(__name__)

PRUNE_CHUNK = 10_000


def task_budget_seconds():
    """A tick must end well before django-q2's timeout kills it mid-batch."""
    timeout = settings.Q_CLUSTER.get("timeout") or 600
    return max(5, timeout - max(30, timeout // 10))


def sync_crm_task(crm):
    """One scheduled tick for one CRM: its claim loops, side by side, within the budget."""
    backend_class = get_enabled_backend_class(crm)
    policy = SyncPolicy.for_backend(backend_class)
    result = run_workers(backend_class, policy.max_instances, budget_seconds=task_budget_seconds())
    return {
        "crm": crm,
        "claimed": result.claimed,
        "accepted": result.accepted,
        "retry_scheduled": result.retry_scheduled,
        "failed": result.failed,
        "seconds": round(result.seconds, 2),
    }


def prune_sync_attempts():
    """Delete attempt history older than CRMSYNC_ATTEMPT_RETENTION_DAYS, in chunks
    so that no single statement holds locks for long."""
    cutoff = timezone.now() - timedelta(days=attempt_retention_days())
    deleted = 0
    while True:
        ids = list(SyncAttempt.objects.filter(attempted_at__lt=cutoff).values_list("pk", flat=True)[:PRUNE_CHUNK])
        if not ids:
            break
        # Counted as deleted in the same transaction: /metrics' totals stay put.
        deleted += delete_attempts(SyncAttempt.objects.filter(pk__in=ids))
    logger.info("pruned %d sync attempts older than %s", deleted, cutoff.isoformat())
    # The deletes took their attempts off the dashboard's quarter hours; folding
    # them in leaves no row for a quarter hour pruned whole.
    rollups.compact()
    # Webhook event ids only guard against a CRM delivering an event again, which
    # CRMs do within hours or days: the same retention is ample.
    events, _ = WebhookEvent.objects.filter(received_at__lt=cutoff).delete()
    if events:
        logger.info("pruned %d webhook event ids older than %s", events, cutoff.isoformat())
    return deleted


def requeue_drifted_task():
    """Queue again the Complete contacts whose payload changed without a signal."""
    started = time.monotonic()
    counts = requeue_drifted()
    logger.info(
        "requeued %d changed contacts (%s) in %.2f s",
        sum(counts.values()),
        " ".join("%s=%d" % item for item in counts.items()) or "no CRM syncs on change",
        time.monotonic() - started,
    )
    return counts
