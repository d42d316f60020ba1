"""Pacing requests to a CRM within its rate limit, across every worker and machine.

Each CRM's recent request slots (the last N, N its documented limit per window) and
the end of any hold are kept in its CRMState row. A request reserves its own slot
just before it is sent, by the rule of backends.pacing.SlotWindow: at most N in any
window a little longer than the documented one (PACE_SHARE), whatever the number of
workers; a hold (the CRM said its quota is spent) moves every later request back,
with nothing reserved ahead to waste. On PostgreSQL a reservation is one short
transaction that locks the row. On SQLite (one worker process, DESIGN.md) the pace
is kept in the process instead.

The update that reserves a slot also adds the requests the backend sent since the
previous one, and the answers of 429 among them, to the CRM's totals for /metrics
(pacing.RequestTally); the engine adds what is left when its run ends.
"""

import threading
import time
from datetime import timedelta

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from .backends.pacing import HeldUntil, RequestTally, SlotWindow, wait_for_slot
from .models import CRMState

# Off PostgreSQL: {crm: (the end of the last hold, the recent slots)} of this
# process, in epoch seconds (see _take_slots).
_PROCESS_PACE, _PROCESS_LOCK = {}, threading.Lock()


class SharedPacer:
    def __init__(self, crm, requests_per_second, window_seconds=1.0):
        self.crm = crm
        self.window = SlotWindow(requests_per_second, window_seconds)
        self.interval = self.window.interval
        self.held = HeldUntil()
        self.tally = RequestTally()
        # The engine's connection (the thread that made this pacer): see _shared.
        self.owner_connection = connections[DEFAULT_DB_ALIAS]

    def reserve(self, count):
        """Reserve `count` consecutive request slots; return their start times as
        time.monotonic() values, in order."""
        slots = self._take_slots(count)
        # Both clocks read together, after the slots are taken: a slot is as far
        # from now in monotonic time as it is in epoch seconds.
        moment, now = time.monotonic(), timezone.now().timestamp()
        return [moment + (slot - now) for slot in slots]

    def _take_slots(self, count):
        """The next `count` slots of the CRM's pace, as epoch seconds. `now` is read
        once the pace is locked, not before: a slot computed from a clock read before
        a wait for the lock (or a new connection) would be in the past, its request
        sent later than the window counts it, and a sliding limiter would see two
        requests N apart closer than its window (bench/limits.py, the first window)."""
        if not self._shared():
            # SQLite, the embedded single-worker database: a backend's request threads
            # must not each open a connection to it (they would lock each other out),
            # so the pace is this process's, kept under a lock.
            with _PROCESS_LOCK:
                not_before, recent = _PROCESS_PACE.get(self.crm, (0.0, []))
                slots, recent = self._take(timezone.now().timestamp(), not_before, recent, count)
                _PROCESS_PACE[self.crm] = (not_before, recent)
            return slots
        # The requests sent since the last reservation go into its update: counting
        # them costs no statement of its own.
        sent, rate_limited = self.tally.take()
        try:
            with transaction.atomic():
                state = self._locked_state()
                not_before = state.next_request_at.timestamp() if state.next_request_at else 0.0
                now = timezone.now().timestamp()
                slots, recent = self._take(now, not_before, state.recent_request_slots or [], count)
                CRMState.objects.filter(pk=state.pk).update(
                    recent_request_slots=recent,
                    requests_sent=F("requests_sent") + sent,
                    rate_limited_responses=F("rate_limited_responses") + rate_limited,
                )
        except BaseException:
            self.tally.give_back(sent, rate_limited)
            raise
        return slots

    def _take(self, now, not_before, recent, count):
        slots = []
        for _ in range(count):
            slot, recent = self.window.take(now, not_before, recent)
            slots.append(slot)
        return slots, recent

    def _locked_state(self):
        rows = CRMState.objects.select_for_update().only("next_request_at", "recent_request_slots")
        state = rows.filter(crm=self.crm).first()
        if state is None:  # the CRM's first request ever: its row is made once
            CRMState.objects.ensure(self.crm)
            state = rows.get(crm=self.crm)
        return state

    def _shared(self):
        """Whether this call may keep the pace in the database. Not off PostgreSQL
        (above), and not from a backend's request thread while the engine's own
        connection is inside a transaction (a test wraps each test in one): the
        thread's connection would wait for the CRMState row that transaction wrote,
        and the engine waits for the thread. That pace is then this process's."""
        if connection.vendor != "postgresql":
            return False
        owner = self.owner_connection
        return connections[DEFAULT_DB_ALIAS] is owner or not owner.in_atomic_block

    def wait(self):
        """Reserve one slot and sleep until it (again after a hold that covers it)."""
        wait_for_slot(self)

    def hold(self, seconds):
        """Start no new request for `seconds`, in any worker: the CRM said its
        quota is spent."""
        self.held.extend(seconds)
        until = timezone.now() + timedelta(seconds=seconds)
        if not self._shared():
            with _PROCESS_LOCK:
                not_before, recent = _PROCESS_PACE.get(self.crm, (0.0, []))
                _PROCESS_PACE[self.crm] = (max(not_before, until.timestamp()), recent)
            return
        CRMState.objects.ensure(self.crm)
        CRMState.objects.filter(crm=self.crm).filter(
            Q(next_request_at__isnull=True) | Q(next_request_at__lt=until)
        ).update(next_request_at=until)


def share_pace(backend):
    """Give `backend` the pacer every worker on every machine shares for its CRM,
    in place of its own (a CRM without a pace keeps the one it has)."""
    rate = backend.requests_per_second()
    if rate:
        backend.pacer = SharedPacer(backend.name, rate, backend.rate_limit_window_seconds)
    return backend
