"""Claiming the next batch while the current one records.

A worker's batch is CPU in Python (building the rows, the payloads, the record's
values) and waits on PostgreSQL (the claim, the record), one after the other. The
next claim, run on a thread of its own with its own database connection while
the current batch records, puts one's waits under the other's work: the engine
(SyncEngine.run) takes the claimed batch at its next turn, or puts it back
(SyncEngine.release) when the run stops or the batch no longer fits.

Only where claims take row locks (PostgreSQL) and the run is not inside a
caller's transaction: another connection would not see that transaction's rows.
"""

from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import connections

from contacts.models import ContactSync


class ClaimAhead:
    def __init__(self, crm):
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crmsync-%s-claim" % crm)
        self.pending = None

    @classmethod
    def for_engine(cls, engine):
        """A ClaimAhead for the engine's run, or None where it cannot be used (or
        CRMSYNC_CLAIM_AHEAD is off)."""
        connection = connections[ContactSync.objects.db]
        if not getattr(settings, "CRMSYNC_CLAIM_AHEAD", True):
            return None
        if not connection.features.has_select_for_update_skip_locked or connection.in_atomic_block:
            return None
        return cls(engine.crm)

    def start(self, claim, limit):
        """Start `claim(limit)` on the thread."""
        self.pending = self.executor.submit(claim, limit)

    def take(self):
        """The batch claimed ahead (waiting for the claim to finish), or None when
        none was started; a failed claim raises here."""
        pending, self.pending = self.pending, None
        return pending.result() if pending else None

    def close(self):
        """Close the thread's connection, then the thread."""
        try:
            self.executor.submit(connections.close_all).result()
        finally:
            self.executor.shutdown()
