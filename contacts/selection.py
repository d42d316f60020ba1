"""Staff decisions about which contacts go to which CRM.

This module is the only place that changes sync state on behalf of staff (the
worker's transitions live in integrations.engine). Every function takes a
queryset of contacts and a list of CRM names, runs one statement whatever the
number of contacts, and returns how many (contact, CRM) rows it changed.

A decision about a row a worker is pushing at that moment is not lost: it is kept
in `pending_decision` and the engine applies it when the batch records (a Skip
leaves the row Skipped whatever the push did; an Unselect leaves it New; a
Select queues it again).

`decide(action, contacts, crms)` takes the same decisions and reports, per CRM,
what it did (for the HTTP API's answer), in a statement or two whatever the
number of contacts.
"""

from collections import Counter
from dataclasses import dataclass

from django.core.exceptions import EmptyResultSet
from django.db import connections, transaction
from django.db.models import Count, F, Q
from django.dispatch import receiver
from django.utils import timezone

from integrations.registry import mirroring_crms, validate_crm_names

from .bulk import Sql, set_clauses, update_from_values
from .models import (
    Contact,
    ContactSync,
    Operation,
    PendingDecision,
    ProcessingStatus,
    SyncStatus,
    contacts_deleting,
)

# Columns the upsert writes, in the order of the SELECT list below.
_UPSERT_COLUMNS = (
    "contact_id",
    "crm",
    "sync_status",
    "processing_status",
    "attempts",
    "next_attempt_at",
    "last_error",
    "external_id",
    "synced_hash",
    "pending_decision",
    "operation",
    "synced_email",
    "crm_event",
    "warning",
    "crm_process_id",
    "created_at",
    "updated_at",
)


def select(contacts, crms):
    """Queue contacts for CRMs: Selected / Queued, due now, attempts and error reset.

    Complete rows are queued again (a deliberate re-sync). A row being pushed is
    queued again when its batch records; it is not counted.
    """
    return _settled_total(_select(contacts, crms))


def _select(contacts, crms):
    now = timezone.now()
    return _upsert(
        contacts,
        crms,
        sync_status=SyncStatus.SELECTED,
        processing_status=ProcessingStatus.QUEUED,
        next_attempt_at=now,
        now=now,
        reset_attempts=True,
        in_flight=PendingDecision.SELECT,
    )


def skip(contacts, crms):
    """Mark contacts as not to be synced to CRMs: Skipped, nothing queued.

    A row being pushed becomes Skipped when its batch records; it is not counted.
    """
    return _settled_total(_skip(contacts, crms))


def _skip(contacts, crms):
    now = timezone.now()
    done = _upsert(
        contacts,
        crms,
        sync_status=SyncStatus.SKIPPED,
        processing_status=ProcessingStatus.NONE,
        next_attempt_at=None,
        now=now,
        reset_attempts=False,
        in_flight=PendingDecision.SKIP,
    )
    _queue_removals(ContactSync.objects.filter(contact__in=_pks(contacts), crm__in=crms), now)
    return done


def _queue_removals(rows, now):
    """Skipped rows the CRM holds a record for (synced_email is set by every
    accepted push and cleared by a removal) are removed from it, for CRMs that
    mirror deletes (<CRM>_MIRROR_DELETES). A row skipped while in flight gets its
    removal when its batch records (the engine applies the same rule)."""
    mirroring = mirroring_crms()
    if not mirroring:
        return 0
    return (
        rows.filter(crm__in=mirroring, sync_status=SyncStatus.SKIPPED, processing_status=ProcessingStatus.NONE)
        .exclude(synced_email="")
        .update(
            operation=Operation.REMOVE,
            processing_status=ProcessingStatus.QUEUED,
            next_attempt_at=now,
            attempts=0,
            last_error="",
            first_failed_at=None,
            updated_at=now,
        )
    )


def not_being_erased(contacts):
    """`contacts` without those an erasure is under way for: staff decisions do
    not apply to them (the erasure can be cancelled in the admin)."""
    erasing = ContactSync.objects.filter(operation=Operation.ERASE, contact__isnull=False).exclude(
        processing_status=ProcessingStatus.REMOVED
    )
    return contacts.exclude(pk__in=erasing.values("contact_id"))


@receiver(contacts_deleting, sender=Contact, dispatch_uid="contacts.selection.detach_removals")
def detach_removals(sender, contacts, **kwargs):
    """Contacts are being deleted through the ORM. Rows whose work must outlive the
    contact are detached from it (contact NULL) instead of cascading away: a
    pending erasure, and for CRMs that mirror deletes a row the CRM holds a record
    for (or may, once the push in flight records), which becomes a removal. The
    engine deletes a detached row once it has nothing left to deliver."""
    now = timezone.now()
    rows = ContactSync.objects.filter(contact__in=_pks(contacts))
    rows.filter(operation=Operation.ERASE).exclude(processing_status=ProcessingStatus.REMOVED).update(contact=None)
    mirroring = mirroring_crms()
    if not mirroring:
        return
    mirrored = rows.filter(crm__in=mirroring).exclude(operation=Operation.ERASE)
    # In flight: skipped when its batch records, then removed if it has an id.
    mirrored.filter(processing_status=ProcessingStatus.PROCESSING).update(
        contact=None, pending_decision=PendingDecision.SKIP, updated_at=now
    )
    mirrored.exclude(Q(synced_email="") | Q(processing_status=ProcessingStatus.PROCESSING)).update(
        contact=None,
        operation=Operation.REMOVE,
        sync_status=SyncStatus.SKIPPED,
        processing_status=ProcessingStatus.QUEUED,
        next_attempt_at=now,
        attempts=0,
        last_error="",
        first_failed_at=None,
        pending_decision=PendingDecision.NONE,
        updated_at=now,
    )


def unselect(contacts, crms):
    """Take contacts back to New for CRMs: the decision is undone and the processing
    state cleared (nothing queued, no error or lease kept). Nothing is deleted in any
    CRM, and the CRM's id stays so that a later select updates the same record.
    Contacts without a row are New already and get none.

    A row being pushed goes back to New when its batch records; it is not counted.
    Returns how many rows went back to New now.
    """
    return _settled_total(_unselect(contacts, crms))


def _unselect(contacts, crms):
    """One UPDATE ... RETURNING over the contacts' rows for `crms` that are not New
    already; {crm: (settled, in flight)} like _upsert."""
    crms = validate_crm_names(crms)
    if not crms:
        return {}
    contacts = not_being_erased(contacts)
    connection = connections[contacts.db]
    table = connection.ops.quote_name(ContactSync._meta.db_table)
    cleared = {
        "sync_status": Sql("%s", SyncStatus.NEW),
        "processing_status": Sql("%s", ProcessingStatus.NONE),
        "next_attempt_at": "NULL",
        "lease_expires_at": "NULL",
        "claim_token": "NULL",
        "last_error": "''",
        "first_failed_at": "NULL",
        "updated_at": Sql("%s", timezone.now()),
    }
    sets, set_params = set_clauses(
        ContactSync, connection, _unless_in_flight(cleared, PendingDecision.UNSELECT, connection)
    )
    try:
        contact_sql, contact_params = contacts.order_by().values("pk").query.sql_with_params()
    except EmptyResultSet:
        return {}
    sql = (
        "UPDATE {table} SET {sets} WHERE {table}.contact_id IN ({contact_sql}) AND {table}.crm IN ({crms}) "
        "AND ({in_flight} OR NOT ({table}.sync_status = %s AND {table}.processing_status = %s)) "
        "RETURNING crm, processing_status"
    ).format(
        table=table,
        sets=", ".join(sets),
        contact_sql=contact_sql,
        crms=", ".join(["%s"] * len(crms)),
        in_flight=_in_flight(connection),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*set_params, *contact_params, *crms, SyncStatus.NEW, ProcessingStatus.NONE])
        return _settled_and_in_flight(cursor.fetchall())


def retry_failed(contacts, crms):
    """Queue again, with a fresh attempt budget, the contacts' syncs that ended in Error."""
    crms = validate_crm_names(crms)
    return retry_syncs(ContactSync.objects.filter(contact__in=contacts, crm__in=crms))


def retry_syncs(syncs):
    """Queue again the rows of a ContactSync queryset that ended in Error."""
    now = timezone.now()
    return (
        syncs.filter(sync_status=SyncStatus.ERROR)
        .exclude(processing_status=ProcessingStatus.PROCESSING)
        .update(
            sync_status=SyncStatus.SELECTED,
            processing_status=ProcessingStatus.QUEUED,
            attempts=0,
            next_attempt_at=now,
            lease_expires_at=None,
            claim_token=None,
            last_error="",
            first_failed_at=None,
            pending_decision=PendingDecision.NONE,
            updated_at=now,
        )
    )


def _upsert(contacts, crms, *, sync_status, processing_status, next_attempt_at, now, reset_attempts, in_flight):
    """INSERT ... SELECT ... ON CONFLICT DO UPDATE over contacts x CRMs, in one
    statement. A row being processed keeps its state and gets `in_flight` as its
    pending decision instead; deciding it in the same statement (under the row's
    lock) means a batch recording at that moment cannot lose the decision.
    Returns {crm: (rows that took the decision now, rows in flight)}. Works on
    PostgreSQL and SQLite."""
    crms = validate_crm_names(crms)
    if not crms:
        return {}
    contacts = not_being_erased(contacts)
    connection = connections[contacts.db]
    quote = connection.ops.quote_name
    try:
        contact_sql, contact_params = contacts.order_by().values(selected_id=F("pk")).query.sql_with_params()
    except EmptyResultSet:  # e.g. pk__in=[]: no contact, nothing to decide
        return {}
    updates, update_params = set_clauses(
        ContactSync, connection, _unless_in_flight(_decided(reset_attempts), in_flight, connection)
    )
    # SQLite needs the WHERE on the SELECT to parse ON CONFLICT after it.
    sql = (
        "INSERT INTO {table} ({columns}) "
        "SELECT contact.selected_id, crm.name, %s, %s, 0, %s, '', '', '', '', '', '', '', '', '', %s, %s "
        "FROM ({contact_sql}) contact CROSS JOIN ({crm_sql}) crm WHERE 1 = 1 "
        "ON CONFLICT (contact_id, crm) DO UPDATE SET {updates} "
        "RETURNING crm, processing_status"
    ).format(
        table=quote(ContactSync._meta.db_table),
        columns=", ".join(quote(column) for column in _UPSERT_COLUMNS),
        contact_sql=contact_sql,
        crm_sql=" UNION ALL ".join(["SELECT %s AS name"] * len(crms)),
        updates=", ".join(updates),
    )
    at = ContactSync._meta.get_field("next_attempt_at").get_db_prep_value
    decision = [
        sync_status,
        processing_status,
        at(next_attempt_at, connection),
        at(now, connection),
        at(now, connection),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*decision, *contact_params, *crms, *update_params])
        return _settled_and_in_flight(cursor.fetchall())


def _settled_and_in_flight(returned):
    """{crm: (settled, in flight)} from the (crm, processing_status) rows a statement returned."""
    counts = Counter(returned)
    in_flight = ProcessingStatus.PROCESSING.value
    crms = {crm for crm, _status in counts}
    return {
        crm: (
            sum(n for (c, status), n in counts.items() if c == crm and status != in_flight),
            counts[crm, in_flight],
        )
        for crm in crms
    }


def _settled_total(by_crm):
    return sum(settled for settled, _in_flight in by_crm.values())


def _decided(reset_attempts):
    """What an upsert writes on a settled row that exists: the inserted row's decision."""
    decided = {
        "sync_status": "excluded.sync_status",
        "processing_status": "excluded.processing_status",
        "next_attempt_at": "excluded.next_attempt_at",
        "lease_expires_at": "NULL",
        "claim_token": "NULL",
        "updated_at": "excluded.updated_at",
    }
    if reset_attempts:
        # A select is a new decision: any removal queued before it is dropped.
        decided.update({"attempts": "0", "last_error": "''", "first_failed_at": "NULL", "operation": "''"})
    return decided


def _in_flight(connection):
    table = connection.ops.quote_name(ContactSync._meta.db_table)
    # The status value is a fixed identifier of ours, so it is written inline.
    return "%s.processing_status = '%s'" % (table, ProcessingStatus.PROCESSING.value)


def _unless_in_flight(values, pending, connection):
    """SET expressions (contacts.bulk.Sql) that write `values` ({column: SQL or
    Sql}) on a settled row but keep a row a worker is pushing as it is, giving it
    `pending` as its pending decision instead."""
    in_flight = _in_flight(connection)
    sets = {}
    for column, value in values.items():
        value = value if isinstance(value, Sql) else Sql(value)
        sets[column] = Sql("CASE WHEN %s THEN {column} ELSE %s END" % (in_flight, value.template), *value.values)
    sets["pending_decision"] = Sql("CASE WHEN %s THEN %%s ELSE '' END" % in_flight, pending)
    return sets


def requeue_changed(new_hashes, *, using="default"):
    """Queue again, like select(), the rows whose contact changed since they were
    synced: `new_hashes` is {ContactSync pk: the hash of the payload the contact
    builds now, or None when it builds none}. A row is requeued only if it is still
    Complete and its synced_hash differs; a row a worker is pushing gets a pending
    Select instead (the engine queues it again when its batch records), unless
    staff already decided something for it. Deciding both in one statement, under
    the row's lock, means a change saved while the batch records is never lost.
    Returns how many rows it queued or marked.
    """
    if not new_hashes:
        return 0
    connection = connections[using]
    now = timezone.now()
    requeued = {
        "sync_status": Sql("%s", SyncStatus.SELECTED),
        "processing_status": Sql("%s", ProcessingStatus.QUEUED),
        "attempts": "0",
        "next_attempt_at": Sql("%s", now),
        "lease_expires_at": "NULL",
        "claim_token": "NULL",
        "last_error": "''",
        "first_failed_at": "NULL",
    }
    written = update_from_values(
        ContactSync,
        {pk: (new_hash,) for pk, new_hash in new_hashes.items()},
        # The new hash is only compared: the engine writes synced_hash when it pushes.
        per_row={"synced_hash": None},
        fixed={**_unless_in_flight(requeued, PendingDecision.SELECT, connection), "updated_at": now},
        where=(
            "({v[synced_hash]} IS NULL OR {table}.synced_hash <> {v[synced_hash]}) "
            "AND (({table}.sync_status = %s AND {table}.processing_status = %s) "
            "OR (" + _in_flight(connection) + " AND {table}.pending_decision = ''))"
        ),
        where_params=[SyncStatus.COMPLETE, ProcessingStatus.COMPLETE],
        using=using,
    )
    return len(written)


