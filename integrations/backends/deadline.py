"""A total deadline for one HTTP request: connect, headers and the whole body.

requests' timeout bounds each socket read, so a server that sends a byte a second
never trips it. Here one watchdog thread shuts down the socket of a request whose
deadline passed, which wakes the read blocked on it; the request then fails and the
caller reports a timeout. The connection in use is found through connection pools
that note, per thread, which connection the thread's request is using.
"""

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time

from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

# While connecting there is no socket to shut down yet: look again this soon.
RECHECK_SECONDS = 0.05

_current = threading.local()


class Deadline:
    """`with Deadline(seconds):` around one request on this thread; afterwards
    `expired` says whether the watchdog had to end it."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.at = None
        self.expired = False
        self._lock = threading.Lock()
        self._connection = None
        self._shut = None
        self._done = False

    def __enter__(self):
        if getattr(_current, "deadline", None) is not None:
            raise RuntimeError("A request on this thread already has a deadline.")
        self.at = time.monotonic() + self.seconds
        _current.deadline = self
        _watchdog.watch(self)
        return self

    def __exit__(self, *exc_info):
        with self._lock:
            self._done, self._connection = True, None
        _current.deadline = None

    @property
    def passed(self):
        """The watchdog ended the request, or its time is up (a socket timeout can
        come a moment before the watchdog's turn)."""
        return self.expired or (self.at is not None and time.monotonic() >= self.at)

    def requests_timeout(self):
        """requests' (connect, read) timeout: neither longer than the deadline."""
        return (self.seconds, self.seconds)

    def use(self, connection):
        with self._lock:
            self._connection = connection

    def release(self, connection):
        """The connection goes back to the pool, where another request may take it."""
        with self._lock:
            if self._connection is connection:
                self._connection = None

    def fire(self):
        """Called by the watchdog once the time is up: shut down the socket in use.
        Returns whether the watch is over (False: look again shortly)."""
        with self._lock:
            if self._done:
                return True
            self.expired = True
            sock = getattr(self._connection, "sock", None)
            if sock is not None and sock is not self._shut:
                _shut_down(sock)
                self._shut = sock
        return False


def _shut_down(sock):
    # socket.socket.shutdown on the descriptor itself: SSLSocket.shutdown would first
    # drop its SSL object under the reading thread's feet. Shutting down also wakes a
    # recv blocked in another thread, which close() does not.
    raw = sock if isinstance(sock, socket.socket) else getattr(sock, "socket", None)
    if raw is None:
        return
    with contextlib.suppress(OSError):  # already closed or never connected
        socket.socket.shutdown(raw, socket.SHUT_RDWR)


class _Watchdog:
    """One thread for every deadline of the process, sleeping until the next one."""

    def __init__(self):
        self._reset()

    def _reset(self):
        self._condition = threading.Condition()
        self._heap = []
        self._order = itertools.count()
        self._thread = None

    def watch(self, deadline):
        with self._condition:
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="crm-request-deadlines", daemon=True)
                self._thread.start()
            self._condition.notify()

    def _run(self):
        while True:
            for deadline in self._due():
                if not deadline.fire():
                    self._again(deadline, time.monotonic() + RECHECK_SECONDS)

    def _due(self):
        """Wait until at least one deadline is due; return those that are."""
        with self._condition:
            while True:
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    due = []
                    while self._heap and self._heap[0][0] <= now:
                        due.append(heapq.heappop(self._heap)[2])
                    return due
                self._condition.wait(self._heap[0][0] - now if self._heap else None)

    def _again(self, deadline, at):
        with self._condition:
            heapq.heappush(self._heap, (at, next(self._order), deadline))


_watchdog = _Watchdog()
# A forked worker has no watchdog thread, and may have copied a held lock.
os.register_at_fork(after_in_child=_watchdog._reset)


class _DeadlinePoolMixin:
    """Tells the thread's deadline which connection its request uses."""

    def _make_request(self, conn, *args, **kwargs):
        deadline = getattr(_current, "deadline", None)
        if deadline is not None:
            deadline.use(conn)
        return super()._make_request(conn, *args, **kwargs)

    def _put_conn(self, conn):
        deadline = getattr(_current, "deadline", None)
        if deadline is not None:
            deadline.release(conn)
        super()._put_conn(conn)


class DeadlineHTTPConnectionPool(_DeadlinePoolMixin, HTTPConnectionPool):
    pass


class DeadlineHTTPSConnectionPool(_DeadlinePoolMixin, HTTPSConnectionPool):
    pass


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections a Deadline can end."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": DeadlineHTTPConnectionPool,
            "https": DeadlineHTTPSConnectionPool,
        }
