"""Erasure: forget a person in every CRM, with proof (GDPR Art. 17).

`start(emails, requested_by, via)` records an Erasure per address (proof without
personal data: who, when, a keyed hash, each CRM's answer), puts the hash on the
suppression list at once, and queues an `erase` operation on the person's row for
every configured CRM; the engine delivers it like a sync (claimed, paced,
retried, fenced, under the circuit breaker) but never gives up on it. A CRM not
configured is listed in the proof as "not configured: erase there by hand".

When every CRM has confirmed (a CRM without the person answers "not found",
which is done too), the local contact is deleted, not anonymized: an anonymized
row would still be a record of the person (its history, dates and CRM ids single
them out), and the proof plus the suppression hash are all crmsync needs to
show the erasure and keep the person out. The address kept on the Erasure to
find the person in each CRM is blanked then.
"""

import re

from django.db import transaction
from django.utils import timezone

from integrations.registry import crm_names, get_backend_class

from . import audit
from .emails import canonical_email
from .models import (
    Contact,
    ContactSync,
    Erasure,
    ErasureOutcome,
    ErasureResult,
    ErasureStatus,
    Operation,
    PendingDecision,
    ProcessingStatus,
    Suppression,
    SyncStatus,
)
from .suppression import email_hash

# Any email address in a CRM's answer is removed before the proof stores it.
_EMAIL = re.compile(r"[^\s\"'<>(),;:@]+@[^\s\"'<>(),;:@]+")
ANSWER_MAX_LENGTH = 1000


def scrub(text):
    """`text` without any email address in it (URL-encoded ones included)."""
    text = (text or "").replace("%40", "@").replace("%40".lower(), "@")
    return _EMAIL.sub("[email removed]", text)[:ANSWER_MAX_LENGTH]


def _configured_crms():
    return {name for name in crm_names() if get_backend_class(name).is_enabled()}


def start(emails, *, requested_by, via):
    """Erase each address in `emails` from every CRM; returns an Erasure per
    address, in order: a new one, or the one already under way for it.
    SuppressionKeyMissing without CRMSYNC_SUPPRESSION_KEY."""
    now = timezone.now()
    wanted = list(dict.fromkeys(canonical_email(email) for email in emails if email))
    hashes = {address: email_hash(address) for address in wanted}
    configured = _configured_crms()
    with transaction.atomic():
        # An address whose erasure is under way keeps that one: a second would take
        # over its rows and leave the first pending for ever.
        pending = {
            e.email: e
            for e in Erasure.objects.select_for_update().filter(status=ErasureStatus.PENDING, email__in=wanted)
        }
        addresses = [address for address in wanted if address not in pending]
        erasures = Erasure.objects.bulk_create(
            [
                Erasure(
                    email=address,
                    email_hash=hashes[address],
                    requested_by=requested_by,
                    requested_via=via,
                    requested_at=now,
                )
                for address in addresses
            ]
        )
        ErasureResult.objects.bulk_create(
            [
                ErasureResult(
                    erasure=erasure,
                    crm=crm,
                    outcome=ErasureOutcome.PENDING if crm in configured else ErasureOutcome.NOT_CONFIGURED,
                )
                for erasure in erasures
                for crm in crm_names()
            ]
        )
        Suppression.objects.bulk_create(
            [Suppression(email_hash=e.email_hash, erasure=e) for e in erasures], ignore_conflicts=True
        )
        _queue_erase_rows(erasures, sorted(configured), now)
    complete_finished([e.pk for e in erasures], now)
    started = {e.email: e for e in erasures}
    return [pending.get(address) or started[address] for address in wanted]


def _queue_erase_rows(erasures, crms, now):
    """Turn each person's row for each configured CRM into an erase operation, or
    create one (the CRM may hold the person though crmsync never synced them). A
    row a worker is pushing is queued when its push records (pending Erase)."""
    by_email = {e.email: e for e in erasures}
    contacts = dict(Contact.objects.filter(email__in=list(by_email)).values_list("email", "pk"))
    rows = {
        (row.contact_id, row.crm): row
        for row in ContactSync.objects.filter(contact_id__in=list(contacts.values()), crm__in=crms)
    }
    new, changed = [], []
    for email, erasure in by_email.items():
        contact_id = contacts.get(email)
        for crm in crms:
            row = rows.get((contact_id, crm)) if contact_id else None
            if row is None:
                new.append(_erase_row(ContactSync(contact_id=contact_id, crm=crm), erasure, now))
            else:
                changed.append(_erase_row(row, erasure, now))
    ContactSync.objects.bulk_create(new)
    ContactSync.objects.bulk_update(
        changed,
        [
            "operation",
            "erasure",
            "sync_status",
            "processing_status",
            "pending_decision",
            "attempts",
            "next_attempt_at",
            "last_error",
            "first_failed_at",
            "updated_at",
        ],
    )


