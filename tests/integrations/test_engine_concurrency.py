"""Several workers, each with its own database connection, on PostgreSQL."""

import threading
from collections import Counter

import pytest

from contacts.models import ContactSync, ProcessingStatus, SyncAttempt
from integrations.backends.base import Outcome
from integrations.engine import SyncEngine
from integrations.exceptions import RateLimited
from integrations.workers import run_workers

from .conftest import in_threads
from .doubles import ScriptedBackend

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.mark.slow
def test_eight_workers_claim_every_row_exactly_once(on_postgres, queued, policy):
    queued(5000)
    pushed = Counter()
    lock = threading.Lock()

    def respond(items):
        with lock:
            pushed.update(item.key for item in items)
        return [Outcome.accepted(item, external_id=str(item.key)) for item in items]

    per_worker = [0] * 8

    def worker(index):
        result = SyncEngine(ScriptedBackend(respond), policy(batch_size=50)).run()
        per_worker[index] = result.claimed

    in_threads(8, worker)

    assert sum(pushed.values()) == 5000 and set(pushed.values()) == {1}
    assert sum(per_worker) == 5000
    assert sum(1 for claimed in per_worker if claimed) > 1, "the work was shared"
    assert set(ContactSync.objects.values_list("processing_status", "attempts")) == {(ProcessingStatus.COMPLETE, 1)}
    assert SyncAttempt.objects.count() == 5000


def test_run_workers_shares_one_crm_between_threads(on_postgres, queued, policy, scripted_crm):
    queued(600)
    result = run_workers(ScriptedBackend, 4, engine_options={"policy": policy(batch_size=25)})
    assert (result.claimed, result.accepted) == (600, 600)
    assert ContactSync.objects.filter(processing_status=ProcessingStatus.COMPLETE).count() == 600
    assert SyncAttempt.objects.values("contact_id").distinct().count() == 600


def test_a_rate_limit_seen_by_one_worker_holds_back_the_others(on_postgres, queued, policy):
    queued(400)
    limited, pause_recorded = threading.Event(), threading.Event()

    def respond(items):
        if not limited.is_set():
            limited.set()
            raise RateLimited("Scripted CRM: too many requests", retry_after=3600)
        # Hold the batches already in flight until the pause is in the database.
        pause_recorded.wait(timeout=30)
        return [Outcome.accepted(item) for item in items]

    backend = ScriptedBackend(respond)
    claimed = []

    def worker(index):
        result = SyncEngine(backend, policy(batch_size=20)).run()
        if result.waited:
            pause_recorded.set()
        claimed.append(result.claimed)

    in_threads(4, worker)

    # The limited batch, plus at most one batch per other worker that was in
    # flight when the limit hit; nobody claims once the pause is recorded.
    assert sum(claimed) <= 20 * 4
    assert ContactSync.objects.filter(processing_status=ProcessingStatus.QUEUED).count() >= 400 - 20 * 3
    assert not ContactSync.objects.filter(processing_status=ProcessingStatus.PROCESSING).exists()


def test_run_workers_raises_when_a_loop_fails(on_postgres, queued, policy, scripted_crm, monkeypatch):
    queued(10)

    def broken_record(self, batch, result):
        raise RuntimeError("recording failed")

    monkeypatch.setattr(SyncEngine, "record", broken_record)
    with pytest.raises(RuntimeError, match="recording failed"):
        run_workers(ScriptedBackend, 2, engine_options={"policy": policy()})
