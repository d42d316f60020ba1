"""Request pacing as a backend sees it: slots to start requests in.

A backend asks its `pacer` for a slot just before each request and waits for it;
it never knows where the pace is kept. By default that is this process
(`LocalPacer`), which is all a unit test or a one-off command needs. The engine
replaces it with a pacer shared by every worker on every machine
(integrations.ratelimit.SharedPacer), which has the same three methods:
reserve(count), wait() and hold(seconds).

Both pace a little below the CRM's documented limit (PACE_SHARE): a limiter that
allows at most N requests in any window of T seconds refuses the N+1st as soon as
network or scheduling jitter brings two requests N apart closer than T. Pacing at
97% leaves 3% of T (30 ms for a one-second window) for that jitter.
"""

import threading
import time

# The share of the documented limit crmsync paces at; see the module docstring.
PACE_SHARE = 0.97


def pace_interval(requests_per_second):
    """Seconds between two request slots for a documented limit (0: no pace)."""
    return 1.0 / (requests_per_second * PACE_SHARE) if requests_per_second else 0.0


class HeldUntil:
    """The end of the last hold this process knows of, so that a request whose
    slot was reserved before a hold does not start inside it."""

    def __init__(self):
        self.moment = 0.0
        self.lock = threading.Lock()

    def extend(self, seconds):
        with self.lock:
            self.moment = max(self.moment, time.monotonic() + seconds)

    def covers(self, slot):
        # A slot reserved after the hold starts at its end, give or take the
        # microseconds between two clock readings.
        return slot < self.moment - 0.005


class LocalPacer:
    """Slots `pace_interval(requests_per_second)` apart, kept in this process.
    With no rate, every slot is now."""

    def __init__(self, requests_per_second=None):
        self.interval = pace_interval(requests_per_second)
        self.next_slot = 0.0
        self.lock = threading.Lock()
        self.held = HeldUntil()

    def reserve(self, count):
        """Reserve `count` consecutive slots; return their start times as
        time.monotonic() values, in order."""
        with self.lock:
            first = max(self.next_slot, time.monotonic())
            self.next_slot = first + self.interval * count
        return [first + i * self.interval for i in range(count)]

    def wait(self):
        """Reserve one slot and sleep until it; a slot a hold has since covered
        is given up for a new one after the hold."""
        wait_for_slot(self)

    def hold(self, seconds):
        """Start no new request for `seconds`: the CRM said its quota is spent."""
        self.held.extend(seconds)
        with self.lock:
            self.next_slot = max(self.next_slot, time.monotonic() + seconds)


def wait_for_slot(pacer):
    """pacer.wait() for either pacer: one slot reserved, slept until, and
    reserved again while a hold placed meanwhile covers it."""
    slot = pacer.reserve(1)[0]
    wait_until(slot)
    while pacer.held.covers(slot):
        slot = pacer.reserve(1)[0]
        wait_until(slot)


def wait_until(moment):
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)