def _erase_row(row, erasure, now):
    row.operation, row.erasure = Operation.ERASE, erasure
    row.sync_status = SyncStatus.SKIPPED
    row.last_error, row.first_failed_at, row.updated_at = "", None, now
    if row.processing_status == ProcessingStatus.PROCESSING:
        row.pending_decision = PendingDecision.ERASE
    else:
        row.processing_status, row.next_attempt_at, row.attempts = ProcessingStatus.QUEUED, now, 0
        row.pending_decision = PendingDecision.NONE
    return row


def record_answers(answers, now):
    """The engine's record step: [(ContactSync row, Outcome)] for erase rows just
    written. A confirmation (or "not found") settles the CRM's part of the proof;
    any other answer is noted there (an erasure waits, it does not fail)."""
    if not answers:
        return
    results = {
        (r.erasure_id, r.crm): r
        for r in ErasureResult.objects.filter(erasure_id__in={row.erasure_id for row, _o in answers})
    }
    for row, outcome in answers:
        result = results.get((row.erasure_id, row.crm))
        if result is None or result.outcome != ErasureOutcome.PENDING:
            continue  # cancelled while the push was in flight: _drop_cancelled below
        result.attempts += 1
        result.first_attempt_at = result.first_attempt_at or now
        result.last_attempt_at = now
        result.http_status = outcome.http_status
        if outcome.kind.value == "accepted":
            result.outcome = ErasureOutcome.ERASED if outcome.found else ErasureOutcome.NOT_FOUND
            result.confirmed_at = now
            result.answer = scrub(outcome.answer)
        else:
            result.answer = scrub(outcome.message)
    ErasureResult.objects.bulk_update(
        results.values(),
        ["outcome", "attempts", "first_attempt_at", "last_attempt_at", "confirmed_at", "http_status", "answer"],
    )
    _drop_cancelled({row.erasure_id for row, _o in answers}, now)
    complete_finished({row.erasure_id for row, _o in answers}, now)


def _drop_cancelled(erasure_ids, now):
    """Erase rows of erasures cancelled while they were in flight stop here."""
    rows = ContactSync.objects.filter(erasure_id__in=list(erasure_ids), operation=Operation.ERASE).exclude(
        erasure__status=ErasureStatus.PENDING
    )
    rows.filter(contact=None).delete()
    rows.filter(processing_status=ProcessingStatus.QUEUED).update(
        operation=Operation.UPSERT, processing_status=ProcessingStatus.NONE, next_attempt_at=None, updated_at=now
    )


def complete_finished(erasure_ids, now=None):
    """Complete the erasures among `erasure_ids` that no CRM is pending for: the
    local contact is deleted and the address blanked. Returns how many completed."""
    now = now or timezone.now()
    done = list(
        Erasure.objects.filter(pk__in=list(erasure_ids), status=ErasureStatus.PENDING).exclude(
            results__outcome=ErasureOutcome.PENDING
        )
    )
    if not done:
        return 0
    emails = [e.email for e in done if e.email]
    found = dict(Contact.objects.filter(email__in=emails).values_list("email", "pk"))
    # Django's own change entries are titled with the contact's email: blank them.
    audit.forget_contacts(found.values())
    Contact.objects.filter(email__in=emails).delete()
    ContactSync.objects.filter(erasure__in=done, contact=None).delete()
    for erasure in done:
        erasure.local_contact_deleted = erasure.email in found
        erasure.email, erasure.status, erasure.completed_at = "", ErasureStatus.COMPLETE, now
    Erasure.objects.bulk_update(done, ["local_contact_deleted", "email", "status", "completed_at"])
    return len(done)


def cancel(erasures, *, cancelled_by):
    """Stop pending erasures: CRMs not yet confirmed are marked cancelled, their
    queued erase operations dropped (a push in flight still finishes), the
    address blanked. The suppression stays: lifting it is its own decision."""
    now = timezone.now()
    pending = list(erasures.filter(status=ErasureStatus.PENDING))
    with transaction.atomic():
        ErasureResult.objects.filter(erasure__in=pending, outcome=ErasureOutcome.PENDING).update(
            outcome=ErasureOutcome.CANCELLED
        )
        rows = ContactSync.objects.filter(erasure__in=pending).exclude(processing_status=ProcessingStatus.PROCESSING)
        rows.filter(contact=None).delete()
        rows.filter(operation=Operation.ERASE).update(
            operation=Operation.UPSERT,
            processing_status=ProcessingStatus.NONE,
            next_attempt_at=None,
            updated_at=now,
        )
        for erasure in pending:
            erasure.status, erasure.cancelled_by, erasure.email = ErasureStatus.CANCELLED, cancelled_by, ""
            erasure.completed_at = now
        Erasure.objects.bulk_update(pending, ["status", "cancelled_by", "email", "completed_at"])
    return len(pending)
