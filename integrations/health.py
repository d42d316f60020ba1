"""GET /healthz for load balancers and monitors: 200 when this deployment can sync,
503 when the database is unreachable or a scheduled sync has stopped running.

The body holds counts, ages and times only: never contact data, error texts or
settings values, so it needs no login.
"""

import logging
from datetime import timedelta

from django.db import DatabaseError
from django.db.models import Exists, OuterRef
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from django_q.models import Schedule

from contacts.models import ContactSync

from . import alerts
from .conf import SyncPolicy
from .exceptions import CRMConfigurationError
from .models import PAUSE_FIELDS, AlertIncident, AlertKind, CRMState
from .registry import enabled_backend_classes
from .schedules import sync_schedule_name

logger = logging.getLogger(__name__)

# A schedule that missed this many of its ticks has stopped, not just run late.
STALE_INTERVALS = 3


@never_cache
@require_safe
def healthz(request):
    now = timezone.now()
    classes = enabled_backend_classes()
    try:
        facts = _read_facts([cls.name for cls in classes], now)
    except DatabaseError as exc:
        # The exception text may name hosts and users: it goes to the log only.
        logger.warning("database unreachable: %s", exc)
        return _respond("unreachable", ["The database is unreachable."], {})
    crms = {cls.name: _crm_health(cls, facts, now) for cls in classes}
    _alert_on_schedules(crms, facts["states"], now)
    problems = [
        "The %s sync schedule has not run for %d of its intervals." % (cls.verbose_name, STALE_INTERVALS)
        for cls in classes
        if crms[cls.name]["schedule"] == "stale"
    ]
    return _respond("ok", problems, crms)


def _respond(database, problems, crms):
    healthy = database == "ok" and not problems
    body = {
        "status": "ok" if healthy else "unhealthy",
        "database": database,
        "problems": problems,
        "crms": crms,
    }
    return JsonResponse(body, status=200 if healthy else 503)


def _read_facts(names, now):
    """Four queries whatever the number of CRMs or rows."""
    return {
        "queues": _queue_stats(names, now),
        "states": {
            state.crm: state
            for state in CRMState.objects.filter(crm__in=names)
            .only("last_run_at", "last_success_at", *PAUSE_FIELDS)
            .annotate(stale_alert_open=Exists(_open_stale_alerts))
        },
        "schedules": {
            row["name"]: row
            for row in Schedule.objects.filter(name__in=[sync_schedule_name(n) for n in names])
            .order_by("pk")
            .values("name", "next_run", "minutes")
        },
    }


# Read with the CRM's state, so that /healthz, called every few seconds, asks
# nothing more while no schedule changes.
_open_stale_alerts = AlertIncident.objects.filter(
    crm=OuterRef("crm"), kind=AlertKind.STALE_SCHEDULE, resolved_at__isnull=True
)


def _alert_on_schedules(crms, states, now):
    """Staff are alerted once when a schedule stops, and once when it runs again
    (integrations.alerts): the web process notices, a dead scheduler cannot."""
    alerted = {crm for crm, state in states.items() if state.stale_alert_open}
    stale = {
        crm: states[crm].last_run_at if crm in states else None
        for crm, health in crms.items()
        if health["schedule"] == "stale" and crm not in alerted
    }
    recovered = [crm for crm in alerted if crm in crms and crms[crm]["schedule"] != "stale"]
    if stale or recovered:
        alerts.schedules_seen(stale, recovered, now, intervals=STALE_INTERVALS)


def _queue_stats(names, now):
    """{crm: {"depth", "oldest_due"}} from ContactSync.objects.queue_stats, which
    reads the two partial indexes alone: index-only scans that never touch the
    complete rows, however many there are."""
    return {
        crm: {"depth": queue["queued"] + queue["in_flight"], "oldest_due": queue["oldest_due_at"]}
        for crm, queue in ContactSync.objects.queue_stats(names, now).items()
    }


def _crm_health(backend_class, facts, now):
    name = backend_class.name
    queue = facts["queues"][name]
    state = facts["states"].get(name) or CRMState(crm=name)
    schedule = facts["schedules"].get(sync_schedule_name(name))
    oldest_due = queue["oldest_due"]
    breaker_open = state.open_breaker() is not None
    return {
        "queue_depth": queue["depth"],
        "oldest_due_seconds": _seconds_since(oldest_due, now) if oldest_due else None,
        "last_run_at": _isoformat(state.last_run_at),
        "last_success_at": _isoformat(state.last_success_at),
        # Paused by staff (until resumed) or by the CRM itself (until a time); the
        # circuit breaker has its own two keys.
        "paused": bool(state.staff_pause() or state.crm_pause(now)),
        # The circuit breaker: set while the CRM fails for everyone (breaker.Breaker).
        "failing_since": _isoformat(state.failing_since) if breaker_open else None,
        "next_probe_at": _isoformat(state.next_probe_at),
        "schedule": _schedule_health(backend_class, schedule, state.last_run_at, now),
    }


def _schedule_health(backend_class, schedule, last_run_at, now):
    """'none' without a Schedule (sync_crm run by hand or by cron is fine); 'stale'
    when the last run, or for a CRM that never ran its first planned one, is more
    than STALE_INTERVALS intervals ago; else 'ok'."""
    if schedule is None:
        return "none"
    since = last_run_at or schedule["next_run"]
    limit = timedelta(minutes=STALE_INTERVALS * _interval_minutes(backend_class, schedule))
    return "stale" if since and now - since > limit else "ok"


def _interval_minutes(backend_class, schedule):
    try:
        return SyncPolicy.for_backend(backend_class).interval_minutes
    except CRMConfigurationError:
        # Invalid settings (a system check names them): django-q2 still runs the
        # Schedule at its stored interval, and every run fails until they are fixed.
        return schedule["minutes"] or 1


def _seconds_since(moment, now):
    return max(0, int((now - moment).total_seconds()))


def _isoformat(moment):
    return moment.isoformat() if moment else None
