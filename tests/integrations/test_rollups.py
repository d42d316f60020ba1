"""The dashboard's rollups equal a real COUNT after every kind of write: the
engine, staff, imports, deletes and cascades, detaching, raw SQL, pruning, and
several workers at once on PostgreSQL."""

import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.utils import timezone

from contacts import erasure, selection
from contacts.importer import ContactRow, upsert_contacts
from contacts.models import AttemptOutcome, Contact, ContactSync, ProcessingStatus, SyncAttempt, SyncStatus
from integrations import rollups
from integrations.backends.base import Outcome
from integrations.engine import SyncEngine
from integrations.models import AttemptCount, SyncStatusCount
from integrations.tasks import prune_sync_attempts

from .conftest import in_threads
from .doubles import ScriptedBackend

pytestmark = pytest.mark.django_db


def assert_exact():
    assert rollups.differences() == []
    # Compacting changes how the counts are stored, never what they are.
    rollups.compact()
    assert rollups.differences() == []


def real_status_counts():
    rows = ContactSync.objects.values_list("crm", "sync_status", "processing_status", "contact")
    counts = {}
    for crm, sync_status, processing_status, contact in rows:
        key = (crm, sync_status, processing_status, contact is None)
        counts[key] = counts.get(key, 0) + 1
    return counts


def respond_by_name(items):
    """Accept c0..c9, ask to retry c10..c19, refuse the rest."""
    outcomes = []
    for item in items:
        number = int(item.contact.email.split("@")[0].lstrip("c"))
        if number < 10:
            outcomes.append(Outcome.accepted(item, external_id="ext-%d" % number))
        elif number < 20:
            outcomes.append(Outcome.retry(item, "Scripted CRM is busy"))
        else:
            outcomes.append(Outcome.permanent(item, "Scripted CRM refused it"))
    return outcomes


