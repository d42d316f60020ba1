"""Request pacing as a backend sees it: slots to start requests in.

A backend asks its `pacer` for a slot just before each request and waits for it;
it never knows where the pace is kept. By default that is this process
(`LocalPacer`), which is all a unit test or a one-off command needs. The engine
replaces it with a pacer shared by every worker on every machine
(integrations.ratelimit.SharedPacer), which has the same three methods:
reserve(count), wait() and hold(seconds); each also keeps the `tally` of requests
sent (RequestTally) that the backend notes.

Both pace a little below the CRM's documented limit (PACE_SHARE): a limiter that
allows at most N requests in any window of T seconds refuses the N+1st as soon as
network or scheduling jitter brings two requests N apart closer than T. Pacing at
97% leaves 3% of T (30 ms for a one-second window) for that jitter.

The pace is the documented window itself (SlotWindow): at most N slots in any
T / PACE_SHARE seconds (N - 1 for a window of many requests), not one slot every
T / N. A worker that paused between two
batches (claiming, recording) has left slots of the window unused; it may use them
when it comes back, at up to BURST times the average rate, so that the time between
batches is not lost. That is still within every limiter model the sandbox offers: a
sliding window of N per T, fixed windows (each inside a sliding one) and a bucket of
N tokens refilled at N / T (N in any T is what it lets through).
"""

import threading
import time

# The share of the documented limit crmsync paces at; see the module docstring.
PACE_SHARE = 0.97
# How much faster than the average rate a pacer may catch up on unused slots.
BURST = 2
# Slots in a row a request may give up because its thread woke too late for them.
LATE_SLOTS_GIVEN_UP = 3


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


class RequestTally:
    """Requests a backend sent, and answers of 429 among them, that are not yet in
    the CRM's totals in the database (CRMState.requests_sent, rate_limited_responses):
    the shared pacer adds them in the update that reserves its next slot, the engine
    the rest when its run ends."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = self.rate_limited = 0

    def note_request(self):
        with self.lock:
            self.sent += 1

    def note_rate_limited(self):
        with self.lock:
            self.rate_limited += 1

    def take(self):
        """(sent, rate limited) noted since the last take, now cleared."""
        with self.lock:
            counts = (self.sent, self.rate_limited)
            self.sent = self.rate_limited = 0
        return counts

    def give_back(self, sent, rate_limited):
        """Counts taken for a write that failed, kept for the next one."""
        with self.lock:
            self.sent += sent
            self.rate_limited += rate_limited


class SlotWindow:
    """The rule for the next request slot: at most `limit` (N, or N - 1 for a window
    of many) in any `span` (T / PACE_SHARE), at least `min_gap` apart, never before
    a hold ends. It works on the times of the last `limit` slots, in any one
    clock."""

    def __init__(self, requests_per_second, window_seconds=1.0):
        self.interval = pace_interval(requests_per_second)
        documented = max(1, round((requests_per_second or 0) * window_seconds))
        # The margin is kept in time: N slots in T / PACE_SHARE, which leaves room
        # for jitter whatever N is. A window of many requests (HubSpot's 100 in
        # 10 s) also leaves one request of it, so that the CRM's own count never
        # reaches its limit because of crmsync alone (HubSpot's Remaining: 0 holds
        # every worker for a window).
        self.limit = documented - 1 if documented * (1 - PACE_SHARE) >= 1 else documented
        self.window_seconds = window_seconds
        self.span = window_seconds / PACE_SHARE
        self.min_gap = self.interval / BURST

    def too_late(self, slot, now):
        """Whether a request woken at `now` for `slot` must not be sent: the window
        counted it at `slot`, so the request N slots later may go a window after
        `slot`, and a limiter would count the two closer than its window by the
        lateness. Half the margin (T / PACE_SHARE - T) is left to network jitter; the
        lateness seen (a thread descheduled on a busy machine, a slow commit) has
        the other half. Giving a slot up costs one slot of the window; a 429 costs
        a hold of the CRM's reset (Brevo's is a whole second)."""
        return bool(self.interval) and now - slot > (self.span - self.window_seconds) / 2

    def take(self, now, not_before, recent):
        """(the next slot, the recent slots with it), from `recent` (ascending)."""
        slot = max(now, not_before)
        if not self.interval:  # no pace, only holds
            return slot, recent
        if recent:
            slot = max(slot, recent[-1] + self.min_gap)
        if len(recent) >= self.limit:
            slot = max(slot, recent[-self.limit] + self.span)
        return slot, [*recent[max(0, len(recent) - self.limit + 1) :], slot]


class LocalPacer:
    """Slots within the CRM's window (SlotWindow), kept in this process. With no
    rate, every slot is now."""

    def __init__(self, requests_per_second=None, window_seconds=1.0):
        self.window = SlotWindow(requests_per_second, window_seconds)
        self.interval = self.window.interval
        self.recent, self.not_before = [], 0.0
        self.lock = threading.Lock()
        self.held = HeldUntil()
        self.tally = RequestTally()

    def reserve(self, count):
        """Reserve `count` consecutive slots; return their start times as
        time.monotonic() values, in order."""
        slots = []
        with self.lock:
            for _ in range(count):
                slot, self.recent = self.window.take(time.monotonic(), self.not_before, self.recent)
                slots.append(slot)
        return slots

    def wait(self):
        """Reserve one slot and sleep until it; a slot a hold has since covered
        is given up for a new one after the hold."""
        wait_for_slot(self)

    def hold(self, seconds):
        """Start no new request for `seconds`: the CRM said its quota is spent."""
        self.held.extend(seconds)
        with self.lock:
            self.not_before = max(self.not_before, time.monotonic() + seconds)


def wait_for_slot(pacer):
    """pacer.wait() for either pacer: one slot reserved, slept until, and
    reserved again while a hold placed meanwhile covers it, or when this thread
    woke too late for it (SlotWindow.too_late), at most LATE_SLOTS_GIVEN_UP times
    in a row: on a machine that late for every slot, the request goes anyway."""
    late = 0
    while True:
        slot = pacer.reserve(1)[0]
        wait_until(slot)
        if pacer.held.covers(slot):
            continue
        if late < LATE_SLOTS_GIVEN_UP and pacer.window.too_late(slot, time.monotonic()):
            late += 1
            continue
        return


def wait_until(moment):
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)
