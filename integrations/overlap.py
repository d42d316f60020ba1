"""A worker's batches overlapped: the next claimed while the current one is
pushed or recorded, and a batch recorded while the next one is pushed.

A worker's batch is CPU in Python (building the rows, the payloads, the record's
values), waits on PostgreSQL (the claim, the record) and waits on the CRM (the
push), one after the other. Run on a thread of its own, with its own database
connection, one step's waits go under another's work:

- ClaimAhead: the next claim runs while the current batch records, or, when the
  CRM keeps pushes waiting longer than a record takes, while it is pushed. The
  engine (SyncEngine.run) takes the claimed batch at its next turn, or puts it
  back (SyncEngine.release) when the run stops or the batch no longer fits.
- RecordBehind: when the CRM keeps pushes waiting longer than a record takes, a
  batch whose record cannot change what the run does next (see
  SyncEngine._may_record_behind) is recorded while the next one is pushed. The
  engine waits for that record once the next batch is pushed, before recording
  anything else, so records still happen one at a time and in order. With a CRM
  that answers at once there is nothing to overlap: two threads taking turns
  at Python's lock cost more than they save, and the record stays on the run's
  thread.

Only where claims take row locks (PostgreSQL) and the run is not inside a
caller's transaction: another connection would not see that transaction's rows.
"""

from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import connections

from contacts.models import ContactSync


class _OnItsOwnConnection:
    """One thread with its own database connection, for one engine run."""

    setting = None  # the setting that turns it off
    purpose = None  # the thread's name: crmsync-<crm>-<purpose>

    def __init__(self, crm):
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crmsync-%s-%s" % (crm, self.purpose))
        self.pending = None

    @classmethod
    def for_engine(cls, engine):
        """One for the engine's run, or None where it cannot be used (or its setting is off)."""
        connection = connections[ContactSync.objects.db]
        if not getattr(settings, cls.setting, True):
            return None
        if not connection.features.has_select_for_update_skip_locked or connection.in_atomic_block:
            return None
        return cls(engine.crm)

    def close(self):
        """Close the thread's connection, then the thread."""
        try:
            self.executor.submit(connections.close_all).result()
        finally:
            self.executor.shutdown()


class ClaimAhead(_OnItsOwnConnection):
    setting, purpose = "CRMSYNC_CLAIM_AHEAD", "claim"

    def start(self, claim, limit):
        """Start `claim(limit)` on the thread."""
        self.pending = self.executor.submit(claim, limit)

    def take(self):
        """The batch claimed ahead (waiting for the claim to finish), or None when
        none was started; a failed claim raises here."""
        pending, self.pending = self.pending, None
        return pending.result() if pending else None


class RecordBehind(_OnItsOwnConnection):
    setting, purpose = "CRMSYNC_RECORD_BEHIND", "record"

    def start(self, record, batch, result, *args):
        """Start `record(batch, result, *args)` on the thread; `result` is complete once wait() returns."""
        self.pending = result, self.executor.submit(record, batch, result, *args)

    def holds(self, result):
        """Whether `result` is the one being recorded."""
        return self.pending is not None and self.pending[0] is result

    def wait(self):
        """Wait for the record started last, if any; a failed record raises here."""
        pending, self.pending = self.pending, None
        if pending:
            pending[1].result()
