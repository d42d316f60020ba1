"""Staff decisions about which contacts go to which CRM.

This module is the only place that changes sync state on behalf of staff (the
worker's transitions live in integrations.engine). Every function takes a
queryset of contacts and a list of CRM names, runs one statement whatever the
number of contacts, and returns how many (contact, CRM) rows it changed.

A decision about a row a worker is pushing at that moment is not lost: it is kept
in `pending_decision` and the engine applies it when the batch records (a Skip
leaves the row Skipped whatever the push did; a Select queues it again).
"""

from django.db import connections
from django.db.models import F
from django.utils import timezone

from integrations.registry import validate_crm_names

from .models import ContactSync, PendingDecision, ProcessingStatus, SyncStatus

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
    "created_at",
    "updated_at",
)


def select(contacts, crms):
    """Queue contacts for CRMs: Selected / Queued, due now, attempts and error reset.

    Complete rows are queued again (a deliberate re-sync). A row being pushed is
    queued again when its batch records; it is not counted.
    """
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
    return _upsert(
        contacts,
        crms,
        sync_status=SyncStatus.SKIPPED,
        processing_status=ProcessingStatus.NONE,
        next_attempt_at=None,
        now=timezone.now(),
        reset_attempts=False,
        in_flight=PendingDecision.SKIP,
    )


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
    Returns how many rows took the decision now. Works on PostgreSQL and SQLite."""
    crms = validate_crm_names(crms)
    if not crms:
        return 0
    connection = connections[contacts.db]
    quote = connection.ops.quote_name
    table = quote(ContactSync._meta.db_table)
    contact_sql, contact_params = (
        contacts.order_by().values(selected_id=F("pk")).query.sql_with_params()
    )
    crm_sql = " UNION ALL ".join(["SELECT %s AS name"] * len(crms))
    next_at_field = ContactSync._meta.get_field("next_attempt_at")

    def at(value):
        return next_at_field.get_db_prep_value(value, connection)

    decided = {
        "sync_status": "excluded.sync_status",
        "processing_status": "excluded.processing_status",
        "next_attempt_at": "excluded.next_attempt_at",
        "lease_expires_at": "NULL",
        "claim_token": "NULL",
        "updated_at": "excluded.updated_at",
    }
    if reset_attempts:
        decided.update({"attempts": "0", "last_error": "''", "first_failed_at": "NULL"})
    updates = _unless_in_flight(decided, connection)
    # SQLite needs the WHERE on the SELECT to parse ON CONFLICT after it.
    sql = (
        "INSERT INTO {table} ({columns}) "
        "SELECT contact.selected_id, crm.name, %s, %s, 0, %s, '', '', '', '', %s, %s "
        "FROM ({contact_sql}) contact CROSS JOIN ({crm_sql}) crm WHERE 1 = 1 "
        "ON CONFLICT (contact_id, crm) DO UPDATE SET {updates} "
        "RETURNING processing_status"
    ).format(
        table=table,
        columns=", ".join(quote(column) for column in _UPSERT_COLUMNS),
        contact_sql=contact_sql,
        crm_sql=crm_sql,
        updates=", ".join(updates),
    )
    params = [
        sync_status,
        processing_status,
        at(next_attempt_at),
        at(now),
        at(now),
        *contact_params,
        *crms,
        in_flight,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return sum(1 for (status,) in cursor.fetchall() if status != ProcessingStatus.PROCESSING)


def _in_flight(connection):
    table = connection.ops.quote_name(ContactSync._meta.db_table)
    # The status value is a fixed identifier of ours, so it is written inline.
    return "%s.processing_status = '%s'" % (table, ProcessingStatus.PROCESSING.value)


def _unless_in_flight(values, connection):
    """SET clauses that write `values` ({column: SQL}) on a settled row but keep a
    row a worker is pushing as it is, giving it a pending decision (the statement's
    next %s parameter) instead."""
    quote = connection.ops.quote_name
    table = quote(ContactSync._meta.db_table)
    in_flight = _in_flight(connection)
    sets = [
        "%s = CASE WHEN %s THEN %s.%s ELSE %s END" % (quote(column), in_flight, table, quote(column), value)
        for column, value in values.items()
    ]
    return sets + ["pending_decision = CASE WHEN %s THEN %%s ELSE '' END" % in_flight]


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
    quote = connection.ops.quote_name
    table = quote(ContactSync._meta.db_table)
    now = ContactSync._meta.get_field("updated_at").get_db_prep_value(timezone.now(), connection)
    requeued = {
        "sync_status": "%s",
        "processing_status": "%s",
        "attempts": "0",
        "next_attempt_at": "%s",
        "lease_expires_at": "NULL",
        "claim_token": "NULL",
        "last_error": "''",
        "first_failed_at": "NULL",
    }
    sets = _unless_in_flight(requeued, connection) + ["updated_at = %s"]
    in_flight = _in_flight(connection)
    # UPDATE ... FROM (VALUES ...) pairs each row with its own hash and reads the
    # same on PostgreSQL and SQLite (whose VALUES columns are column1, column2).
    sql = (
        "UPDATE {table} SET {sets} FROM (VALUES {rows}) AS v "
        "WHERE {table}.{pk} = v.column1 AND (v.column2 IS NULL OR {table}.synced_hash <> v.column2) "
        "AND (({table}.sync_status = %s AND {table}.processing_status = %s) "
        "OR ({in_flight} AND {table}.pending_decision = ''))"
    ).format(
        table=table,
        sets=", ".join(sets),
        rows=", ".join(["(%s, %s)"] * len(new_hashes)),
        pk=quote(ContactSync._meta.pk.column),
        in_flight=in_flight,
    )
    params = [SyncStatus.SELECTED, ProcessingStatus.QUEUED, now, PendingDecision.SELECT, now]
    for pk, new_hash in new_hashes.items():
        params += [pk, new_hash]
    params += [SyncStatus.COMPLETE, ProcessingStatus.COMPLETE]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount
