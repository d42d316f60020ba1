"""One django-q2 Schedule per enabled CRM, plus the daily prune and, while a CRM
syncs on change, the sweep for contacts changed without signals.

ensure_schedules() is idempotent and safe to run from several machines at once:
it runs under a lock, removes duplicates, updates changed intervals and deletes
the schedules of CRMs that are no longer configured.
"""

from django.db import connections, transaction
from django_q.models import Schedule

from .conf import SyncPolicy, drift_check_interval_minutes
from .registry import enabled_backend_classes
from .resync import crms_syncing_on_change

PREFIX = "crmsync:"
PRUNE_NAME = PREFIX + "prune-attempts"
DRIFT_NAME = PREFIX + "requeue-drifted"
# Any constant will do; it only has to be the same on every machine.
ADVISORY_LOCK_KEY = 0x63726D73


def sync_schedule_name(crm):
    return PREFIX + crm


def wanted_schedules():
    wanted = {
        PRUNE_NAME: {
            "func": "integrations.tasks.prune_sync_attempts",
            "args": None,
            "schedule_type": Schedule.DAILY,
            "minutes": None,
        }
    }
    for backend_class in enabled_backend_classes():
        wanted[sync_schedule_name(backend_class.name)] = {
            "func": "integrations.tasks.sync_crm_task",
            "args": repr(backend_class.name),
            "schedule_type": Schedule.MINUTES,
            "minutes": SyncPolicy.for_backend(backend_class).interval_minutes,
        }
    if crms_syncing_on_change():
        wanted[DRIFT_NAME] = {
            "func": "integrations.tasks.requeue_drifted_task",
            "args": None,
            "schedule_type": Schedule.MINUTES,
            "minutes": drift_check_interval_minutes(),
        }
    return wanted


def ensure_schedules(using="default"):
    """Make the crmsync schedules match the configuration; return what changed
    as {"created": [...], "updated": [...], "removed": [...], "unchanged": [...]}."""
    report = {"created": [], "updated": [], "removed": [], "unchanged": []}
    wanted = wanted_schedules()
    with transaction.atomic(using=using):
        _lock(using)
        seen = set()
        for schedule in Schedule.objects.using(using).filter(name__startswith=PREFIX).order_by("pk"):
            spec = wanted.get(schedule.name)
            if spec is None or schedule.name in seen:
                schedule.delete()
                report["removed"].append(schedule.name)
                continue
            seen.add(schedule.name)
            changed = {key: value for key, value in spec.items() if getattr(schedule, key) != value}
            if changed:
                Schedule.objects.using(using).filter(pk=schedule.pk).update(**changed)
            report["updated" if changed else "unchanged"].append(schedule.name)
        for name, spec in wanted.items():
            if name not in seen:
                Schedule.objects.using(using).create(name=name, repeats=-1, **spec)
                report["created"].append(name)
    return report


def _lock(using):
    """Serialise concurrent runs. SQLite's write lock already does (IMMEDIATE)."""
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])