class TestEveryWritePath:
    def test_an_engine_run_leaves_the_counts_and_the_chart_exact(self, queued, policy):
        queued(25)

        SyncEngine(ScriptedBackend(respond_by_name), policy()).run()

        assert rollups.status_counts() == {
            ("scripted", SyncStatus.COMPLETE, ProcessingStatus.COMPLETE, False): 10,
            ("scripted", SyncStatus.SELECTED, ProcessingStatus.QUEUED, False): 10,
            ("scripted", SyncStatus.ERROR, ProcessingStatus.ERROR, False): 5,
        }
        hour_ago = timezone.now() - timedelta(hours=1)
        assert sum(n for _crm, _at, n in rollups.attempts_since(hour_ago, AttemptOutcome.ACCEPTED)) == 10
        assert sum(n for _crm, _at, n in rollups.attempts_since(hour_ago, AttemptOutcome.RETRY)) == 10
        assert rollups.contact_count() == 25
        assert_exact()

    def test_staff_select_skip_unselect_and_retry(self, queued, policy, scripted_crm):
        contacts = queued(25)
        SyncEngine(ScriptedBackend(respond_by_name), policy()).run()

        selection.skip(contacts.filter(email__in=["c1@example.com", "c2@example.com"]), ["scripted"])
        selection.unselect(contacts.filter(email="c11@example.com"), ["scripted"])
        selection.retry_failed(contacts, ["scripted"])
        selection.select(contacts.filter(email="c3@example.com"), ["scripted", "other"])

        assert rollups.status_counts() == real_status_counts()
        assert rollups.status_counts()[("scripted", SyncStatus.SKIPPED, ProcessingStatus.NONE, False)] == 2
        assert_exact()

    def test_an_import_that_creates_updates_and_queues(self, scripted_crm, make_contact):
        make_contact(email="known@example.com")
        rows = [
            ContactRow(values={"email": "known@example.com", "first_name": "Known"}, attributes={}),
            *(ContactRow(values={"email": "new%d@example.com" % i}, attributes={}) for i in range(6)),
        ]

        upsert_contacts(rows, crms=["scripted"])

        assert rollups.contact_count() == 7
        assert rollups.status_counts() == {("scripted", SyncStatus.SELECTED, ProcessingStatus.QUEUED, False): 7}
        assert_exact()

    def test_deletes_of_contacts_cascade_to_their_rows_and_attempts(self, queued, policy):
        contacts = queued(25)
        SyncEngine(ScriptedBackend(respond_by_name), policy()).run()

        contacts.filter(email__in=["c0@example.com", "c12@example.com", "c22@example.com"]).delete()
        Contact.objects.get(email="c1@example.com").delete()
        SyncAttempt.objects.filter(contact__email="c2@example.com").delete()
        ContactSync.objects.filter(contact__email="c3@example.com").delete()

        assert rollups.contact_count() == 21
        assert rollups.status_counts() == real_status_counts()
        assert_exact()

    def test_an_erasure_from_start_to_the_local_delete(self, queued, policy, settings):
        settings.CRMSYNC_SUPPRESSION_KEY = "suppression-key-for-rollup-tests"
        queued(3)
        SyncEngine(ScriptedBackend(), policy()).run()

        erasure.start(["c0@example.com"], requested_by="dpo", via="command")
        assert rollups.status_counts() == real_status_counts()
        SyncEngine(ScriptedBackend(), policy()).run()

        assert not Contact.objects.filter(email="c0@example.com").exists()
        assert rollups.contact_count() == 2
        assert rollups.status_counts() == real_status_counts()
        assert_exact()

    def test_a_row_detached_from_its_deleted_contact_is_counted_apart(self, queued):
        queued(3)

        ContactSync.objects.filter(contact__email="c0@example.com").update(contact=None)

        assert rollups.status_counts() == {
            ("scripted", SyncStatus.SELECTED, ProcessingStatus.QUEUED, False): 2,
            ("scripted", SyncStatus.SELECTED, ProcessingStatus.QUEUED, True): 1,
        }
        assert_exact()

    def test_raw_sql_updates_inserts_and_deletes(self, queued):
        queued(10)
        table = ContactSync._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE %s SET sync_status = %%s, processing_status = %%s WHERE id IN "
                "(SELECT id FROM %s ORDER BY id LIMIT 4)" % (table, table),
                [SyncStatus.ERROR, ProcessingStatus.ERROR],
            )
            cursor.execute("UPDATE %s SET crm = %%s WHERE id = (SELECT max(id) FROM %s)" % (table, table), ["other"])
            cursor.execute("DELETE FROM %s WHERE id = (SELECT min(id) FROM %s)" % (table, table))
            # An UPDATE that changes no key writes no delta.
            cursor.execute("UPDATE %s SET attempts = attempts + 1" % table)

        assert rollups.status_counts() == {
            ("scripted", SyncStatus.ERROR, ProcessingStatus.ERROR, False): 3,
            ("scripted", SyncStatus.SELECTED, ProcessingStatus.QUEUED, False): 5,
            ("other", SyncStatus.SELECTED, ProcessingStatus.QUEUED, False): 1,
        }
        assert_exact()

    def test_pruned_attempts_leave_no_quarter_hour_behind(self, make_contact, settings):
        settings.CRMSYNC_ATTEMPT_RETENTION_DAYS = 7
        contact = make_contact()
        old, recent = timezone.now() - timedelta(days=9), timezone.now() - timedelta(hours=2)
        SyncAttempt.objects.bulk_create(
            SyncAttempt(contact=contact, crm="scripted", attempted_at=at, outcome=AttemptOutcome.ACCEPTED)
            for at in [old] * 3 + [recent] * 2
        )

        assert prune_sync_attempts() == 3

        assert AttemptCount.objects.filter(period_start__lt=timezone.now() - timedelta(days=7)).count() == 0
        assert sum(n for _crm, _at, n in rollups.attempts_since(old, AttemptOutcome.ACCEPTED)) == 2
        assert_exact()

    def test_each_attempt_counts_in_its_quarter_hour(self, make_contact):
        contact = make_contact()
        start = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
        moments = [start, start + timedelta(minutes=14, seconds=59), start + timedelta(minutes=15)]
        SyncAttempt.objects.bulk_create(
            SyncAttempt(contact=contact, crm="scripted", attempted_at=at, outcome=AttemptOutcome.FAILED)
            for at in moments
        )

        assert sorted(rollups.attempts_since(start, AttemptOutcome.FAILED)) == [
            ("scripted", start, 2),
            ("scripted", start + timedelta(minutes=15), 1),
        ]


