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
from typing import NamedTuple

from django.db import connections, transaction
from django.db.models import F, Q
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
    # Set when staff paused the CRM: the pause lasts until someone resumes it.
    paused_by: str = ""

    def add(self, other):
        for name in ("claimed", "accepted", "retry_scheduled", "failed", "released", "discarded", "batches"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.paused_until or other.paused_by:
            self.paused_until, self.pause_reason, self.paused_by = other.paused_until, other.pause_reason, other.paused_by

    @property
    def contacts_per_second(self):
        return self.claimed / self.seconds if self.seconds else 0.0


class Pause(NamedTuple):
    until: object  # None for a staff pause, which lasts until resumed
    reason: str
    by: str = ""  # who paused it, for a staff pause


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
                pause = self.paused()
                if pause:
                    result.paused_until, result.pause_reason, result.paused_by = pause
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
        """Claim up to `limit` due rows (see claim_ids) and load them with their contacts."""
        token, ids = self.claim_ids(limit)
        # By primary key: the token has no index, and only guards against rows
        # that the compare-and-set left to another worker.
        claimed = ContactSync.objects.filter(pk__in=ids, claim_token=token).select_related("contact")
        return _Batch(token=token, rows=list(claimed) if ids else [])

    def claim_ids(self, limit):
        """Mark up to `limit` due rows Processing under a fresh token and lease, in
        one short transaction; return (token, ids).

        Rows whose lease expired (their worker died) come first; the lost attempt
        counts."""
        now = self.clock()
        token = uuid.uuid4()
        with transaction.atomic():
            ids = self._lock_due_ids(self._expired_leases(now).order_by("lease_expires_at"), limit)
            if len(ids) < limit:
                # Ordered by the partial index alone, so the scan stops at `limit`.
                due = self._due_queued(now).order_by("next_attempt_at")
                ids += self._lock_due_ids(due, limit - len(ids))
            if ids:
                self._claimable(ids, now).update(
                    processing_status=ProcessingStatus.PROCESSING,
                    attempts=F("attempts") + 1,
                    lease_expires_at=now + timedelta(seconds=self.policy.lease_seconds),
                    claim_token=token,
                    updated_at=now,
                )
        return token, ids

    def _claimable(self, ids, now):
        rows = ContactSync.objects.filter(pk__in=ids)
        if connections[rows.db].features.has_select_for_update_skip_locked:
            # Locked by us, and FOR UPDATE re-checked the due condition already.
            # Repeating it here would let the planner scan every due row.
            return rows
        # Without row locks (SQLite) the re-check makes the claim a compare-and-set.
        return rows.filter(self._due_condition(now))

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
            batch.items.append(SyncItem(key=row.pk, contact=row.contact, payload=payload, external_id=row.external_id))
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
            # Nothing will succeed until someone acts: pause every worker.
            pause = getattr(exc, "pause_seconds", None) or DEFAULT_UNAVAILABLE_PAUSE
            status = getattr(exc, "status_code", None)
            logger.error("crm=%s unavailable, pausing %d s: %s", self.crm, pause, exc)
            self.pause(self.clock() + timedelta(seconds=pause), str(exc))
            if getattr(exc, "fail_contacts", False):
                return [Outcome.permanent(item, str(exc), http_status=status) for item in items]
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
        with transaction.atomic():
            written = self._record_accepted(batch.token, accepted, payloads, now)
            written += self._record_retry(batch.token, retry, attempts_by_key, now)
            written += self._record_failed(batch.token, failed, attempts_by_key, now)
            written += self._record_released(batch.token, released, now)
            decided = {
                **{o.key: AttemptOutcome.ACCEPTED for o in accepted},
                **{o.key: AttemptOutcome.RETRY for o in retry},
                **{o.key: AttemptOutcome.WAITED for o in released},
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
            pause = self.paused() or Pause(until, released[0].message)
            result.paused_until, result.pause_reason, result.paused_by = pause

    def _record_accepted(self, token, outcomes, payloads, now):
        rows = {o.key: (o.external_id, payload_hash(payloads[o.key])) for o in outcomes}
        return _write_claimed(
            token,
            rows,
            # An accepted row without an id (n8n answers none) keeps the one it had.
            per_row={"external_id": "COALESCE(NULLIF({v}, ''), {column})", "synced_hash": "{v}"},
            fixed={
                "sync_status": SyncStatus.COMPLETE,
                "processing_status": ProcessingStatus.COMPLETE,
                "synced_at": now,
                "last_error": "",
                "next_attempt_at": None,
                "updated_at": now,
            },
        )

    def _record_retry(self, token, outcomes, attempts_by_key, now):
        rows = {
            o.key: (now + self.retry_delay(attempts_by_key[o.key], o.retry_after), _clip(o.message))
            for o in outcomes
        }
        return _write_claimed(
            token,
            rows,
            per_row={"next_attempt_at": "{v}", "last_error": "{v}"},
            fixed={
                "sync_status": SyncStatus.SELECTED,
                "processing_status": ProcessingStatus.QUEUED,
                "updated_at": now,
            },
        )

    def _record_failed(self, token, outcomes, attempts_by_key, now):
        rows = {o.key: (_clip(self._failure_message(o, attempts_by_key[o.key])),) for o in outcomes}
        return _write_claimed(
            token,
            rows,
            per_row={"last_error": "{v}"},
            fixed={
                "sync_status": SyncStatus.ERROR,
                "processing_status": ProcessingStatus.ERROR,
                "next_attempt_at": None,
                "updated_at": now,
            },
        )

    def _record_released(self, token, outcomes, now):
        """Back in the queue without using an attempt: waiting for a rate limit
        or for someone to fix the CRM's configuration is nobody's failure."""
        return _write_claimed(
            token,
            {o.key: (now + _wait(o),) for o in outcomes},
            per_row={"next_attempt_at": "{v}"},
            fixed={
                "sync_status": SyncStatus.SELECTED,
                "processing_status": ProcessingStatus.QUEUED,
                "attempts": _Sql("{column} - 1"),
                "updated_at": now,
            },
        )

    def _failure_message(self, outcome, attempts):
        if outcome.kind is OutcomeKind.RETRY:
            return "Gave up after %d attempts. Last error: %s %s" % (
                attempts,
                outcome.message.rstrip(".") + ".",
                'Once %s answers again, use "Retry failed syncs".' % self.backend.verbose_name,
            )
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
        """A Pause while the CRM is paused for every worker, else None. A staff pause
        wins over the CRM's own, since it lasts until someone resumes it."""
        state = (
            CRMState.objects.filter(crm=self.crm)
            .filter(Q(paused_at__isnull=False) | Q(paused_until__gt=self.clock()))
            .values_list("paused_until", "pause_reason", "paused_by", "paused_at")
            .first()
        )
        if state is None:
            return None
        until, reason, paused_by, paused_at = state
        if paused_at:
            return Pause(None, staff_pause_reason(paused_by, paused_at), paused_by)
        return Pause(until, reason)

    def pause(self, until, reason):
        """Pause the CRM until `until` unless it is already paused for longer."""
        ensure_crm_state(self.crm)
        CRMState.objects.filter(crm=self.crm).filter(
            Q(paused_until__isnull=True) | Q(paused_until__lt=until)
        ).update(paused_until=until, pause_reason=_clip(reason))
        logger.warning("crm=%s paused until %s: %s", self.crm, until.isoformat(), reason)

    def _note_run(self, result):
        now = self.clock()
        ensure_crm_state(self.crm)
        changes = {"last_run_at": now}
        if result.accepted:
            changes["last_success_at"] = now
        CRMState.objects.filter(crm=self.crm).update(**changes)


def ensure_crm_state(crm):
    CRMState.objects.bulk_create([CRMState(crm=crm)], ignore_conflicts=True)


def staff_pause_reason(paused_by, paused_at):
    return "Paused by %s at %s; resume it on the sync dashboard." % (
        paused_by,
        paused_at.astimezone(timezone.get_current_timezone()).strftime("%Y-%m-%d %H:%M %Z"),
    )


def pause_crm(crm, paused_by):
    """Staff pause: no worker claims anything for `crm` until resume_crm. Work already
    claimed finishes. Pausing a paused CRM keeps who paused it first, and when.
    Returns whether this call paused it."""
    now = timezone.now()
    ensure_crm_state(crm)
    paused = CRMState.objects.filter(crm=crm, paused_at__isnull=True).update(
        paused_at=now, paused_by=paused_by, updated_at=now
    )
    if paused:
        logger.warning("crm=%s paused by %s", crm, paused_by)
    return bool(paused)


def resume_crm(crm, resumed_by):
    """End a staff pause. A pause the CRM itself asked for (a rate limit, bad
    credentials) runs its course. Returns whether this call resumed it."""
    resumed = CRMState.objects.filter(crm=crm, paused_at__isnull=False).update(
        paused_at=None, paused_by="", updated_at=timezone.now()
    )
    if resumed:
        logger.warning("crm=%s resumed by %s", crm, resumed_by)
    return bool(resumed)


def _wait(outcome):
    seconds = outcome.retry_after if outcome.retry_after is not None else DEFAULT_RATE_LIMIT_WAIT
    return timedelta(seconds=max(0.0, float(seconds)))


class _Sql:
    """A SET expression written in SQL; `{column}` stands for the column's current value."""

    def __init__(self, template):
        self.template = template


def _write_claimed(token, rows, *, per_row, fixed):
    """UPDATE the rows still held under `token` in one statement: each row gets its
    own values from `rows` ({pk: (value, ...)}, in the order of `per_row`), all
    get `fixed`; lease and token are cleared. Returns how many rows were written.

    UPDATE ... FROM (VALUES ...) reads the same on PostgreSQL and SQLite (whose
    VALUES columns are both named column1, column2, ...), and costs far less to
    build than a CASE per row.
    """
    if not rows:
        return 0
    connection = connections[ContactSync.objects.db]
    quote = connection.ops.quote_name
    table = quote(ContactSync._meta.db_table)
    fixed = {**fixed, "lease_expires_at": None, "claim_token": None}

    def column_ref(name):
        return "%s.%s" % (table, quote(name))

    def prep(name, value):
        return ContactSync._meta.get_field(name).get_db_prep_value(value, connection)

    sets, set_params = [], []
    for position, (name, template) in enumerate(per_row.items(), start=2):
        sets.append("%s = %s" % (quote(name), template.format(v="v.column%d" % position, column=column_ref(name))))
    for name, value in fixed.items():
        if isinstance(value, _Sql):
            sets.append("%s = %s" % (quote(name), value.template.format(column=column_ref(name))))
        else:
            sets.append("%s = %%s" % quote(name))
            set_params.append(prep(name, value))
    row_sql = "(%s)" % ", ".join(["%s"] * (len(per_row) + 1))
    row_params = []
    for pk, values in rows.items():
        row_params += [pk, *(prep(name, value) for name, value in zip(per_row, values))]
    sql = (
        "UPDATE {table} SET {sets} FROM (VALUES {rows}) AS v "
        "WHERE {table}.{pk} = v.column1 AND {table}.claim_token = %s AND {table}.processing_status = %s"
    ).format(table=table, sets=", ".join(sets), rows=", ".join([row_sql] * len(rows)), pk=quote("id"))
    params = [*set_params, *row_params, prep("claim_token", token), ProcessingStatus.PROCESSING]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


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
