"""Pacing requests to a CRM within its rate limit, across every worker and machine.

Each CRM's next free request slot is kept in its CRMState row. Reserving n slots
moves that time on by n intervals in one short transaction; the caller then waits
for its own slots. This spreads requests evenly at the allowed rate, whatever the
number of workers, at the cost of one small write per reservation.
"""

import threading
import time
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .models import CRMState


class SharedPacer:
    def __init__(self, crm, requests_per_second):
        self.crm = crm
        self.interval = 1.0 / requests_per_second
        self.lock = threading.Lock()

    def reserve(self, count):
        """Reserve `count` consecutive request slots; return their start times as
        time.monotonic() values, in order."""
        interval = timedelta(seconds=self.interval)
        with self.lock, transaction.atomic():
            CRMState.objects.bulk_create([CRMState(crm=self.crm)], ignore_conflicts=True)
            state = CRMState.objects.select_for_update().only("next_request_at").get(crm=self.crm)
            now = timezone.now()
            first = max(state.next_request_at or now, now)
            CRMState.objects.filter(pk=state.pk).update(next_request_at=first + interval * count)
        start = time.monotonic() + (first - now).total_seconds()
        return [start + i * self.interval for i in range(count)]

    def wait(self):
        """Reserve one slot and sleep until it."""
        wait_until(self.reserve(1)[0])

    def hold(self, seconds):
        """Start no new request for `seconds`, in any worker: the CRM said its
        quota is spent. Slots already handed out are kept."""
        until = timezone.now() + timedelta(seconds=seconds)
        with self.lock, transaction.atomic():
            CRMState.objects.bulk_create([CRMState(crm=self.crm)], ignore_conflicts=True)
            CRMState.objects.filter(crm=self.crm).filter(
                Q(next_request_at__isnull=True) | Q(next_request_at__lt=until)
            ).update(next_request_at=until)


def wait_until(moment):
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def share_pace(backend):
    """Give `backend` the pacer every worker on every machine shares for its CRM,
    in place of its own (a CRM without a pace keeps the one it has)."""
    rate = backend.requests_per_second()
    if rate:
        backend.pacer = SharedPacer(backend.name, rate)
    return backend
