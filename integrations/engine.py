"""Claim -> push -> record: the worker side of the sync.

This module is the only place that changes sync state on behalf of the worker
(staff-side transitions live in contacts.selection). Work for one CRM is claimed
in a short transaction with row locks (PostgreSQL) or a compare-and-set update
(SQLite), pushed with no transaction open, and recorded in bulk, every write
guarded by the claim token so that a worker whose lease expired cannot overwrite
a newer result.
"""

import hashlib
import json
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import connections, transaction
from django.db.models import Case, CharField, DateTimeField, F, Q, TextField, Value, When
from django.utils import timezone

from contacts.models import AttemptOutcome, ContactSync, ProcessingStatus, SyncAttempt, SyncStatus

from .backends import get_enabled_backend_class
from .backends.base import Outcome, OutcomeKind, SyncItem
from .conf import SyncPolicy
from .exceptions import (
    CRMConfigurationError,
    CRMUnavailable,
    InvalidContact,
    PermanentError,
    RateLimited,
    RetryableError,
)
from .models import CRMState

logger = logging.getLogger(__name__)

DEFAULT_RATE_LIMIT_WAIT = 60
DEFAULT_UNAVAILABLE_PAUSE = 600
ERROR_MAX_LENGTH = 2000


@dataclass
class RunResult:
    crm: str
    claimed: int = 0
    accepted: int = 0
    retry_scheduled: int = 0
    failed: int = 0
    released: int = 0
    discarded: int = 0
    batches: int = 0
    seconds: float = 0.0
    paused_until: object = None
    pause_reason: str = ""

    def add(self, other):
        for name in ("claimed", "accepted", "retry_scheduled", "failed", "released", "discarded", "batches"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.paused_until:
            self.paused_until, self.pause_reason = other.paused_until, other.pause_reason

    @property
    def contacts_per_second(self):
        return self.claimed / self.seconds if self.seconds else 0.0


@dataclass
class _Batch:
    token: uuid.UUID
    rows: list
    items: list = field(default_factory=list)
    outcomes: list = field(default_factory=list)
    duration_ms: int = 0


def payload_hash(payload):
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def run(crm, *, budget_seconds=None, max_contacts=None, batch_size=None):
    """Sync due contacts for one configured CRM; see SyncEngine.run."""
    backend = get_enabled_backend_class(crm)()
    return SyncEngine(backend).run(
        budget_seconds=budget_seconds, max_contacts=max_contacts, batch_size=batch_size
    )


class SyncEngine:
    def __init__(self, backend, policy=None, *, clock=timezone.now, rng=None):
        self.backend = backend
        self.crm = backend.name
        self.policy = policy or SyncPolicy.for_backend(type(backend))
        self.clock = clock
        self.rng = rng or random.Random()

    # The loop

    def run(self, *, budget_seconds=None, max_contacts=None, batch_size=None, on_batch=None):
        """Claim, push and record batches until nothing is due, the budget of
        seconds or contacts is spent, or the CRM is paused."""
        result = RunResult(self.crm)
        started = time.monotonic()
        try:
            while budget_seconds is None or time.monotonic() - started < budget_seconds:
                paused = self.paused()
                if paused:
                    result.paused_until, result.pause_reason = paused
                    break
                limit = batch_size or self.policy.batch_size
                if max_contacts is not None:
                    limit = min(limit, max_contacts - result.claimed)
                if limit <= 0:
                    break
                batch = self.run_batch(limit)
                result.add(batch)
                if on_batch:
                    on_batch(batch)
                if not batch.claimed or batch.paused_until:
                    break
        finally:
            self.backend.close()
            result.seconds = time.monotonic() - started
            self._note_run(result)
        return result

    def run_batch(self, limit):
        """One claim -> push -> record cycle of at most `limit` contacts."""
        started = time.monotonic()
        batch = self.claim(limit)
        result = RunResult(self.crm)
        if not batch.rows:
            return result
        self.push(batch)
        self.record(batch, result)
        result.claimed, result.batches = len(batch.rows), 1
        result.seconds = time.monotonic() - started
        logger.info(
            "crm=%s claimed=%d accepted=%d retry_scheduled=%d failed=%d released=%d seconds=%.2f",
            self.crm,
            result.claimed,
            result.accepted,
            result.retry_scheduled,
            result.failed,
            result.released,
            result.seconds,
        )
        return result

    # Claim

    def claim(self, limit):
        """Mark up to `limit` due rows Processing under a fresh token and lease.

        Rows whose lease expired (their worker died) come first; the lost attempt
        counts. The lock is held only for this short transaction."""
        now = self.clock()
        token = uuid.uuid4()
        with transaction.atomic():
            ids = self._lock_due_ids(self._expired_leases(now).order_by("lease_expires_at"), limit)
            if len(ids) < limit:
                due = self._due_queued(now).order_by("next_attempt_at", "pk")
                ids += self._lock_due_ids(due, limit - len(ids))
            if ids:
                # The re-check of the due condition makes this a compare-and-set
                # where row locks do not exist (SQLite).
                self._crm_rows().filter(pk__in=ids).filter(self._due_condition(now)).update(
                    processing_status=ProcessingStatus.PROCESSING,
                    attempts=F("attempts") + 1,
                    lease_expires_at=now + timedelta(seconds=self.policy.lease_seconds),
                    claim_token=token,
                    updated_at=now,
                )
        rows = list(ContactSync.objects.filter(claim_token=token).select_related("contact")) if ids else []
        return _Batch(token=token, rows=rows)

    def _crm_rows(self):
        return ContactSync.objects.filter(crm=self.crm)

    def _due_queued(self, now):
        return self._crm_rows().filter(processing_status=ProcessingStatus.QUEUED, next_attempt_at__lte=now)

    def _expired_leases(self, now):
        return self._crm_rows().filter(processing_status=ProcessingStatus.PROCESSING, lease_expires_at__lt=now)

    @staticmethod
    def _due_condition(now):
        return Q(processing_status=ProcessingStatus.QUEUED, next_attempt_at__lte=now) | Q(
            processing_status=ProcessingStatus.PROCESSING, lease_expires_at__lt=now
        )

    @staticmethod
    def _lock_due_ids(queryset, limit):
        # A plain SELECT ... LIMIT n FOR UPDATE SKIP LOCKED locks only the rows it
        # returns; nesting it in the UPDATE could let the planner lock more.
        locked = queryset.select_for_update(skip_locked=True, of=("self",), no_key=True)
        return list(locked.values_list("pk", flat=True)[:limit])

    # Push

    def push(self, batch):
        """Build payloads and push them with no transaction open. A row that used up
        its attempts on a lost lease is not pushed again."""
        for row in batch.rows:
            item = SyncItem(key=row.pk, contact=row.contact, payload=None)
            if row.attempts > self.policy.max_attempts:
                batch.outcomes.append(
                    Outcome.permanent(
                        item,
                        "Gave up after %d attempts: the last one did not finish (its worker "
                        "stopped before the lease ran out)." % self.policy.max_attempts,
                    )
                )
                continue
            try:
                payload = self.backend.build_payload(row.contact)
            except InvalidContact as exc:
                batch.outcomes.append(Outcome.permanent(item, exc.message))
                continue
            except Exception:
                logger.exception("crm=%s building the payload of contact %s failed", self.crm, row.contact_id)
                batch.outcomes.append(Outcome.retry(item, self._unexpected_error_message()))
                continue
            batch.items.append(SyncItem(key=row.pk, contact=row.contact, payload=payload))
        if batch.items:
            started = time.monotonic()
            batch.outcomes += self._call_backend(batch.items)
            batch.duration_ms = int((time.monotonic() - started) * 1000)

    def _call_backend(self, items):
        try:
            outcomes = self.backend.push(items)
        except RateLimited as exc:
            return [Outcome.rate_limited(item, str(exc), retry_after=exc.retry_after) for item in items]
        except (CRMUnavailable, CRMConfigurationError) as exc:
            # Nothing will succeed until someone acts: pause, spend no attempt.
            pause = getattr(exc, "pause_seconds", None) or DEFAULT_UNAVAILABLE_PAUSE
            status = getattr(exc, "status_code", None)
            return [Outcome.rate_limited(item, str(exc), retry_after=pause, http_status=status) for item in items]
        except RetryableError as exc:
            return [
                Outcome.retry(item, str(exc), retry_after=exc.retry_after, http_status=exc.status_code)
                for item in items
            ]
        except PermanentError as exc:
            return [Outcome.permanent(item, str(exc), http_status=exc.status_code) for item in items]
        except Exception:
            logger.exception("crm=%s the backend failed unexpectedly", self.crm)
            return [Outcome.retry(item, self._unexpected_error_message()) for item in items]
        return self._one_outcome_per_item(items, outcomes)

    def _unexpected_error_message(self):
        # The exception's own text may hold anything, secrets included; it goes to the log only.
        return "Unexpected error in the %s backend; see the worker log." % self.backend.verbose_name

    def _one_outcome_per_item(self, items, outcomes):
        by_key = {outcome.key: outcome for outcome in outcomes}
        missing = [item for item in items if item.key not in by_key]
        if missing:
            logger.error("crm=%s the backend returned no outcome for %d contacts", self.crm, len(missing))
        message = "The %s backend reported no result for this contact." % self.backend.verbose_name
        return [by_key.get(item.key) or Outcome.retry(item, message) for item in items]

    # Record

    def record(self, batch, result):
        """Write every outcome in bulk, each write guarded by the batch's token."""
        now = self.clock()
        attempts_by_key = {row.pk: row.attempts for row in batch.rows}
        payloads = {item.key: item.payload for item in batch.items}
        accepted, retry, failed, released = [], [], [], []
        for outcome in batch.outcomes:
            if outcome.kind is OutcomeKind.ACCEPTED:
                accepted.append(outcome)
            elif outcome.kind is OutcomeKind.RATE_LIMITED:
                released.append(outcome)
            elif outcome.kind is OutcomeKind.RETRY and attempts_by_key[outcome.key] < self.policy.max_attempts:
                retry.append(outcome)
            else:
                failed.append(outcome)
        guard = ContactSync.objects.filter(claim_token=batch.token, processing_status=ProcessingStatus.PROCESSING)
        with transaction.atomic():
            written = self._record_accepted(guard, accepted, payloads, now)
            written += self._record_retry(guard, retry, attempts_by_key, now)
            written += self._record_failed(guard, failed, attempts_by_key, now)
            written += self._record_released(guard, released, now)
            decided = {
                **{o.key: AttemptOutcome.ACCEPTED for o in accepted},
                **{o.key: AttemptOutcome.RETRY for o in retry + released},
                **{o.key: AttemptOutcome.FAILED for o in failed},
            }
            SyncAttempt.objects.bulk_create(self._attempt_rows(batch, decided, now))
        result.accepted, result.retry_scheduled = len(accepted), len(retry)
        result.failed, result.released = len(failed), len(released)
        result.discarded = len(batch.outcomes) - written
        if result.discarded:
            logger.warning(
                "crm=%s %d results arrived after their lease expired and were discarded",
                self.crm,
                result.discarded,
            )
        if released:
            until = now + max(_wait(o) for o in released)
            self.pause(until, released[0].message)
            result.paused_until, result.pause_reason = self.paused() or (until, released[0].message)

    def _record_accepted(self, guard, outcomes, payloads, now):
        if not outcomes:
            return 0
        keys = [o.key for o in outcomes]
        with_ids = [o for o in outcomes if o.external_id]
        return guard.filter(pk__in=keys).update(
            sync_status=SyncStatus.COMPLETE,
            processing_status=ProcessingStatus.COMPLETE,
            external_id=_per_row({o.key: o.external_id for o in with_ids}, CharField(), F("external_id")),
            synced_hash=_per_row({k: payload_hash(payloads[k]) for k in keys}, CharField()),
            synced_at=now,
            last_error="",
            next_attempt_at=None,
            lease_expires_at=None,
            claim_token=None,
            updated_at=now,
        )

    def _record_retry(self, guard, outcomes, attempts_by_key, now):
        if not outcomes:
            return 0
        next_at = {o.key: now + self.retry_delay(attempts_by_key[o.key], o.retry_after) for o in outcomes}
        return guard.filter(pk__in=list(next_at)).update(
            sync_status=SyncStatus.SELECTED,
            processing_status=ProcessingStatus.QUEUED,
            next_attempt_at=_per_row(next_at, DateTimeField()),
            last_error=_per_row({o.key: _clip(o.message) for o in outcomes}, TextField()),
            lease_expires_at=None,
            claim_token=None,
            updated_at=now,
        )

    def _record_failed(self, guard, outcomes, attempts_by_key, now):
        if not outcomes:
            return 0
        messages = {o.key: _clip(self._failure_message(o, attempts_by_key[o.key])) for o in outcomes}
        return guard.filter(pk__in=list(messages)).update(
            sync_status=SyncStatus.ERROR,
            processing_status=ProcessingStatus.ERROR,
            last_error=_per_row(messages, TextField()),
            next_attempt_at=None,
            lease_expires_at=None,
            claim_token=None,
            updated_at=now,
        )

    def _record_released(self, guard, outcomes, now):
        """Back in the queue without using an attempt: waiting for a rate limit
        or for someone to fix the CRM's configuration is nobody's failure."""
        if not outcomes:
            return 0
        next_at = {o.key: now + _wait(o) for o in outcomes}
        return guard.filter(pk__in=list(next_at)).update(
            sync_status=SyncStatus.SELECTED,
            processing_status=ProcessingStatus.QUEUED,
            attempts=F("attempts") - 1,
            next_attempt_at=_per_row(next_at, DateTimeField()),
            lease_expires_at=None,
            claim_token=None,
            updated_at=now,
        )

    def _failure_message(self, outcome, attempts):
        if outcome.kind is OutcomeKind.RETRY:
            return "Gave up after %d attempts. Last error: %s" % (attempts, outcome.message)
        return outcome.message

    def _attempt_rows(self, batch, decided, now):
        contacts = {row.pk: row.contact_id for row in batch.rows}
        return [
            SyncAttempt(
                contact_id=contacts[o.key],
                crm=self.crm,
                attempted_at=now,
                outcome=decided[o.key],
                http_status=o.http_status,
                duration_ms=batch.duration_ms,
                error=_clip(o.message),
            )
            for o in batch.outcomes
        ]

    def retry_delay(self, attempts, retry_after=None):
        """The CRM's Retry-After wins; otherwise exponential back-off from the base
        delay with full jitter, capped."""
        if retry_after is not None:
            return timedelta(seconds=max(0.0, float(retry_after)))
        base = self.policy.retry_delay_minutes * 60
        ceiling = base * 2 ** (attempts - 1) if self.policy.retry_exponential else base
        ceiling = min(ceiling, self.policy.retry_max_delay_minutes * 60)
        return timedelta(seconds=self.rng.uniform(0, ceiling))

    # The CRM's shared state

    def paused(self):
        """(until, reason) while the CRM is paused for every worker, else None."""
        return (
            CRMState.objects.filter(crm=self.crm, paused_until__gt=self.clock())
            .values_list("paused_until", "pause_reason")
            .first()
        )

    def pause(self, until, reason):
        """Pause the CRM until `until` unless it is already paused for longer."""
        self._ensure_state()
        CRMState.objects.filter(crm=self.crm).filter(
            Q(paused_until__isnull=True) | Q(paused_until__lt=until)
        ).update(paused_until=until, pause_reason=_clip(reason))
        logger.warning("crm=%s paused until %s: %s", self.crm, until.isoformat(), reason)

    def _ensure_state(self):
        CRMState.objects.bulk_create([CRMState(crm=self.crm)], ignore_conflicts=True)

    def _note_run(self, result):
        now = self.clock()
        self._ensure_state()
        changes = {"last_run_at": now}
        if result.accepted:
            changes["last_success_at"] = now
        CRMState.objects.filter(crm=self.crm).update(**changes)


def _wait(outcome):
    seconds = outcome.retry_after if outcome.retry_after is not None else DEFAULT_RATE_LIMIT_WAIT
    return timedelta(seconds=max(0.0, float(seconds)))


def _per_row(values_by_pk, output_field, default=None):
    """A CASE expression giving each row its own value in a single UPDATE."""
    if not values_by_pk:
        return default
    whens = [When(pk=pk, then=Value(value, output_field=output_field)) for pk, value in values_by_pk.items()]
    return Case(*whens, default=default, output_field=output_field)


def _clip(message):
    message = message or ""
    return message if len(message) <= ERROR_MAX_LENGTH else message[: ERROR_MAX_LENGTH - 1] + "…"


def run_workers(backend_class, workers=1, *, engine_options=None, **run_options):
    """Run `workers` claim loops for one CRM side by side and add up their results.

    Each loop has its own thread, backend and database connection; SKIP LOCKED
    (or the compare-and-set claim on SQLite) keeps them from taking the same rows.
    """
    engine_options = engine_options or {}
    if workers <= 1:
        return SyncEngine(backend_class(), **engine_options).run(**run_options)
    results, errors = [], []

    def loop():
        try:
            results.append(SyncEngine(backend_class(), **engine_options).run(**run_options))
        except Exception as exc:
            logger.exception("crm=%s a claim loop failed", backend_class.name)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=loop, name="crmsync-%s-%d" % (backend_class.name, i)) for i in range(workers)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    total = RunResult(backend_class.name)
    for result in results:
        total.add(result)
    total.seconds = time.monotonic() - started
    return total
