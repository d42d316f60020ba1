"""Pacing requests to a CRM within its rate limit, across every worker and machine.

Each CRM's next free request slot is kept in its CRMState row. A request reserves
its own slot just before it is sent, which moves that time on by one interval;
the caller then sleeps until its slot. So requests are spread evenly a little
below the allowed rate (backends.pacing.PACE_SHARE), whatever the number of
workers, and a hold (the CRM said its quota is spent) moves every later request
back, with nothing reserved ahead to waste. On PostgreSQL a reservation is one
UPDATE ... RETURNING in autocommit: the row is locked for that statement only. On
SQLite (one worker process, DESIGN.md) the pace is kept in the process instead.
"""

import threading
import time
from datetime import timedelta

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import Q
from django.utils import timezone

from .backends.pacing import HeldUntil, pace_interval, wait_for_slot
from .models import CRMState

RESERVE_SQL = (
    "UPDATE {table} SET next_request_at = GREATEST(COALESCE(next_request_at, %s), %s) + %s "
    "WHERE crm = %s RETURNING next_request_at"
)


# Off PostgreSQL: {crm: the next free slot} of this process (see _move_next_slot).
_PROCESS_SLOTS, _PROCESS_LOCK = {}, threading.Lock()


class SharedPacer:
    def __init__(self, crm, requests_per_second):
        self.crm = crm
        self.interval = pace_interval(requests_per_second)
        self.held = HeldUntil()
        # The engine's connection (the thread that made this pacer): see _shared.
        self.owner_connection = connections[DEFAULT_DB_ALIAS]

    def reserve(self, count):
        """Reserve `count` consecutive request slots; return their start times as
        time.monotonic() values, in order."""
        # Both clocks read together: the slot is `now` plus what the database says.
        moment, now = time.monotonic(), timezone.now()
        end = self._move_next_slot(now, timedelta(seconds=self.interval * count))
        first = end - timedelta(seconds=self.interval * count)
        start = moment + (first - now).total_seconds()
        return [start + i * self.interval for i in range(count)]

    def _move_next_slot(self, now, span):
        """Move the CRM's next free slot on by `span` from itself or `now`,
        whichever is later; return where it now stands."""
        if self._shared():
            sql = RESERVE_SQL.format(table=CRMState._meta.db_table)
            with connection.cursor() as cursor:
                cursor.execute(sql, [now, now, span, self.crm])
                row = cursor.fetchone()
                if row is None:  # the CRM's first request ever: its row is made once
                    CRMState.objects.ensure(self.crm)
                    cursor.execute(sql, [now, now, span, self.crm])
                    row = cursor.fetchone()
            return row[0]
        # SQLite, the embedded single-worker database: a backend's request threads
        # must not each open a connection to it (they would lock each other out),
        # so the pace is this process's, kept under a lock.
        with _PROCESS_LOCK:
            first = max(_PROCESS_SLOTS.get(self.crm) or now, now)
            _PROCESS_SLOTS[self.crm] = first + span
        return first + span

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
                _PROCESS_SLOTS[self.crm] = max(_PROCESS_SLOTS.get(self.crm) or until, until)
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
        backend.pacer = SharedPacer(backend.name, rate)
    return backend
