"""Which rows a claim takes, in which order, with due rows spread among Complete ones
(the layout bench/claim.py measures): expired leases first by lease end, then the
queued rows by due time; rows locked by another worker are skipped, not waited for.
The order tests run on SQLite and PostgreSQL; the locking ones on PostgreSQL with
real connections."""

import threading
from datetime import timedelta

import pytest
from django.db import connections, transaction

from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus
from integrations.engine import SyncEngine

from .doubles import ScriptedBackend
from .test_engine_concurrency import in_threads

P, S = ProcessingStatus, SyncStatus


def scattered_rows(count, every=5):
    """`count` contacts with a scripted row each; every `every`-th is queued and the
    rest Complete. Returns the rows in creation (pk) order."""
    contacts = Contact.objects.bulk_create(Contact(email="c%d@example.com" % i) for i in range(count))
    rows = ContactSync.objects.bulk_create(
        ContactSync(
            contact=contact,
            crm="scripted",
            sync_status=S.SELECTED if i % every == 0 else S.COMPLETE,
            processing_status=P.QUEUED if i % every == 0 else P.COMPLETE,
        )
        for i, contact in enumerate(contacts)
    )
    return rows


def set_due(rows, moments):
    for row, moment in zip(rows, moments, strict=True):
        ContactSync.objects.filter(pk=row.pk).update(next_attempt_at=moment)


@pytest.mark.django_db
class TestOrder:
    def test_expired_leases_first_by_lease_end_then_queued_by_due_time(self, policy, clock):
        rows = scattered_rows(60)
        queued = [row for row in rows if row.processing_status == P.QUEUED]  # 12 rows
        now = clock()
        # Due in an order unrelated to pk; two not due yet.
        due_in = [7, 3, 11, 1, 9, 5, 2, 8, 4, 6]
        set_due(queued[:10], [now - timedelta(minutes=m) for m in due_in])
        set_due(queued[10:], [now + timedelta(minutes=1)] * 2)
        # Two Processing rows whose lease ran out, and one whose lease holds.
        complete = [row for row in rows if row.processing_status == P.COMPLETE]
        for row, lease in zip(complete[:3], (-1, -5, +5), strict=True):
            ContactSync.objects.filter(pk=row.pk).update(
                processing_status=P.PROCESSING, lease_expires_at=now + timedelta(minutes=lease)
            )
        engine = SyncEngine(ScriptedBackend(), policy(), clock=clock)

        _token, first = engine.claim_ids(4)
        _token, second = engine.claim_ids(20)

        by_due = [row.pk for _m, row in sorted(zip(due_in, queued[:10], strict=True), key=lambda p: -p[0])]
        assert first == [complete[1].pk, complete[0].pk, *by_due[:2]]
        assert second == by_due[2:], "the rest by due time; not yet due and leased rows left"
        assert not set(second) & {row.pk for row in complete[:3]}, "the second claim found no expired lease"

    def test_claimed_rows_carry_the_token_and_a_lease_and_one_more_attempt(self, policy, clock):
        rows = scattered_rows(20)
        set_due([row for row in rows if row.processing_status == P.QUEUED], [clock() - timedelta(minutes=1)] * 4)
        engine = SyncEngine(ScriptedBackend(), policy(lease_seconds=120), clock=clock)

        batch = engine.claim(10)

        assert len(batch.rows) == 4
        assert {(r.processing_status, r.claim_token, r.attempts) for r in batch.rows} == {
            (P.PROCESSING, batch.token, 1)
        }
        assert {r.lease_expires_at for r in batch.rows} == {clock() + timedelta(seconds=120)}
        assert all(row.contact.email for row in batch.rows), "loaded with their contacts"
        assert ContactSync.objects.filter(processing_status=P.COMPLETE).count() == 16, "Complete rows untouched"


@pytest.mark.django_db(transaction=True)
class TestWorkersSideBySide:
    def test_a_row_locked_by_another_worker_is_skipped_not_waited_for(self, on_postgres, policy, clock):
        rows = scattered_rows(50)
        queued = [row for row in rows if row.processing_status == P.QUEUED]
        set_due(queued, [clock() - timedelta(minutes=len(queued) - i) for i in range(len(queued))])
        holding, release = threading.Event(), threading.Event()

        def other_worker():
            # Holds the oldest due row's lock as a claim in progress would.
            try:
                with transaction.atomic():
                    ContactSync.objects.select_for_update().filter(pk=queued[0].pk).get()
                    holding.set()
                    release.wait(10)
            finally:
                connections.close_all()

        thread = threading.Thread(target=other_worker)
        thread.start()
        try:
            assert holding.wait(10)
            _token, ids = SyncEngine(ScriptedBackend(), policy(), clock=clock).claim_ids(3)
        finally:
            release.set()
            thread.join()

        assert ids == [row.pk for row in queued[1:4]]

    def test_workers_claiming_at_once_never_take_a_row_twice(self, on_postgres, policy, clock):
        rows = scattered_rows(600, every=3)
        queued = [row for row in rows if row.processing_status == P.QUEUED]
        set_due(queued, [clock() - timedelta(seconds=1)] * len(queued))
        claimed, start = [[] for _ in range(4)], threading.Barrier(4)

        def worker(index):
            engine = SyncEngine(ScriptedBackend(), policy(), clock=clock)
            start.wait(10)
            while True:
                _token, ids = engine.claim_ids(7)
                if not ids:
                    return
                claimed[index].extend(ids)

        in_threads(4, worker)

        every = [pk for ids in claimed for pk in ids]
        assert sorted(every) == sorted(row.pk for row in queued), "each due row claimed exactly once"
        assert sum(1 for ids in claimed if ids) > 1, "the claims ran side by side"
        assert set(ContactSync.objects.filter(pk__in=every).values_list("processing_status", "attempts")) == {
            (P.PROCESSING, 1)
        }
