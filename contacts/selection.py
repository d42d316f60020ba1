"""Staff decisions about which contacts go to which CRM.

This module is the only place that changes sync state on behalf of staff (the
worker's transitions live in integrations.engine). Every function takes a
queryset of contacts and a list of CRM names, runs one statement whatever the
number of contacts, and returns how many (contact, CRM) rows it changed.
"""

from django.db import connections
from django.db.models import F
from django.utils import timezone

from integrations.backends import validate_crm_names

from .models import ContactSync, ProcessingStatus, SyncStatus

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
    "created_at",
    "updated_at",
)


def select(contacts, crms):
    """Queue contacts for CRMs: Selected / Queued, due now, attempts and error reset.

    Complete rows are queued again (a deliberate re-sync). Rows being processed
    are left to finish, so the count can be lower than contacts x CRMs.
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
    )


def skip(contacts, crms):
    """Mark contacts as not to be synced to CRMs: Skipped, nothing queued.

    Rows being processed are left to finish.
    """
    return _upsert(
        contacts,
        crms,
        sync_status=SyncStatus.SKIPPED,
        processing_status=ProcessingStatus.NONE,
        next_attempt_at=None,
        now=timezone.now(),
        reset_attempts=False,
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
            updated_at=now,
        )
    )


def _upsert(contacts, crms, *, sync_status, processing_status, next_attempt_at, now, reset_attempts):
    """INSERT ... SELECT ... ON CONFLICT DO UPDATE over contacts x CRMs, sparing
    rows that a worker is processing. Works on PostgreSQL and SQLite."""
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

    updates = [
        "sync_status = excluded.sync_status",
        "processing_status = excluded.processing_status",
        "next_attempt_at = excluded.next_attempt_at",
        "lease_expires_at = NULL",
        "claim_token = NULL",
        "updated_at = excluded.updated_at",
    ]
    if reset_attempts:
        updates += ["attempts = 0", "last_error = ''"]
    # SQLite needs the WHERE on the SELECT to parse ON CONFLICT after it.
    sql = (
        "INSERT INTO {table} ({columns}) "
        "SELECT contact.selected_id, crm.name, %s, %s, 0, %s, '', '', '', %s, %s "
        "FROM ({contact_sql}) contact CROSS JOIN ({crm_sql}) crm WHERE 1 = 1 "
        "ON CONFLICT (contact_id, crm) DO UPDATE SET {updates} "
        "WHERE {table}.processing_status <> %s"
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
        ProcessingStatus.PROCESSING,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def requeue_changed(sync_hashes, *, using="default"):
    """Queue again, like select(), Complete rows whose contact changed since they
    were synced: `sync_hashes` is {ContactSync pk: the synced_hash the caller
    compared against}. A row is requeued only if it is still Complete with that
    hash, so a row synced again or taken by a worker in the meantime is left alone.
    One statement per call; returns how many rows it queued.
    """
    if not sync_hashes:
        return 0
    connection = connections[using]
    quote = connection.ops.quote_name
    table = quote(ContactSync._meta.db_table)
    now = ContactSync._meta.get_field("updated_at").get_db_prep_value(timezone.now(), connection)
    # UPDATE ... FROM (VALUES ...) pairs each row with its own hash and reads the
    # same on PostgreSQL and SQLite (whose VALUES columns are column1, column2).
    sql = (
        "UPDATE {table} SET sync_status = %s, processing_status = %s, attempts = 0, "
        "next_attempt_at = %s, lease_expires_at = NULL, claim_token = NULL, "
        "last_error = '', updated_at = %s "
        "FROM (VALUES {rows}) AS v "
        "WHERE {table}.{pk} = v.column1 AND {table}.synced_hash = v.column2 "
        "AND {table}.sync_status = %s AND {table}.processing_status = %s"
    ).format(
        table=table,
        rows=", ".join(["(%s, %s)"] * len(sync_hashes)),
        pk=quote(ContactSync._meta.pk.column),
    )
    params = [SyncStatus.SELECTED, ProcessingStatus.QUEUED, now, now]
    for pk, synced_hash in sync_hashes.items():
        params += [pk, synced_hash]
    params += [SyncStatus.COMPLETE, ProcessingStatus.COMPLETE]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount
