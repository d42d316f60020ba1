"""Claiming the next batch while the current one records (integrations
overlap.py), on PostgreSQL with real connections: every row is pushed once
and recorded once; a batch claimed ahead that the run does not push (a pause, an
error, the contact budget) goes back to the queue as it was, no attempt spent,
with a staff decision made meanwhile applied."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection

from contacts import selection
from contacts.models import ContactSync, ProcessingStatus, SyncAttempt, SyncStatus
from integrations.engine import SyncEngine
from integrations.models import CRMState

from .doubles import ScriptedBackend

P, S = ProcessingStatus, SyncStatus

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="claims ahead only where claims take row locks"),
]


def claim_threads():
    return [thread for thread in threading.enumerate() if thread.name.startswith("crmsync-scripted-claim")]


def pushed_keys(backend):
    return [item.key for item in backend.pushed]


def test_every_row_is_pushed_and_recorded_once(queued, policy, clock):
    queued(25)
    backend = ScriptedBackend()

    result = SyncEngine(backend, policy(batch_size=4), clock=clock).run()

    assert result.claimed == result.accepted == 25 and result.batches == 7
    assert sorted(pushed_keys(backend)) == sorted(ContactSync.objects.values_list("pk", flat=True))
    assert set(ContactSync.objects.values_list("sync_status", "processing_status", "attempts")) == {
        (S.COMPLETE, P.COMPLETE, 1)
    }
    assert SyncAttempt.objects.count() == 25
    assert not claim_threads(), "the thread that claimed ahead ended with the run"


def test_claims_ahead_on_its_own_thread_while_recording(queued, policy, clock):
    queued(6)
    engine = SyncEngine(ScriptedBackend(), policy(batch_size=2), clock=clock)
    claim, record = engine.claim, engine.record
    events = []

    def claiming(limit):
        events.append(("claim", threading.current_thread().name))
        return claim(limit)

    def recording(batch, result):
        events.append(("record", threading.current_thread().name))
        record(batch, result)

    engine.claim, engine.record = claiming, recording
    engine.run()

    main = threading.current_thread().name
    # The first claim is the run's own; each next one is made on the claim thread
    # (after the push of the batch before it, beside its record); the last finds
    # nothing. Records stay on the run's thread.
    claims = [name for kind, name in events if kind == "claim"]
    assert claims[0] == main and len(claims) == 4
    assert all(name.startswith("crmsync-scripted-claim") for name in claims[1:])
    assert [name for kind, name in events if kind == "record"] == [main] * 3


def test_a_pause_puts_the_batch_claimed_ahead_back_untouched(queued, policy, clock):
    contacts = queued(4)
    backend = ScriptedBackend()

    def pause_after_first_batch(batch):
        # Between two batches: the second is claimed ahead by now. Staff skip one
        # of its contacts and pause the CRM.
        ahead = ContactSync.objects.filter(processing_status=P.PROCESSING)
        for _ in range(500):  # the claim ahead may still be running
            if ahead.count() == 2:
                break
            time.sleep(0.01)
        assert ahead.count() == 2
        selection.skip(contacts.filter(pk=ahead.first().contact_id), ["scripted"])
        CRMState.objects.pause_by_staff("scripted", by="staff")

    engine = SyncEngine(backend, policy(batch_size=2), clock=clock)
    result = engine.run(on_batch=pause_after_first_batch)

    assert result.claimed == 2 and result.paused_by
    first = set(pushed_keys(backend))
    rest = ContactSync.objects.exclude(pk__in=first)
    assert len(first) == 2 and rest.count() == 2
    assert set(rest.values_list("processing_status", "attempts", "claim_token", "lease_expires_at")) <= {
        (P.QUEUED, 0, None, None),
        (P.NONE, 0, None, None),
    }
    assert set(rest.values_list("sync_status", flat=True)) == {S.SELECTED, S.SKIPPED}, "the skip applied"
    assert not SyncAttempt.objects.filter(contact__in=rest.values("contact")).exists()


def test_an_error_while_recording_puts_the_batch_claimed_ahead_back(queued, policy, clock):
    queued(4)
    engine = SyncEngine(ScriptedBackend(), policy(batch_size=2), clock=clock)

    def failing(batch, decided, written, now):
        raise RuntimeError("the record failed")

    engine._record_attempts = failing
    with pytest.raises(RuntimeError):
        engine.run()

    # The first batch's record rolled back: still held under its lease, to be
    # claimed again when it runs out. The batch claimed ahead is back in the queue.
    states = list(ContactSync.objects.values_list("processing_status", "attempts").order_by("processing_status"))
    assert sorted(states) == [(P.PROCESSING, 1), (P.PROCESSING, 1), (P.QUEUED, 0), (P.QUEUED, 0)]
    assert not claim_threads()


def test_the_contact_budget_holds(queued, policy, clock):
    queued(9)
    backend = ScriptedBackend()

    result = SyncEngine(backend, policy(batch_size=2), clock=clock).run(max_contacts=5)

    assert result.claimed == 5 and len(backend.pushed) == 5
    assert ContactSync.objects.filter(processing_status=P.QUEUED, attempts=0).count() == 4
    assert not ContactSync.objects.filter(processing_status=P.PROCESSING).exists()


def test_a_row_whose_lease_had_expired_goes_back_still_expired(queued, policy, clock):
    queued(4)
    engine = SyncEngine(ScriptedBackend(), policy(batch_size=2), clock=clock)
    # Two rows held by a worker that died: their lease ran out a minute ago.
    dead = engine.claim(2)
    ContactSync.objects.filter(pk__in=[row.pk for row in dead.rows]).update(
        lease_expires_at=clock() - timedelta(minutes=1)
    )
    batch = engine.claim(2)
    assert batch.reclaimed == {row.pk for row in dead.rows}

    engine.release(batch)

    back = ContactSync.objects.filter(pk__in=batch.reclaimed)
    assert set(back.values_list("processing_status", "attempts", "claim_token")) == {(P.PROCESSING, 1, None)}
    assert all(row.lease_expires_at <= clock() for row in back)
    clock.advance(seconds=1)
    assert engine.claim(2).reclaimed == batch.reclaimed, "claimed again first, as expired leases are"
