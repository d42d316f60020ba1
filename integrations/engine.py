"""Claim -> push -> record: the worker side of the sync.

This module (with the breaker and lease keeper beside it) is the only place that
changes sync state on behalf of the worker (staff-side transitions live in
contacts.selection). Work for one CRM is claimed
in a short transaction with row locks (PostgreSQL) or a compare-and-set update
(SQLite), pushed with no transaction open, and recorded in bulk, every write
guarded by the claim token so that a worker whose lease expired cannot overwrite
a newer result.

Beside it: breaker.py (the circuit breaker), leases.py (a batch's lease kept while
it is pushed), workers.py (claim loops side by side, and draining a queue). The
questions asked of the rows are ContactSync's QuerySet methods, and whether a CRM
is paused is decided by CRMState's manager.
"""

import functools
import hashlib
import json
import logging
import random
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import NamedTuple

from django.db import connections, transaction
from django.db.models import F
from django.utils import timezone

from contacts import erasure
from contacts.bulk import Sql, insert_from_values, update_from_values
from contacts.emails import canonical_email
from contacts.models import (
    AttemptOutcome,
    Contact,
    ContactSync,
    Operation,
    PendingDecision,
    ProcessingStatus,
    SyncAttempt,
    SyncStatus,
)

from . import alerts, claiming
from .backends.base import Outcome, OutcomeKind, SyncItem
from .breaker import Breaker, Verdict
from .conf import SyncPolicy
from .exceptions import (
    CRMConfigurationError,
    CRMUnavailable,
    InvalidContact,
    PermanentError,
    RateLimited,
    RetryableError,
)
from .imports import lend_import_ledger
from .leases import LEASE_RENEWALS_PER_LEASE, LeaseRenewal
from .mappings import use_mapping
from .models import PAUSE_LOG_MARK, CRMState, Pause, clip
from .overlap import ClaimAhead, RecordBehind
from .push_histogram import merged as merged_push_durations
from .push_histogram import observe as observe_push
from .ratelimit import share_pace
from .registry import get_enabled_backend_class

logger = logging.getLogger(__name__)

DEFAULT_RATE_LIMIT_WAIT = 60
DEFAULT_UNAVAILABLE_PAUSE = 600
# A batch says the CRM as a whole fails only when it failed for several contacts.
MIN_CONTACTS_FOR_FAILING_VERDICT = 2
# A contact's row as values, its primary key first: what a payload is built from.
CONTACT_ATTNAMES = tuple(f.attname for f in Contact._meta.concrete_fields)


