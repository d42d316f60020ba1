"""The circuit breaker: when a CRM fails for everyone, workers stop pushing to it
and one of them probes it now and then, until it answers again."""

import enum
import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import Q

from contacts.models import ContactSync

from . import alerts
from .models import CRMState

logger = logging.getLogger(__name__)


class Verdict(enum.Enum):
    """What one batch says about its CRM as a whole (engine.SyncEngine._verdict)."""

    UP = "up"
    FAILING = "failing"


class Breaker:
    """The circuit breaker of one CRM, shared by every worker on every machine
    through the CRM's CRMState row (rules and defaults: conf.BreakerPolicy).

    Closed, batches count their verdicts: `failures` failing batches in a row open
    it. Open (next_probe_at set), no worker claims until next_probe_at; then one
    worker takes the probe, claims a small batch and pushes it. A contact accepted
    closes the breaker, and the contacts that waited are due at once; a failing
    probe doubles the wait, up to the cap. Contacts of the batches judged CRM-wide
    (the one that opens it, any recorded while it is open, failing probes) are
    recorded as waited for the CRM and keep their attempts.
    """

    def __init__(self, crm, policy, clock):
        self.crm = crm
        self.rules = policy.breaker
        self.lease_seconds = policy.lease_seconds
        self.clock = clock

    def _state(self):
        return CRMState.objects.filter(crm=self.crm)

    def take_probe(self):
        """Whether this worker may probe now; nobody else may until it records (or
        its lease, or the longest probe interval, has passed: it died)."""
        now = self.clock()
        hold = now + timedelta(seconds=max(self.rules.probe_max_seconds, self.lease_seconds))
        return bool(self._state().filter(next_probe_at__lte=now).update(next_probe_at=hold))

    def probe_found_nothing(self):
        """Nothing was due to probe with: the next worker with due contacts probes."""
        self._state().filter(next_probe_at__isnull=False).update(next_probe_at=self.clock())

    def note_batch(self, verdict, *, probe):
        """Count a batch's verdict. Returns the next probe time while the breaker is
        open (the batch's CRM-side failures then wait for the CRM), else None."""
        if verdict is None and not probe:
            return None
        if verdict is Verdict.UP and not probe:
            # The common case, kept to one read: nothing failing, nothing to reset.
            failing = Q(failed_batches__gt=0) | Q(next_probe_at__isnull=False)
            if not self._state().filter(failing).exists():
                return None
        now = self.clock()
        CRMState.objects.ensure(self.crm)
        with transaction.atomic():
            state = CRMState.objects.select_for_update().get(crm=self.crm)
            was_open = state.next_probe_at is not None
            if verdict is Verdict.UP:
                if state.failed_batches or was_open:
                    self._close(state, now, was_open)
                return None
            if verdict is Verdict.FAILING:
                if not state.failed_batches:
                    state.failing_since = now
                state.failed_batches += 1
                if probe and was_open:
                    self._schedule_probe(state, now, self.rules.next_interval(state.probe_interval_seconds))
                elif not was_open and state.failed_batches >= self.rules.failures:
                    self._schedule_probe(state, now, self.rules.next_interval(0))
                    logger.error(
                        "crm=%s circuit breaker open: %d batches in a row failed on the CRM's side since %s; "
                        "next probe at %s",
                        self.crm,
                        state.failed_batches,
                        state.failing_since.isoformat(),
                        state.next_probe_at.isoformat(),
                    )
                    # Sent once this transaction commits; the row lock makes this worker the one that opened it.
                    alerts.breaker_opened(self.crm, state.failed_batches, state.failing_since, state.next_probe_at, now)
            elif probe and was_open:
                # A probe that showed nothing either way tries again after the same wait.
                self._schedule_probe(state, now, state.probe_interval_seconds or self.rules.probe_seconds)
            state.save(
                update_fields=[
                    "failed_batches",
                    "failing_since",
                    "next_probe_at",
                    "probe_interval_seconds",
                    "updated_at",
                ]
            )
            return state.next_probe_at

    @staticmethod
    def _schedule_probe(state, now, interval):
        state.probe_interval_seconds = interval
        state.next_probe_at = now + timedelta(seconds=interval)

    def _close(self, state, now, was_open):
        failing_since = state.failing_since
        state.failed_batches, state.failing_since, state.next_probe_at, state.probe_interval_seconds = 0, None, None, 0
        state.save(
            update_fields=["failed_batches", "failing_since", "next_probe_at", "probe_interval_seconds", "updated_at"]
        )
        if not was_open:
            return
        # Drain at full speed: the contacts whose retry the outage pushed back are due now.
        drained = (
            ContactSync.objects.for_crm(self.crm)
            .queued()
            .filter(next_attempt_at__gt=now, updated_at__gte=failing_since)
            .update(next_attempt_at=now)
        )
        logger.warning(
            "crm=%s circuit breaker closed: the CRM answers again (failing since %s); %d delayed contacts due now",
            self.crm,
            failing_since.isoformat() if failing_since else "?",
            drained,
        )
        alerts.breaker_closed(self.crm, drained, now)