class TestRepair:
    def test_check_reports_a_drift_and_a_rebuild_repairs_it(self, queued):
        queued(4)
        call_command("rebuild_rollups", "--check", stdout=StringIO())
        SyncStatusCount.objects.create(
            crm="scripted", sync_status="complete", processing_status="complete", detached=False, number=5, delta=True
        )

        out = StringIO()
        with pytest.raises(CommandError, match="1 rollup counts differ"):
            call_command("rebuild_rollups", "--check", stdout=out)
        assert "scripted, complete, complete" in out.getvalue() and "rollup 5, real count 0" in out.getvalue()

        call_command("rebuild_rollups", stdout=StringIO())
        call_command("rebuild_rollups", "--check", stdout=StringIO())
        assert rollups.status_counts() == {("scripted", SyncStatus.SELECTED, ProcessingStatus.QUEUED, False): 4}

    def test_triggers_a_migration_dropped_are_put_back_and_the_counts_redone(self, queued):
        queued(2)
        rollups.drop_triggers()
        queued(3, prefix="unseen")
        assert rollups.missing_triggers()
        with pytest.raises(CommandError, match="triggers are missing"):
            call_command("rebuild_rollups", "--check", stdout=StringIO())

        rollups.after_migrate(plan=[])

        assert rollups.missing_triggers() == []
        assert rollups.contact_count() == 5
        queued(1, prefix="later")
        assert_exact()


@pytest.mark.django_db(transaction=True)
def test_a_flush_leaves_empty_rollups(queued):
    """A flush empties the tables one by one (TransactionTestCase, `manage.py
    flush`); the rollups end empty too, not with the deltas of the last tables."""
    queued(5)

    call_command("flush", interactive=False, verbosity=0)

    assert (rollups.status_counts(), rollups.contact_count()) == ({}, 0)
    assert rollups.differences() == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
class TestConcurrentWriters:
    def test_workers_and_staff_writing_at_once_leave_exact_counts(self, on_postgres, queued, policy):
        contacts = list(queued(1200).order_by("pk"))
        stop = threading.Event()

        def work(index):
            if index < 4:
                SyncEngine(ScriptedBackend(respond_by_name), policy(batch_size=25)).run()
                return
            # Staff skip and select slices of the same contacts while the workers run.
            mine = contacts[index::3]
            for start in range(0, len(mine), 40):
                pks = [c.pk for c in mine[start : start + 40]]
                selection.skip(Contact.objects.filter(pk__in=pks), ["scripted"])
                selection.select(Contact.objects.filter(pk__in=pks), ["scripted", "other"])
            stop.set()

        in_threads(6, work)

        assert rollups.status_counts() == real_status_counts()
        assert_exact()

    def test_writers_that_all_try_to_compact_never_wait_or_deadlock(self, on_postgres, queued):
        queued(400)
        ids = list(ContactSync.objects.order_by("pk").values_list("pk", flat=True))

        def work(index):
            mine = ids[index::4]
            for round_number in range(20):
                status = [ProcessingStatus.PROCESSING, ProcessingStatus.QUEUED][round_number % 2]
                with transaction.atomic():
                    # Two statements per transaction touching the same keys as the others.
                    ContactSync.objects.filter(pk__in=mine[:50]).update(processing_status=status)
                    ContactSync.objects.filter(pk__in=mine[50:]).update(processing_status=status)
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT crmsync_compact_counts(false)")

        in_threads(4, work)

        assert SyncStatusCount.objects.filter(delta=False).exists(), "some compaction ran"
        assert rollups.status_counts() == real_status_counts()
        assert_exact()
