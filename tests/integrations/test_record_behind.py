"""Overlapping a batch with a CRM that keeps pushes waiting (integrations
overlap.py), on PostgreSQL with real connections. Once a push has outlasted a
record, the next batch is claimed during the push and recorded on a thread of its
own while the next one is pushed: every row is pushed once and recorded once,
records one at a time and in order; a batch whose record changes what the run
does next (the CRM asked to wait, or failed for everyone) is recorded before the
next claim; a staff decision made during the push is applied; an error in a
record behind still leaves the next batch, already pushed, recorded; the contact
budget holds; a batch claimed ahead whose lease is no longer fresh goes back.
With a CRM that answers at once, records stay on the run's thread."""

import threading
import time

import pytest
from django.db import connection

from contacts import selection
from contacts.models import ContactSync, ProcessingStatus, SyncAttempt, SyncStatus
from integrations.backends.base import Outcome
from integrations.engine import SyncEngine
from integrations.models import CRMState

from .doubles import ScriptedBackend

P, S = ProcessingStatus, SyncStatus
# Far longer than recording a batch of two, even on a busy machine.
PUSH_SECONDS = 0.25

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="overlaps only where claims take row locks"),
]


def slow(respond=ScriptedBackend.accept_all):
    """A CRM that keeps each push waiting, then answers as `respond` does."""

    def answer(items):
        time.sleep(PUSH_SECONDS)
        return respond(items)

    return answer


def engine_threads():
    return [thread for thread in threading.enumerate() if thread.name.startswith("crmsync-scripted-")]


def traced(engine):
    """[(step, thread name, batch keys)] of the engine's claims, pushes and records."""
    events, claim, push, record = [], engine.claim, engine.push, engine.record

    def note(step, batch):
        events.append((step, threading.current_thread().name, sorted(batch.by_key)))

    def claiming(limit):
        batch = claim(limit)
        note("claim", batch)
        return batch

    def pushing(batch):
        push(batch)
        note("push", batch)

    def recording(batch, result):
        record(batch, result)
        note("record", batch)

    engine.claim, engine.push, engine.record = claiming, pushing, recording
    return events


def on(events, step):
    return [(name, keys) for kind, name, keys in events if kind == step]


def test_a_slow_crm_has_each_batch_recorded_behind_the_next_push(queued, policy, clock):
    queued(7)
    backend = ScriptedBackend(slow())
    engine = SyncEngine(backend, policy(batch_size=2), clock=clock)
    events = traced(engine)
    reported = []

    result = engine.run(on_batch=lambda batch: reported.append(batch.accepted))

    assert result.claimed == result.accepted == 7 and result.batches == 4
    # Each batch reported once it is recorded, in order; the last claim found nothing.
    assert reported == [2, 2, 2, 1, 0]
    assert set(ContactSync.objects.values_list("sync_status", "processing_status", "attempts")) == {
        (S.COMPLETE, P.COMPLETE, 1)
    }
    assert SyncAttempt.objects.count() == 7
    main = threading.current_thread().name
    pushes, records = [keys for _name, keys in on(events, "push")], on(events, "record")
    assert [keys for _name, keys in records] == pushes, "records one at a time, in the order of the pushes"
    # The first push tells how long the CRM takes: its record stays on the run's
    # thread; every later one is recorded behind, and claimed during the push before it.
    assert records[0][0] == main
    assert all(name.startswith("crmsync-scripted-record") for name, _keys in records[1:])
    claims = on(events, "claim")
    assert all(name.startswith("crmsync-scripted-claim") for name, _keys in claims[1:-1])
    assert claims[-1] == (main, []), "the last batch came short: the run's own claim finds nothing"
    assert all(name == main for name, _keys in on(events, "push"))
    assert not engine_threads(), "the threads ended with the run"


def test_a_crm_that_answers_at_once_is_recorded_on_the_runs_thread(queued, policy, clock):
    queued(6)
    engine = SyncEngine(ScriptedBackend(), policy(batch_size=2), clock=clock)
    events = traced(engine)

    engine.run()

    main = threading.current_thread().name
    assert [name for name, _keys in on(events, "record")] == [main] * 3


def test_a_batch_the_crm_failed_is_recorded_before_the_next_push(queued, policy, clock):
    queued(8)
    calls = []

    def respond(items):
        calls.append(len(items))
        if len(calls) == 3:  # the CRM fails for the whole third batch
            return [Outcome.retry(item, "Service unavailable", http_status=503) for item in items]
        return ScriptedBackend.accept_all(items)

    engine = SyncEngine(ScriptedBackend(slow(respond)), policy(batch_size=2), clock=clock)
    events = traced(engine)
    engine.run()

    main = threading.current_thread().name
    third = on(events, "push")[2][1]
    assert ("record", main, third) in events, "recorded on the run's thread"
    recorded_at = events.index(("record", main, third))
    assert events.index(("push", main, on(events, "push")[3][1])) > recorded_at, "the next push waits for it"
    assert ContactSync.objects.filter(pk__in=third, processing_status=P.QUEUED, attempts=1).count() == 2