# ---------------------------------------------------------------- decisions with a report

SELECT, UNSELECT, SKIP, RETRY = "select", "unselect", "skip", "retry"
ACTIONS = (SELECT, UNSELECT, SKIP, RETRY)


@dataclass(frozen=True)
class CRMReport:
    """What one decision did to one CRM's (contact, CRM) pairs of the contacts
    found; the four counts add up to the number of contacts found."""

    crm: str
    # Took the decision now (were not in that state before).
    changed: int = 0
    # In that state already: for select, still queued and made due now with a fresh
    # attempt budget; for skip and unselect, left as they were.
    already: int = 0
    # Being pushed: the decision is remembered and applied when the batch records.
    in_flight: int = 0
    # Retry only: not in Error (including rows being pushed), left alone.
    not_in_error: int = 0


@dataclass(frozen=True)
class Decision:
    action: str
    found: int
    crms: list

    @property
    def changed(self):
        return sum(report.changed for report in self.crms)

    @property
    def queued(self):
        """(contact, CRM) pairs queued by this decision: select queues the already
        queued pairs again, retry queues what it changed, skip and unselect none."""
        if self.action == SELECT:
            return sum(report.changed + report.already for report in self.crms)
        if self.action == RETRY:
            return sum(report.changed for report in self.crms)
        return 0


def decide(action, contacts, crms):
    """Take `action` (one of ACTIONS) for `contacts` (a queryset) and `crms`, as
    select(), unselect(), skip() and retry_failed() do, and report per CRM what it
    did. Counts the contacts, then two statements per call (select, skip, unselect)
    or one per CRM (retry), whatever the number of contacts. Raises UnknownCRM
    before anything changes."""
    crms = validate_crm_names(crms)
    with transaction.atomic(using=contacts.db):
        found = contacts.count()
        if not found or not crms:
            return Decision(action, found, [])
        return Decision(action, found, _REPORTERS[action](contacts, crms, found))


def _reported_select(contacts, crms, found):
    already = _count_in_state(contacts, crms, SyncStatus.SELECTED, ProcessingStatus.QUEUED)
    return _reports(crms, _select(contacts, crms), already, found)


def _reported_skip(contacts, crms, found):
    already = _count_in_state(contacts, crms, SyncStatus.SKIPPED, ProcessingStatus.NONE)
    return _reports(crms, _skip(contacts, crms), already, found)


def _reported_unselect(contacts, crms, found):
    # Every pair the UPDATE did not return is New already (with a row or without).
    done = _unselect(contacts, crms)
    reports = []
    for crm in crms:
        settled, in_flight = done.get(crm, (0, 0))
        reports.append(CRMReport(crm, changed=settled, already=found - settled - in_flight, in_flight=in_flight))
    return reports


def _reported_retry(contacts, crms, found):
    reports = []
    for crm in crms:
        changed = retry_syncs(ContactSync.objects.using(contacts.db).filter(contact__in=_pks(contacts), crm=crm))
        reports.append(CRMReport(crm, changed=changed, not_in_error=found - changed))
    return reports


_REPORTERS = {
    SELECT: _reported_select,
    UNSELECT: _reported_unselect,
    SKIP: _reported_skip,
    RETRY: _reported_retry,
}


def _pks(contacts):
    return contacts.order_by().values("pk")


def _count_in_state(contacts, crms, sync_status, processing_status):
    """{crm: how many of the contacts' rows for it are in this state}, in one query."""
    rows = ContactSync.objects.using(contacts.db).filter(
        contact__in=_pks(contacts), crm__in=crms, sync_status=sync_status, processing_status=processing_status
    )
    return dict(rows.order_by().values_list("crm").annotate(count=Count("pk")))


def _reports(crms, done, already_before, found):
    """CRMReports from an upsert's {crm: (settled, in flight)} and the count of
    pairs in the target state before it. A row counted before that a worker
    claimed since is in flight now, so `already` never exceeds what settled."""
    reports = []
    for crm in crms:
        settled, in_flight = done.get(crm, (0, 0))
        already = min(already_before.get(crm, 0), settled)
        reports.append(CRMReport(crm, changed=settled - already, already=already, in_flight=in_flight))
    return reports
