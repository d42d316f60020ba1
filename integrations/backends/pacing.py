"""Request pacing as a backend sees it: slots to start requests in.

A backend asks its `pacer` for slots and waits for them; it never knows where
the pace is kept. By default that is this process (`LocalPacer`), which is all a
unit test or a one-off command needs. The engine replaces it with a pacer shared
by every worker on every machine (integrations.ratelimit.SharedPacer), which has
the same three methods.
"""

import threading
import time


class LocalPacer:
    """Slots `1 / requests_per_second` apart, kept in this process. With no rate,
    every slot is now."""

    def __init__(self, requests_per_second=None):
        self.interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self.next_slot = 0.0
        self.lock = threading.Lock()

    def reserve(self, count):
        """Reserve `count` consecutive slots; return their start times as
        time.monotonic() values, in order."""
        with self.lock:
            first = max(self.next_slot, time.monotonic())
            self.next_slot = first + self.interval * count
        return [first + i * self.interval for i in range(count)]

    def wait(self):
        """Reserve one slot and sleep until it."""
        wait_until(self.reserve(1)[0])

    def hold(self, seconds):
        """Start no new request for `seconds`: the CRM said its quota is spent."""
        with self.lock:
            self.next_slot = max(self.next_slot, time.monotonic() + seconds)


def wait_until(moment):
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)
