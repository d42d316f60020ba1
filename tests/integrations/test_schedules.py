import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connections
from django.utils import timezone
from django_q.models import Schedule, Task
from django_q.tasks import async_task

from contacts.models import Contact, ContactSync, ProcessingStatus, SyncAttempt
from integrations import tasks
from integrations.exceptions import CRMConfigurationError
from integrations.schedules import DRIFT_NAME, PRUNE_NAME, ensure_schedules

pytestmark = pytest.mark.django_db


def crmsync_schedules():
    return {s.name: s for s in Schedule.objects.filter(name__startswith="crmsync:")}


class TestSchedules:
    def test_one_schedule_per_enabled_crm_the_prune_and_the_drift_sweep_however_often_it_runs(self, scripted_crm):
        for _ in range(3):
            ensure_schedules()
        schedules = crmsync_schedules()
        assert set(schedules) == {"crmsync:scripted", PRUNE_NAME, DRIFT_NAME}
        assert Schedule.objects.filter(name="crmsync:scripted").count() == 1
        sync = schedules["crmsync:scripted"]
        assert (sync.func, sync.args, sync.schedule_type, sync.minutes) == (
            "integrations.tasks.sync_crm_task",
            "'scripted'",
            Schedule.MINUTES,
            5,
        )
        assert schedules[PRUNE_NAME].schedule_type == Schedule.DAILY
        drift = schedules[DRIFT_NAME]
        assert (drift.func, drift.args, drift.schedule_type, drift.minutes) == (
            "integrations.tasks.requeue_drifted_task",
            None,
            Schedule.MINUTES,
            60,
        )

    def test_a_changed_interval_updates_the_schedule(self, scripted_crm, settings):
        ensure_schedules()
        settings.SCRIPTED_SYNC_SCHEDULER_INTERVAL_MINUTES = 15
        report = ensure_schedules()
        assert report["updated"] == ["crmsync:scripted"]
        assert Schedule.objects.get(name="crmsync:scripted").minutes == 15

    def test_a_disabled_crm_loses_its_schedule(self, scripted_crm, settings):
        ensure_schedules()
        del settings.SCRIPTED_API_KEY
        report = ensure_schedules()
        assert set(report["removed"]) == {"crmsync:scripted", DRIFT_NAME}
        assert set(crmsync_schedules()) == {PRUNE_NAME}

    def test_the_drift_sweep_follows_sync_on_change(self, scripted_crm, settings):
        ensure_schedules()
        settings.CRMSYNC_DRIFT_CHECK_INTERVAL_MINUTES = "15"
        assert ensure_schedules()["updated"] == [DRIFT_NAME]
        assert Schedule.objects.get(name=DRIFT_NAME).minutes == 15
        settings.SCRIPTED_SYNC_ON_CHANGE = False
        assert ensure_schedules()["removed"] == [DRIFT_NAME]
        assert set(crmsync_schedules()) == {"crmsync:scripted", PRUNE_NAME}

    def test_a_drift_interval_below_one_minute_is_refused_by_name(self, scripted_crm, settings):
        settings.CRMSYNC_DRIFT_CHECK_INTERVAL_MINUTES = 0
        message = "CRMSYNC_DRIFT_CHECK_INTERVAL_MINUTES must be at least 1"
        with pytest.raises(CRMConfigurationError, match=message):
            ensure_schedules()

    def test_duplicates_are_removed(self, scripted_crm):
        for _ in range(2):
            Schedule.objects.create(name="crmsync:scripted", func="integrations.tasks.sync_crm_task", args="'scripted'")
        ensure_schedules()
        assert Schedule.objects.filter(name="crmsync:scripted").count() == 1

    def test_schedules_of_other_apps_are_left_alone(self, scripted_crm):
        Schedule.objects.create(name="reports:nightly", func="reports.tasks.nightly")
        ensure_schedules()
        assert Schedule.objects.filter(name="reports:nightly").exists()

    def test_migrate_and_the_command_ensure_them(self, scripted_crm):
        Schedule.objects.all().delete()
        call_command("migrate", verbosity=0)
        assert set(crmsync_schedules()) == {"crmsync:scripted", PRUNE_NAME, DRIFT_NAME}
        Schedule.objects.all().delete()
        call_command("crm_schedules", stdout=__import__("io").StringIO())
        assert set(crmsync_schedules()) == {"crmsync:scripted", PRUNE_NAME, DRIFT_NAME}


@pytest.mark.django_db(transaction=True)
def test_machines_running_it_at_once_create_no_duplicates(on_postgres, scripted_crm):
    Schedule.objects.all().delete()
    barrier = threading.Barrier(6)

    def machine():
        try:
            barrier.wait()
            ensure_schedules()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=machine) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(Schedule.objects.values_list("name", flat=True)) == sorted(
        [PRUNE_NAME, DRIFT_NAME, "crmsync:scripted"]
    )


class TestTasks:
    def test_sync_task_runs_through_django_q(self, queued, settings):
        queued(30)
        task_id = async_task("integrations.tasks.sync_crm_task", "scripted", sync=True)
        task = Task.objects.get(id=task_id)
        assert task.success, task.result
        assert task.result["accepted"] == 30
        assert set(ContactSync.objects.values_list("processing_status", flat=True)) == {ProcessingStatus.COMPLETE}

    def test_sync_task_fails_loudly_for_an_unconfigured_crm(self, scripted_crm, settings):
        del settings.SCRIPTED_API_KEY
        # In sync mode django-q2 re-raises what a task raised; the cluster records it.
        with pytest.raises(CRMConfigurationError, match="set SCRIPTED_API_KEY"):
            async_task("integrations.tasks.sync_crm_task", "scripted", sync=True)

    def test_drift_task_runs_through_django_q_and_logs_a_summary(self, queued, caplog):
        contacts = queued(3)
        tasks.sync_crm_task("scripted")
        contacts.update(first_name="Bulk")
        with caplog.at_level("INFO", logger="integrations.tasks"):
            task_id = async_task("integrations.tasks.requeue_drifted_task", sync=True)
        task = Task.objects.get(id=task_id)
        assert task.success, task.result
        assert task.result == {"scripted": 3}
        queued = ContactSync.objects.filter(processing_status=ProcessingStatus.QUEUED)
        assert queued.count() == 3
        assert "requeued 3 changed contacts (scripted=3)" in caplog.text

    def test_budget_is_shorter_than_the_cluster_timeout(self, settings):
        settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 600}
        assert tasks.task_budget_seconds() == 540
        settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 60}
        assert tasks.task_budget_seconds() == 30

    def test_prune_deletes_only_old_attempts(self, settings):
        settings.CRMSYNC_ATTEMPT_RETENTION_DAYS = 7
        contact = Contact.objects.create(email="a@example.com")
        now = timezone.now()
        for days in (1, 6, 8, 30):
            SyncAttempt.objects.create(
                contact=contact, crm="brevo", attempted_at=now - timedelta(days=days), outcome="accepted"
            )
        assert tasks.prune_sync_attempts() == 2
        assert sorted((now - a).days for a in SyncAttempt.objects.values_list("attempted_at", flat=True)) == [1, 6]
