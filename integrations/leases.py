"""Keeping a batch's lease while its worker is alive."""

import logging
import threading
from datetime import timedelta

from django.db import DatabaseError, connections

from contacts.models import ContactSync

logger = logging.getLogger(__name__)

# A batch's lease is renewed this many times per lease while it is pushed and
# recorded, so a live worker never loses it (checks.py holds the lease to it).
LEASE_RENEWALS_PER_LEASE = 3


class LeaseRenewal:
    """Keeps a batch's lease while its worker pushes and records it: a thread renews
    it every lease / LEASE_RENEWALS_PER_LEASE, so a push that legitimately takes
    long (a slow CRM, many paced requests, later an asynchronous import) is never
    taken over by another worker while this one is alive. A dead worker renews
    nothing, and its rows are claimed again when the lease runs out."""

    def __init__(self, engine, batch):
        self.engine = engine
        self.ids = list(batch.by_key)
        self.token = batch.token
        self.interval = engine.policy.lease_seconds / LEASE_RENEWALS_PER_LEASE
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._keep, name="crmsync-%s-lease" % engine.crm, daemon=True)
        self.renewals = 0

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopped.set()
        self.thread.join()
        self.engine.backend.stop_sending.clear()

    def _keep(self):
        try:
            while not self.stopped.wait(self.interval):
                self.renew()
        finally:
            connections.close_all()  # this thread's own connection

    def renew(self):
        policy = self.engine.policy
        try:
            kept = (
                ContactSync.objects.filter(pk__in=self.ids)
                .held_by(self.token)
                .update(lease_expires_at=self.engine.clock() + timedelta(seconds=policy.lease_seconds))
            )
        except DatabaseError as exc:
            # The lease may run out before the next try: send nothing more (the
            # request in flight ends by its deadline, before the lease: check E002).
            self.engine.backend.stop_sending.set()
            logger.warning(
                "crm=%s could not renew a batch's lease (%s); sending nothing more of it",
                self.engine.crm,
                type(exc).__name__,
            )
            return
        self.renewals += 1
        if kept < len(self.ids):
            self.engine.backend.stop_sending.set()
            logger.warning(
                "crm=%s %d of %d contacts of the batch in flight are no longer held by this worker; "
                "sending nothing more of it",
                self.engine.crm,
                len(self.ids) - kept,
                len(self.ids),
            )