@dataclass
class RunResult:
    crm: str
    claimed: int = 0
    accepted: int = 0
    retry_scheduled: int = 0
    failed: int = 0
    waited: int = 0
    # The CRM had no record to update and none was created (id gone, update_only).
    not_in_crm: int = 0
    discarded: int = 0
    # Results of contacts deleted while they were pushed: dropped with their rows.
    deleted: int = 0
    batches: int = 0
    seconds: float = 0.0
    paused_until: object = None
    pause_reason: str = ""
    # Set when staff paused the CRM: the pause lasts until someone resumes it.
    paused_by: str = ""
    # Each batch's push time, in integrations.push_histogram's buckets.
    push_durations: dict = field(default_factory=dict)

    def add(self, other):
        for name in (
            "claimed",
            "accepted",
            "retry_scheduled",
            "failed",
            "waited",
            "not_in_crm",
            "discarded",
            "deleted",
            "batches",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.push_durations = merged_push_durations(self.push_durations, other.push_durations)
        if other.paused_until or other.paused_by:
            self.paused_until, self.pause_reason, self.paused_by = (
                other.paused_until,
                other.pause_reason,
                other.paused_by,
            )

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
    # Keys whose retry the engine made up (a crash in our code, a missing result):
    # not the CRM's failure, so the circuit breaker ignores them.
    unexplained: set = field(default_factory=set)
    probe: bool = False
    # {contact pk: its row version when claimed}, PostgreSQL only: an edit during
    # the push changes it (claiming.row_version).
    contact_versions: dict | None = None
    # Keys of the rows whose lease had expired (their worker died): push() may give up on them.
    reclaimed: set = field(default_factory=set)
    # time.monotonic() of the claim: a batch claimed ahead must still have most of its lease.
    claimed_at: float = field(default_factory=time.monotonic)

    @functools.cached_property
    def by_key(self):
        """{key: row}: the batch's rows by primary key, built once (rows never change)."""
        return {row.pk: row for row in self.rows}

    def asked_to_wait(self):
        """Whether the CRM asked to wait (a rate limit, an outage) for any of the batch."""
        return any(outcome.kind is OutcomeKind.WAIT for outcome in self.outcomes)


class Written(NamedTuple):
    """A row as a record's write left it: what the steps after the write act on,
    read without another query (the row stays locked until the record commits)."""

    pending_decision: str
    contact_id: int | None
    erasure_id: int | None


# One encoder for every hash: json.dumps with these options builds a new one per call.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def payload_hash(payload):
    return hashlib.sha256(_CANONICAL_JSON.encode(payload).encode()).hexdigest()


def run(crm, *, budget_seconds=None, max_contacts=None, batch_size=None):
    """Sync due contacts for one configured CRM; see SyncEngine.run."""
    backend = get_enabled_backend_class(crm)()
    return SyncEngine(backend).run(budget_seconds=budget_seconds, max_contacts=max_contacts, batch_size=batch_size)


class SyncEngine:
    def __init__(self, backend, policy=None, *, clock=timezone.now, rng=None):
        self.backend = backend
        self.crm = backend.name
        self.policy = policy or SyncPolicy.for_backend(type(backend))
        self.clock = clock
        self.rng = rng or random.Random()
        self.breaker = Breaker(self.crm, self.policy, clock)
        self._compiled_claim = {}  # the claim's SELECTs, compiled once (claiming.claim)
        # The last batch's push and record, in seconds: whether the CRM keeps a push
        # waiting longer than a record takes (_crm_outlasts_record).
        self._last_push_seconds = self._last_record_seconds = None
        # The engine owns the pacing between workers: the backend only waits for
        # the slots its pacer hands out.
        share_pace(backend)
        if not hasattr(backend, "stop_sending"):  # an extra backend that skipped CRMBackend.__init__
            backend.stop_sending = threading.Event()

    # The loop

    def run(self, *, budget_seconds=None, max_contacts=None, batch_size=None, on_batch=None):
        """Claim, push and record batches until nothing is due, the budget of
        seconds or contacts is spent, or the CRM is paused (by staff, by the CRM, or
        by the circuit breaker between two probes)."""
        result = RunResult(self.crm)
        started = time.monotonic()
        use_mapping(self.backend)  # the staff mapping as it is when the run starts
        ahead, behind = ClaimAhead.for_engine(self), RecordBehind.for_engine(self)
        recording = None  # the result of the batch being recorded behind

        def add(batch):
            result.add(batch)
            if on_batch:
                on_batch(batch)

        try:
            while budget_seconds is None or time.monotonic() - started < budget_seconds:
                pause, probe = self._pause_and_breaker()
                if pause:
                    result.paused_until, result.pause_reason, result.paused_by = pause
                    break
                claimed = result.claimed + (recording.claimed if recording else 0)
                limit = self._next_limit(batch_size, max_contacts, claimed)
                if limit <= 0:
                    break
                if probe and not self.breaker.take_probe():
                    continue  # another worker probes; paused() now says until when
                room = None if max_contacts is None else max_contacts - claimed - limit
                batch = self.run_batch(
                    min(limit, self.policy.breaker.probe_contacts) if probe else limit,
                    probe=probe,
                    claimed=self._claimed_ahead(ahead, limit, probe),
                    claim_next=None if probe or not ahead else functools.partial(self._claim_next, ahead, limit, room),
                    behind=behind,
                )
                if recording is not None:
                    behind.wait()  # done already, unless this batch claimed nothing
                    add(recording)
                recording = batch if behind and behind.holds(batch) else None
                if recording is None:
                    add(batch)
                if not batch.claimed or batch.paused_until:
                    break
            if recording is not None:
                behind.wait()
                add(recording)
        finally:
            self._end_run(result, started, ahead, behind)
        return result

    def _next_limit(self, batch_size, max_contacts, claimed):
        """The next batch's size: the one asked for, else the CRM's (claim_size),
        within what is left of the run's contacts."""
        limit = batch_size or self.claim_size()
        return limit if max_contacts is None else min(limit, max_contacts - claimed)

    def _end_run(self, result, started, ahead, behind):
        """A record still running behind is waited for, a batch claimed ahead put
        back, the backend closed, and the run noted in the CRM's state."""
        if behind:
            self._close_record_behind(behind)
        if ahead:
            self._release_claimed_ahead(ahead)
        self.backend.close()
        result.seconds = time.monotonic() - started
        self._note_run(result)
        alerts.after_run(self.crm, result.accepted, self.clock())

    def run_batch(self, limit, *, probe=False, claimed=None, claim_next=None, behind=None):
        """One claim -> push -> record cycle of at most `limit` contacts: `claimed`
        is a batch claimed ahead (else the claim is made here), and
        `claim_next(batch)` starts claiming the next one on another thread: during
        the push when the CRM keeps pushes waiting longer than a record takes, else
        during the record. With `behind` (a RecordBehind), the record of the batch
        before is waited for once this one is pushed, and with such a CRM this one
        is recorded on its thread when it may be (_may_record_behind): the result
        returned is then complete only once `behind.wait()` returns."""
        started = time.monotonic()
        batch = claimed if claimed is not None else self.claim(limit)
        batch.probe = probe
        result = RunResult(self.crm)
        if not batch.rows:
            if probe:
                self.breaker.probe_found_nothing()
            return result
        result.claimed, result.batches = len(batch.rows), 1
        claim_during_push = claim_next is not None and self._crm_outlasts_record()
        if claim_during_push:
            claim_next(batch)
        with LeaseRenewal(self, batch):
            with lend_import_ledger(self.backend, batch):
                self.push(batch)
            self._last_push_seconds = batch.duration_ms / 1000
            self._wait_for_record_behind(behind, batch, result)
            record_behind = behind is not None and self._may_record_behind(batch)
            if not record_behind:
                if claim_next is not None and not claim_during_push:
                    claim_next(batch)
                self._record_and_report(batch, result, started)
        # A lease ends with at least two thirds of it left (LeaseRenewal): ample for a record.
        if record_behind:
            behind.start(self._record_and_report, batch, result, started)
        return result

    def _crm_outlasts_record(self):
        """Whether the CRM kept the last push waiting longer than its record took:
        then overlapping a push with a claim or a record saves the CRM's time."""
        if self._last_push_seconds is None or self._last_record_seconds is None:
            return False
        return self._last_push_seconds > self._last_record_seconds

    def _may_record_behind(self, batch):
        """Whether the run may go on before the batch is recorded: the CRM keeps
        pushes waiting longer than a record takes, the record pauses nobody (the
        CRM did not ask to wait) and cannot open the circuit breaker (not a probe,
        no verdict of failing). A staff decision or an edit made during the push is
        still applied by its record, as always."""
        return (
            self._crm_outlasts_record()
            and not batch.probe
            and not batch.asked_to_wait()
            and self._verdict(batch) is not Verdict.FAILING
        )

    def _wait_for_record_behind(self, behind, batch, result):
        """Wait for the batch being recorded behind; if its record failed, this
        pushed batch is recorded before that error goes up."""
        if behind is None:
            return
        try:
            behind.wait()
        except Exception:
            self.record(batch, result)
            raise

    def _close_record_behind(self, behind):
        """The run ends: a record still running behind is waited for. Its error, if
        any, is logged; the run's own outcome, or its error, is what the caller hears of."""
        try:
            behind.wait()
        except Exception:
            logger.exception("crm=%s recording a batch behind failed", self.crm)
        finally:
            behind.close()

    def _record_and_report(self, batch, result, started):
        """Record the batch, then its push time and seconds in its result, and its log line."""
        recording = time.monotonic()
        self.record(batch, result)
        self._last_record_seconds = time.monotonic() - recording
        if batch.items:
            observe_push(result.push_durations, batch.duration_ms / 1000)
        result.seconds = time.monotonic() - started
        logger.info(
            "crm=%s claimed=%d accepted=%d retry_scheduled=%d failed=%d waited=%d seconds=%.2f%s",
            self.crm,
            result.claimed,
            result.accepted,
            result.retry_scheduled,
            result.failed,
            result.waited,
            result.seconds,
            " probe=1" if batch.probe else "",
        )

    # Bulk: a backend with a bulk path asks for bigger batches when enough is due

    def claim_size(self):
        """The batch to claim: the CRM's batch size, or the backend's bulk batch size
        when at least its threshold is due (`backend.bulk_claim()` gives (threshold,
        size), or None; Brevo's import). Below the threshold nothing changes."""
        bulk_claim = getattr(self.backend, "bulk_claim", None)
        plan = bulk_claim() if bulk_claim else None
        if not plan or plan[1] <= self.policy.batch_size:
            return self.policy.batch_size
        threshold, size = plan
        now, rows = self.clock(), self._rows()
        # Counted through the claim's own indexes, and never past the threshold.
        due = rows.queued_due(now).values("pk")[:threshold].count()
        if due < threshold:
            due += rows.expired_leases(now).values("pk")[: threshold - due].count()
        return size if due >= threshold else self.policy.batch_size

    # Claim

    def _claimed_ahead(self, ahead, limit, probe):
        """The batch claimed ahead while the last one was pushed or recorded, when it
        still fits: a probe, a limit now smaller (Brevo's bulk size, max_contacts),
        or a lease already past the point where LeaseRenewal would have renewed it
        (a long push before it) claims afresh and puts it back."""
        claimed = ahead.take() if ahead else None
        renewal_due = self.policy.lease_seconds / LEASE_RENEWALS_PER_LEASE
        if claimed is not None and (
            probe or len(claimed.rows) > limit or time.monotonic() - claimed.claimed_at > renewal_due
        ):
            self.release(claimed)
            return None
        return claimed

    def _claim_next(self, ahead, limit, room, batch):
        """During a batch's push or before its record: claim the next one ahead,
        unless this one came short (the queue is empty) or the CRM asked to wait.
        `room`: the contacts left in the run's budget after this batch (None: no budget)."""
        if len(batch.rows) < limit or batch.asked_to_wait():
            return
        size = limit if room is None else min(limit, room)
        if size > 0:
            ahead.start(self.claim, size)

    def _release_claimed_ahead(self, ahead):
        """The run ends: a batch being claimed ahead is waited for and put back. A
        claim that failed took nothing (its transaction rolled back); the run's
        own outcome, or its error, is what the caller hears of."""
        try:
            self.release(ahead.take())
        except Exception:
            logger.warning("crm=%s the claim made ahead could not be taken back", self.crm, exc_info=True)
        finally:
            ahead.close()

    def release(self, batch):
        """Put a claimed batch back as it was before its claim, unpushed: no attempt
        spent or recorded, the rows due as they were (one whose lease had expired
        stays so), and a decision staff made meanwhile applied."""
        if not batch or not batch.rows:
            return
        now = self.clock()
        before = {
            row.pk: (ProcessingStatus.PROCESSING, now) if row.pk in batch.reclaimed else (ProcessingStatus.QUEUED, None)
            for row in batch.rows
        }
        lease_type = ContactSync._meta.get_field("lease_expires_at").cast_db_type(connections[ContactSync.objects.db])
        with transaction.atomic():
            written = update_from_values(
                ContactSync,
                before,
                # VALUES types a column of NULLs as text: cast it to the column's type.
                per_row={"processing_status": "{v}", "lease_expires_at": "CAST({v} AS %s)" % lease_type},
                fixed={"attempts": Sql("{column} - 1"), "claim_token": None, "updated_at": now},
                matching={"claim_token": batch.token, "processing_status": ProcessingStatus.PROCESSING},
                returning=Written._fields,
                using=ContactSync.objects.db,
            )
            self._apply_pending_decisions({pk: Written(*values) for pk, *values in written}, set(), now)

    def claim(self, limit):
        """Claim up to `limit` due rows (see claim_ids) and load them with their contacts."""
        if self._row_locks():
            return self._claim_in_one_statement(limit)
        token, ids, reclaimed = self._claim_by_compare_and_set(limit)
        # By primary key: the token has no index, and only guards against rows
        # that the compare-and-set left to another worker.
        claimed = ContactSync.objects.filter(pk__in=ids, claim_token=token).select_related("contact", "erasure")
        return _Batch(token=token, rows=list(claimed) if ids else [], reclaimed=reclaimed)

    def claim_ids(self, limit):
        """Mark up to `limit` due rows Processing under a fresh token and lease;
        return (token, ids) in claim order.

        Rows whose lease expired (their worker died) come first; the lost attempt
        counts. PostgreSQL claims in one statement with row locks (claiming.claim);
        SQLite in one short transaction, its UPDATE a compare-and-set."""
        if self._row_locks():
            batch = self._claim_in_one_statement(limit)
            return batch.token, list(batch.by_key)
        token, ids, _reclaimed = self._claim_by_compare_and_set(limit)
        return token, ids

    def _claim_by_compare_and_set(self, limit):
        """SQLite's claim: (token, ids in claim order, ids whose lease had expired)."""
        now = self.clock()
        token = uuid.uuid4()
        with transaction.atomic():
            ids = self._lock_due_ids(self._rows().expired_leases(now).order_by("lease_expires_at"), limit)
            reclaimed = set(ids)
            if len(ids) < limit:
                # Ordered by the partial index alone, so the scan stops at `limit`.
                due = self._rows().queued_due(now).order_by("next_attempt_at")
                ids += self._lock_due_ids(due, limit - len(ids))
            if ids:
                # Without row locks the re-check of the due condition makes it a compare-and-set.
                ContactSync.objects.filter(pk__in=ids).due(now).update(
                    processing_status=ProcessingStatus.PROCESSING,
                    attempts=F("attempts") + 1,
                    lease_expires_at=now + timedelta(seconds=self.policy.lease_seconds),
                    claim_token=token,
                    updated_at=now,
                )
        return token, ids, reclaimed

    def _claim_in_one_statement(self, limit):
        now, token = self.clock(), uuid.uuid4()
        changes = {
            "processing_status": ProcessingStatus.PROCESSING,
            "attempts": Sql("{column} + 1"),
            "lease_expires_at": now + timedelta(seconds=self.policy.lease_seconds),
            "claim_token": token,
            "updated_at": now,
        }
        claimed = claiming.claim(self._rows(), now, limit, changes, self._compiled_claim)
        return _Batch(
            token=token, rows=claimed.rows, contact_versions=claimed.contact_versions, reclaimed=claimed.reclaimed
        )

    @staticmethod
    def _row_locks():
        return connections[ContactSync.objects.db].features.has_select_for_update_skip_locked

    def _rows(self):
        return ContactSync.objects.for_crm(self.crm)

    @staticmethod
    def _lock_due_ids(queryset, limit):
        # SQLite: a plain SELECT (one writer at a time; the UPDATE re-checks).
        locked = queryset.select_for_update(skip_locked=True, of=("self",), no_key=True)
        return list(locked.values_list("pk", flat=True)[:limit])

    # Push

    def push(self, batch):
        """Build payloads and push them with no transaction open. A row that used up
        its attempts (and its time) on lost leases is not pushed again."""
        now = self.clock()
        for key, row in batch.by_key.items():
            if row.operation:
                batch.items.append(self._removal_item(row))
                continue
            contact = row.contact
            if key in batch.reclaimed and self.policy.gives_up(row.attempts - 1, row.first_failed_at, now):
                batch.outcomes.append(
                    Outcome.permanent(
                        _unsent(key, contact),
                        "Gave up after %d attempts: the last one did not finish (its worker "
                        "stopped before the lease ran out)." % self.policy.max_attempts,
                    )
                )
                continue
            try:
                payload = self.backend.build_payload(contact)
            except InvalidContact as exc:
                batch.outcomes.append(Outcome.permanent(_unsent(key, contact), exc.message))
                continue
            except Exception:
                logger.exception("crm=%s building the payload of contact %s failed", self.crm, row.contact_id)
                batch.outcomes.append(Outcome.retry(_unsent(key, contact), self._unexpected_error_message()))
                batch.unexplained.add(key)
                continue
            batch.items.append(self._upsert_item(key, row, contact, payload))
        if batch.items:
            started = time.monotonic()
            batch.outcomes += self._call_backend(batch, batch.items)
            batch.duration_ms = int((time.monotonic() - started) * 1000)

    def _upsert_item(self, key, row, contact, payload):
        email = self.backend.crm_email(contact.email)
        previous = self.backend.crm_email(row.synced_email) if row.synced_email else ""
        return SyncItem(
            key=key,
            contact=contact,
            payload=payload,
            external_id=row.external_id,
            email=email,
            previous_email=previous if previous != email else "",
            opted_out=row.opted_out_at is not None,
        )

    def _removal_item(self, row):
        """A removal or erasure finds the record by the CRM's id, else by the
        address: the contact's, or for a contact gone locally the erasure's or the
        one last synced."""
        address = row.contact.email if row.contact else (row.erasure.email if row.erasure else row.synced_email)
        return SyncItem(
            key=row.pk,
            contact=row.contact,
            payload=None,
            external_id=row.external_id,
            operation=row.operation,
            email=self.backend.crm_email(address) if address else "",
        )

    def _call_backend(self, batch, items):
        try:
            outcomes = self.backend.push(items)
        except RateLimited as exc:
            return [Outcome.wait(item, str(exc), retry_after=exc.retry_after) for item in items]
        except (CRMUnavailable, CRMConfigurationError) as exc:
            # Nothing will succeed until someone acts: pause every worker.
            pause = getattr(exc, "pause_seconds", None) or DEFAULT_UNAVAILABLE_PAUSE
            status = getattr(exc, "status_code", None)
            logger.error("crm=%s unavailable, pausing %d s: %s", self.crm, pause, exc, extra={PAUSE_LOG_MARK: True})
            self.pause(self.clock() + timedelta(seconds=pause), str(exc))
            alerts.crm_paused(self.crm, str(exc), self.clock())
            if getattr(exc, "fail_contacts", False):
                return [Outcome.permanent(item, str(exc), http_status=status) for item in items]
            return [Outcome.wait(item, str(exc), retry_after=pause, http_status=status) for item in items]
        except RetryableError as exc:
            return [
                Outcome.retry(item, str(exc), retry_after=exc.retry_after, http_status=exc.status_code)
                for item in items
            ]
        except PermanentError as exc:
            return [Outcome.permanent(item, str(exc), http_status=exc.status_code) for item in items]
        except Exception:
            logger.exception("crm=%s the backend failed unexpectedly", self.crm)
            batch.unexplained.update(item.key for item in items)
            return [Outcome.retry(item, self._unexpected_error_message()) for item in items]
        return self._one_outcome_per_item(batch, items, outcomes)

    def _unexpected_error_message(self):
        # The exception's own text may hold anything, secrets included; it goes to the log only.
        return "Unexpected error in the %s backend; see the worker log." % self.backend.verbose_name

    def _one_outcome_per_item(self, batch, items, outcomes):
        by_key = {outcome.key: outcome for outcome in outcomes}
        missing = [item for item in items if item.key not in by_key]
        if missing:
            logger.error("crm=%s the backend returned no outcome for %d contacts", self.crm, len(missing))
            batch.unexplained.update(item.key for item in missing)
        message = "The %s backend reported no result for this contact." % self.backend.verbose_name
        return [by_key.get(item.key) or Outcome.retry(item, message) for item in items]

    # Record

    def record(self, batch, result):
        """Write every outcome in bulk, each write guarded by the batch's token, then
        apply what changed while the batch was in flight: a staff decision, an edit
        of the contact, or its deletion."""
        until_probe = self.breaker.note_batch(self._verdict(batch), probe=batch.probe)
        breaker_open = until_probe is not None
        now = self.clock()
        rows_by_key = batch.by_key
        payloads = {item.key: item.payload for item in batch.items}
        accepted, retry, failed, asked_to_wait, held_by_breaker = self._sort_outcomes(batch, breaker_open, now)
        removed = [o for o in accepted if rows_by_key[o.key].operation]
        not_in_crm = [o for o in accepted if o.kind is OutcomeKind.NOT_IN_CRM]
        accepted = [o for o in accepted if o not in removed and o not in not_in_crm]
        changed = self._changed_during_push(accepted, payloads, rows_by_key, batch.contact_versions)
        with transaction.atomic():
            written = {}
            written.update(self._record_accepted(batch.token, accepted, payloads, rows_by_key, now))
            written.update(self._record_removed(batch.token, removed, now))
            written.update(self._record_not_in_crm(batch.token, not_in_crm, now))
            written.update(self._record_retry(batch.token, retry, rows_by_key, now))
            written.update(self._record_failed(batch.token, failed, rows_by_key, now))
            written.update(self._record_waiting(batch.token, {o.key: now + _wait(o) for o in asked_to_wait}, now))
            written.update(self._record_waiting(batch.token, {o.key: until_probe for o in held_by_breaker}, now))
            self._apply_pending_decisions(written, changed, now)
            self._settle_removals(written, now)
            erasure.record_answers(
                [(rows_by_key[o.key], o) for o in batch.outcomes if o.key in written and rows_by_key[o.key].erasure_id],
                now,
            )
            decided = {
                **{o.key: AttemptOutcome.ACCEPTED for o in accepted + removed},
                **{o.key: AttemptOutcome.FAILED for o in not_in_crm},
                **{o.key: AttemptOutcome.RETRY for o in retry},
                **{o.key: AttemptOutcome.WAITED for o in asked_to_wait + held_by_breaker},
                **{o.key: AttemptOutcome.FAILED for o in failed},
            }
            self._record_attempts(batch, decided, written, now)
        result.accepted, result.retry_scheduled = len(accepted) + len(removed), len(retry)
        result.not_in_crm = len(not_in_crm)
        result.failed, result.waited = len(failed), len(asked_to_wait) + len(held_by_breaker)
        self._count_unwritten(batch, set(written), result)
        if asked_to_wait:
            self._pause_for_waits(asked_to_wait, now, result)

    def _sort_outcomes(self, batch, breaker_open, now):
        """The batch's outcomes as (accepted, retry, failed, asked_to_wait,
        held_by_breaker). Two ways to wait spend no attempt: the CRM asked
        (OutcomeKind.WAIT), or its circuit breaker is open and the failure is the CRM's."""
        rows_by_key = batch.by_key
        accepted, retry, failed, asked_to_wait, held_by_breaker = [], [], [], [], []
        for outcome in batch.outcomes:
            row = rows_by_key[outcome.key]
            if outcome.kind in (OutcomeKind.ACCEPTED, OutcomeKind.NOT_IN_CRM):
                accepted.append(outcome)
            elif outcome.kind is OutcomeKind.WAIT:
                asked_to_wait.append(outcome)
            elif outcome.kind is OutcomeKind.RETRY and breaker_open and outcome.key not in batch.unexplained:
                held_by_breaker.append(outcome)
            elif row.operation == Operation.ERASE or (
                outcome.kind is OutcomeKind.RETRY
                and not self.policy.gives_up(row.attempts, row.first_failed_at or now, now)
            ):
                # An erasure is never given up: it waits for the CRM, or for staff to cancel it.
                retry.append(outcome)
            else:
                failed.append(outcome)
        return accepted, retry, failed, asked_to_wait, held_by_breaker

    def _pause_for_waits(self, asked_to_wait, now, result):
        """The CRM asked to wait (a rate limit, a CRM-wide refusal): every worker
        waits until the longest wait asked for is over."""
        until = now + max(_wait(o) for o in asked_to_wait)
        self.pause(until, asked_to_wait[0].message)
        pause = self.paused() or Pause(until, asked_to_wait[0].message)
        result.paused_until, result.pause_reason, result.paused_by = pause

    def _verdict(self, batch):
        """What the batch says about the CRM as a whole, for the circuit breaker:
        up when it accepted a contact; failing when every answer was a CRM-side
        failure (5xx, timeout, connection error); else nothing."""
        pushed = {item.key for item in batch.items} - batch.unexplained
        kinds = {o.kind for o in batch.outcomes if o.key in pushed}
        if OutcomeKind.ACCEPTED in kinds:
            return Verdict.UP
        # One contact failing again and again may be that contact's own trouble: it
        # keeps its back-off and attempts (and its day before giving up) instead.
        if kinds == {OutcomeKind.RETRY} and (len(pushed) >= MIN_CONTACTS_FOR_FAILING_VERDICT or batch.probe):
            return Verdict.FAILING
        return None

    def _changed_during_push(self, accepted, payloads, rows_by_key, versions=None):
        """Keys of accepted rows whose contact no longer builds the payload that was
        pushed (edited mid-push, by any means): they are queued again at once.

        A payload is built from the contact's row alone (build_payload's contract),
        so only a contact whose row now differs from the one pushed is built again
        (see _edited_contacts: one query for the batch)."""
        if not accepted or not self.policy.sync_on_change:
            return set()
        pushed = {rows_by_key[o.key].contact_id: rows_by_key[o.key].contact for o in accepted}
        now_hashes = {
            contact.pk: (contact, self._hash_now(contact)) for contact in self._edited_contacts(pushed, versions)
        }
        keys = {rows_by_key[o.key].contact_id: o.key for o in accepted}
        changed = {
            keys[pk] for pk, (_contact, now_hash) in now_hashes.items() if now_hash != payload_hash(payloads[keys[pk]])
        }
        if changed:
            # A payload that differs every time it is built (one carrying the time)
            # would look changed after every push and be pushed for ever.
            contact, first = now_hashes[rows_by_key[next(iter(changed))].contact_id]
            if self._hash_now(contact) != first:
                logger.warning(
                    "crm=%s builds a different payload each time, so edits made during a push cannot be "
                    "detected; set %s_SYNC_ON_CHANGE=false",
                    self.crm,
                    self.crm.upper(),
                )
                return set()
        return changed

    @staticmethod
    def _edited_contacts(pushed, versions):
        """The contacts of `pushed` ({pk: the contact as pushed}) whose row differs now,
        as they are now. With the row versions read at the claim (PostgreSQL, see
        claiming.py) only the versions are read, and then the rows whose version
        moved (most batches: none); else the rows, as plain values, are compared.
        A contact deleted during the push has no payload now; its removal follows."""
        if versions is not None:
            now = claiming.contact_versions(list(pushed), using=Contact.objects.db)
            moved = [pk for pk, version in now if version != versions.get(pk)]
            return list(Contact.objects.filter(pk__in=moved)) if moved else []
        edited = []
        for values in Contact.objects.filter(pk__in=pushed).values_list(*CONTACT_ATTNAMES):
            if values != tuple(getattr(pushed[values[0]], name) for name in CONTACT_ATTNAMES):
                edited.append(Contact.from_db(Contact.objects.db, CONTACT_ATTNAMES, values))
        return edited

    def _hash_now(self, contact):
        try:
            return payload_hash(self.backend.build_payload(contact))
        except InvalidContact:
            return None  # queued again: the next push records why, where staff see it

    def _count_unwritten(self, batch, written, result):
        """Outcomes not written: the row's lease went to another worker (discarded),
        or its contact was deleted during the push (its rows went with it)."""
        unwritten = {o.key for o in batch.outcomes} - written
        if not unwritten:
            return
        still_there = set(ContactSync.objects.filter(pk__in=unwritten).values_list("pk", flat=True))
        result.discarded, result.deleted = len(still_there), len(unwritten - still_there)
        if result.discarded:
            logger.warning(
                "crm=%s %d results arrived after their lease expired and were discarded",
                self.crm,
                result.discarded,
            )
        if result.deleted:
            logger.info(
                "crm=%s %d contacts were deleted while being pushed; their results were dropped",
                self.crm,
                result.deleted,
            )

    def _record_accepted(self, token, outcomes, payloads, rows_by_key, now):
        rows = {
            o.key: (
                o.external_id,
                payload_hash(payloads[o.key]),
                canonical_email(rows_by_key[o.key].contact.email),
                clip(o.message),
            )
            for o in outcomes
        }
        return _write_claimed(
            token,
            rows,
            # An accepted row without an id (n8n answers none) keeps the one it had.
            per_row={
                "external_id": "COALESCE(NULLIF({v}, ''), {column})",
                "synced_hash": "{v}",
                "synced_email": "{v}",
                "warning": "{v}",
            },
            fixed={
                "sync_status": SyncStatus.COMPLETE,
                "processing_status": ProcessingStatus.COMPLETE,
                "synced_at": now,
                "last_error": "",
                "next_attempt_at": None,
                "first_failed_at": None,
                "updated_at": now,
            },
        )

    def _record_removed(self, token, outcomes, now):
        """The CRM confirmed a removal or erasure, or had no such record: the row
        keeps no trace of the CRM's record."""
        return _write_claimed(
            token,
            {o.key: (clip(o.answer),) for o in outcomes},
            per_row={"last_error": None},
            fixed={
                "processing_status": ProcessingStatus.REMOVED,
                "external_id": "",
                "synced_email": "",
                "synced_hash": "",
                "synced_at": None,
                "last_error": "",
                "next_attempt_at": None,
                "first_failed_at": None,
                "updated_at": now,
            },
        )

    def _record_not_in_crm(self, token, outcomes, now):
        """The CRM has no record to update, and crmsync creates none (its id is gone,
        or update_only): the row says why and waits for staff to select it again."""
        return _write_claimed(
            token,
            {o.key: (clip(o.message),) for o in outcomes},
            per_row={"last_error": "{v}"},
            fixed={
                "sync_status": SyncStatus.SELECTED,
                "processing_status": ProcessingStatus.NOT_IN_CRM,
                "external_id": "",
                "synced_email": "",
                "synced_hash": "",
                "next_attempt_at": None,
                "first_failed_at": None,
                "updated_at": now,
            },
        )

    def _settle_removals(self, written, now):
        """After the record: a row skipped with a CRM id, for a CRM that mirrors
        deletes, is queued for removal; a row whose contact is gone locally and that
        has nothing left to deliver goes. Only a Skip just applied leaves a row
        Skipped, and the writes returned which rows have neither contact nor
        erasure: most batches need no statement here."""
        skipped = {key for key, row in written.items() if row.pending_decision == PendingDecision.SKIP}
        if skipped and self.backend.mirrors_deletes():
            ContactSync.objects.filter(
                pk__in=skipped, sync_status=SyncStatus.SKIPPED, processing_status=ProcessingStatus.NONE
            ).exclude(synced_email="").update(
                operation=Operation.REMOVE,
                processing_status=ProcessingStatus.QUEUED,
                next_attempt_at=now,
                attempts=0,
                updated_at=now,
            )
        orphans = {key for key, row in written.items() if row.contact_id is None and row.erasure_id is None}
        if orphans:
            settled = [ProcessingStatus.QUEUED, ProcessingStatus.PROCESSING]
            ContactSync.objects.filter(pk__in=orphans, contact=None, erasure=None).exclude(
                processing_status__in=settled
            ).delete()

    def _record_retry(self, token, outcomes, rows_by_key, now):
        rows = {
            o.key: (now + self.retry_delay(rows_by_key[o.key].attempts, o.retry_after), clip(o.message))
            for o in outcomes
        }
        return _write_claimed(
            token,
            rows,
            per_row={"next_attempt_at": "{v}", "last_error": "{v}"},
            fixed={
                "sync_status": SyncStatus.SELECTED,
                "processing_status": ProcessingStatus.QUEUED,
                "first_failed_at": Sql("COALESCE({column}, %s)", now),
                "updated_at": now,
            },
        )

    def _record_failed(self, token, outcomes, rows_by_key, now):
        rows = {o.key: (clip(self._failure_message(o, rows_by_key[o.key], now)),) for o in outcomes}
        return _write_claimed(
            token,
            rows,
            per_row={"last_error": "{v}"},
            fixed={
                "sync_status": SyncStatus.ERROR,
                "processing_status": ProcessingStatus.ERROR,
                "next_attempt_at": None,
                "first_failed_at": Sql("COALESCE({column}, %s)", now),
                "updated_at": now,
            },
        )

    def _record_waiting(self, token, due_at, now):
        """Back in the queue without using an attempt, due at `due_at[key]`: waiting
        for a rate limit, for someone to fix the CRM's configuration, or for a CRM
        that is down (the circuit breaker) is nobody's failure."""
        return _write_claimed(
            token,
            {key: (moment,) for key, moment in due_at.items()},
            per_row={"next_attempt_at": "{v}"},
            fixed={
                "sync_status": SyncStatus.SELECTED,
                "processing_status": ProcessingStatus.QUEUED,
                "attempts": Sql("{column} - 1"),
                "updated_at": now,
            },
        )

    def _apply_pending_decisions(self, written, changed, now):
        """What was decided while the batch was in flight takes effect now, over the
        outcome just written: a Skip leaves the row Skipped whatever the push did; an
        Unselect leaves it New; a Select, or an edit of the contact, queues it again
        for a new push."""
        # Each write returned the row's pending decision as it left it: only a
        # decision or an edit costs a statement, and each sees the decision as it
        # was before any of them ran (a Skip is not undone by an edit of the contact).
        decided = defaultdict(set)
        for key, row in written.items():
            decided[row.pending_decision].add(key)
        decided[PendingDecision.SELECT] |= decided[PendingDecision.ERASE] | (changed & decided[PendingDecision.NONE])
        if decided[PendingDecision.SKIP]:
            self._apply_skip(decided[PendingDecision.SKIP], now)
        if decided[PendingDecision.UNSELECT]:
            self._apply_unselect(decided[PendingDecision.UNSELECT], now)
        if decided[PendingDecision.SELECT]:
            self._queue_again(decided[PendingDecision.SELECT], now)

    @staticmethod
    def _apply_skip(keys, now):
        ContactSync.objects.filter(pk__in=keys).update(
            sync_status=SyncStatus.SKIPPED,
            processing_status=ProcessingStatus.NONE,
            next_attempt_at=None,
            pending_decision=PendingDecision.NONE,
            updated_at=now,
        )

    @staticmethod
    def _apply_unselect(keys, now):
        # Unselected mid-push: back to New, as contacts.selection.unselect leaves a settled row.
        ContactSync.objects.filter(pk__in=keys).update(
            sync_status=SyncStatus.NEW,
            processing_status=ProcessingStatus.NONE,
            next_attempt_at=None,
            last_error="",
            first_failed_at=None,
            pending_decision=PendingDecision.NONE,
            updated_at=now,
        )

    @staticmethod
    def _queue_again(keys, now):
        ContactSync.objects.filter(pk__in=keys).update(
            sync_status=SyncStatus.SELECTED,
            processing_status=ProcessingStatus.QUEUED,
            next_attempt_at=now,
            attempts=0,
            last_error="",
            first_failed_at=None,
            pending_decision=PendingDecision.NONE,
            updated_at=now,
        )

    def _failure_message(self, outcome, row, now):
        if outcome.kind is OutcomeKind.RETRY:
            since = row.first_failed_at or now
            return "Gave up after %d attempts over %s. Last error: %s %s" % (
                row.attempts,
                _duration(now - since),
                outcome.message.rstrip(".") + ".",
                'Once %s answers again, use "Retry failed syncs".' % self.backend.verbose_name,
            )
        return outcome.message

    def _record_attempts(self, batch, decided, written, now):
        """One SyncAttempt per outcome written, in one statement that skips a contact
        deleted meanwhile and locks the others against deletion until the record
        commits: an attempt never refers to a deleted contact (contacts migration 0007)."""
        rows = [
            (written[o.key].contact_id, decided[o.key], o.http_status, clip(o.message))
            for o in batch.outcomes
            if o.key in written and written[o.key].contact_id is not None
        ]
        insert_from_values(
            SyncAttempt,
            rows,
            per_row=["contact", "outcome", "http_status", "error"],
            fixed={"crm": self.crm, "attempted_at": now, "duration_ms": batch.duration_ms},
            existing="contact",
            using=SyncAttempt.objects.db,
        )

    def retry_delay(self, attempts, retry_after=None):
        """The CRM's Retry-After wins; otherwise exponential back-off from the base
        delay with full jitter, capped."""
        if retry_after is not None:
            return timedelta(seconds=max(0.0, float(retry_after)))
        base = self.policy.retry_delay_minutes * 60
        # Past the 30th doubling any delay is over the cap; the exponent stays small.
        ceiling = base * 2 ** min(max(attempts - 1, 0), 30) if self.policy.retry_exponential else base
        ceiling = min(ceiling, self.policy.retry_max_delay_minutes * 60)
        return timedelta(seconds=self.rng.uniform(0, ceiling))

    # The CRM's shared state

    def paused(self):
        """A Pause while the CRM is paused for every worker, else None (see
        CRMStateQuerySet.paused)."""
        return CRMState.objects.paused(self.crm, self.clock(), label=self.backend.verbose_name)

    def _pause_and_breaker(self):
        """(paused(), whether the circuit breaker is open) in one read of the CRM's state."""
        return CRMState.objects.pause_and_breaker(self.crm, self.clock(), label=self.backend.verbose_name)

    def pause(self, until, reason):
        """Pause the CRM until `until` unless it is already paused for longer."""
        CRMState.objects.pause(self.crm, until, reason)

    def _note_run(self, result):
        """The run's end, its push times and the requests its backend sent that the
        shared pacer has not yet counted, in the CRM's state (/metrics)."""
        now = self.clock()
        CRMState.objects.ensure(self.crm)
        changes = {"last_run_at": now}
        if result.accepted:
            changes["last_success_at"] = now
        tally = getattr(getattr(self.backend, "pacer", None), "tally", None)
        sent, rate_limited = tally.take() if tally else (0, 0)
        if sent or rate_limited:
            changes["requests_sent"] = F("requests_sent") + sent
            changes["rate_limited_responses"] = F("rate_limited_responses") + rate_limited
        with transaction.atomic():
            if result.push_durations:
                # Merged under the row's lock: workers end their runs side by side.
                state = CRMState.objects.select_for_update().only("push_durations").get(crm=self.crm)
                changes["push_durations"] = merged_push_durations(state.push_durations, result.push_durations)
            CRMState.objects.filter(crm=self.crm).update(**changes)


def _unsent(key, contact):
    """The item of a contact that is not pushed (its outcome is decided before the push)."""
    return SyncItem(key=key, contact=contact, payload=None)


def _wait(outcome):
    seconds = outcome.retry_after if outcome.retry_after is not None else DEFAULT_RATE_LIMIT_WAIT
    return timedelta(seconds=max(0.0, float(seconds)))


def _write_claimed(token, rows, *, per_row, fixed):
    """UPDATE the rows still held under `token` in one statement: each row gets its
    own values from `rows` ({pk: (value, ...)}, in the order of `per_row`), all
    get `fixed`; lease and token are cleared. Returns {pk: Written} for the rows
    written (a row is missing when its lease went to another worker or it was
    deleted)."""
    written = update_from_values(
        ContactSync,
        rows,
        per_row=per_row,
        # A recorded row is done with any bulk import that carried it.
        fixed={**fixed, "lease_expires_at": None, "claim_token": None, "crm_process_id": ""},
        matching={"claim_token": token, "processing_status": ProcessingStatus.PROCESSING},
        returning=Written._fields,
        using=ContactSync.objects.db,
    )
    return {pk: Written(*values) for pk, *values in written}


def _duration(delta):
    hours = delta.total_seconds() / 3600
    if hours >= 1:
        return "%.1f hours" % hours
    return "%d minutes" % round(delta.total_seconds() / 60)