def test_a_rate_limit_pauses_the_run_before_anything_else_is_pushed(queued, policy, clock):
    queued(8)
    calls = []

    def respond(items):
        calls.append(len(items))
        if len(calls) == 3:
            return [Outcome.wait(item, "Too many requests", retry_after=30) for item in items]
        return ScriptedBackend.accept_all(items)

    backend = ScriptedBackend(slow(respond))
    engine = SyncEngine(backend, policy(batch_size=2), clock=clock)
    events = traced(engine)
    result = engine.run()

    assert on(events, "record")[2] == (threading.current_thread().name, on(events, "push")[2][1]), (
        "the batch that met the limit is recorded on the run's thread, pausing it"
    )
    assert calls == [2, 2, 2] and result.paused_until is not None
    assert result.accepted == 4 and result.waited == 2
    assert ContactSync.objects.filter(processing_status=P.COMPLETE).count() == 4
    # The third batch waits for the CRM, its attempt given back; the batch claimed
    # during its push went back untouched, due now.
    waiting = ContactSync.objects.filter(pk__in=[item.key for item in backend.pushed[4:]])
    assert set(waiting.values_list("processing_status", "attempts")) == {(P.QUEUED, 0)}
    assert all(row.next_attempt_at > clock() for row in waiting)
    not_pushed = ContactSync.objects.exclude(pk__in=[item.key for item in backend.pushed])
    assert set(not_pushed.values_list("processing_status", "attempts", "claim_token")) == {(P.QUEUED, 0, None)}
    assert all(row.next_attempt_at <= clock() for row in not_pushed)


def test_a_skip_made_during_the_push_is_applied_by_the_record_behind(queued, policy, clock):
    contacts = queued(6)
    backend = ScriptedBackend()

    def respond(items):
        if len(backend.pushed) == 4:  # the second batch, in flight: staff skip its first contact
            selection.skip(contacts.filter(pk=items[0].contact.pk), ["scripted"])
        return ScriptedBackend.accept_all(items)

    backend.respond = slow(respond)
    engine = SyncEngine(backend, policy(batch_size=2), clock=clock)
    events = traced(engine)
    engine.run()

    assert on(events, "record")[1][0].startswith("crmsync-scripted-record")
    skipped = ContactSync.objects.get(contact=backend.pushed[2].contact)
    assert (skipped.sync_status, skipped.processing_status) == (S.SKIPPED, P.NONE)
    assert ContactSync.objects.filter(sync_status=S.COMPLETE).count() == 5


def test_an_error_in_a_record_behind_leaves_the_batch_pushed_after_it_recorded(queued, policy, clock):
    queued(8)
    backend = ScriptedBackend(slow())
    engine = SyncEngine(backend, policy(batch_size=2), clock=clock)
    record_attempts, failed = engine._record_attempts, []

    def failing_for_the_second_batch(batch, decided, written, now):
        if len(backend.pushed) >= 4 and not failed:
            failed.append(sorted(batch.by_key))
            raise RuntimeError("the record failed")
        return record_attempts(batch, decided, written, now)

    engine._record_attempts = failing_for_the_second_batch
    with pytest.raises(RuntimeError):
        engine.run()

    # The second batch's record rolled back: still held under its lease, to be
    # claimed again when it runs out. The third, pushed meanwhile, is recorded;
    # the fourth, claimed during that push, is back in the queue.
    assert len(backend.pushed) == 6
    assert failed[0] == sorted(item.key for item in backend.pushed[2:4])
    second = ContactSync.objects.filter(pk__in=failed[0])
    assert set(second.values_list("processing_status", "attempts")) == {(P.PROCESSING, 1)}
    pushed_after = ContactSync.objects.filter(pk__in=[item.key for item in backend.pushed[4:]])
    assert set(pushed_after.values_list("processing_status", flat=True)) == {P.COMPLETE}
    assert ContactSync.objects.filter(processing_status=P.QUEUED, attempts=0).count() == 2
    assert not engine_threads()


def test_the_contact_budget_counts_the_batch_being_recorded(queued, policy, clock):
    queued(9)
    backend = ScriptedBackend(slow())

    result = SyncEngine(backend, policy(batch_size=2), clock=clock).run(max_contacts=5)

    assert result.claimed == result.accepted == 5 and len(backend.pushed) == 5
    assert ContactSync.objects.filter(processing_status=P.QUEUED, attempts=0).count() == 4
    assert not ContactSync.objects.filter(processing_status=P.PROCESSING).exists()


def test_a_staff_pause_stops_the_run_and_the_batch_claimed_ahead_goes_back(queued, policy, clock):
    queued(8)
    backend = ScriptedBackend()

    def respond(items):
        if len(backend.pushed) == 4:
            CRMState.objects.pause_by_staff("scripted", by="staff")
        return ScriptedBackend.accept_all(items)

    backend.respond = slow(respond)
    result = SyncEngine(backend, policy(batch_size=2), clock=clock).run()

    assert result.paused_by == "staff" and result.claimed == result.accepted == 4
    assert ContactSync.objects.filter(processing_status=P.COMPLETE).count() == 4
    assert ContactSync.objects.filter(processing_status=P.QUEUED, attempts=0).count() == 4


def test_a_batch_claimed_ahead_whose_lease_is_no_longer_fresh_goes_back(queued, policy, clock):
    queued(6)
    # Renewal due after a third of the lease: 0.2 s, shorter than a push.
    engine = SyncEngine(ScriptedBackend(slow()), policy(batch_size=2, lease_seconds=0.6), clock=clock)
    events = traced(engine)
    released = []
    release = engine.release

    def releasing(batch):
        released.append(sorted(batch.by_key))
        release(batch)

    engine.release = releasing
    result = engine.run()

    assert result.claimed == result.accepted == 6
    assert released, "a batch claimed during a push longer than its renewal interval went back"
    # Each went back and was claimed afresh on the run's thread before its push.
    main = threading.current_thread().name
    for keys in released:
        assert any(name == main and claimed == keys for name, claimed in on(events, "claim"))
    assert set(ContactSync.objects.values_list("processing_status", "attempts")) == {(P.COMPLETE, 1)}
