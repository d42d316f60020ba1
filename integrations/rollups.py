"""Counts the dashboard reads, kept exact by database triggers as rows are written.

Three rollups (integrations.models): ContactSync rows per CRM, sync status,
processing status and detached (contact deleted locally); SyncAttempt rows per
CRM, outcome and quarter hour; Contact rows. Triggers in the database keep them,
so every write path counts alike: the engine's set-based UPDATEs and bulk_create,
staff's bulk updates, imports, QuerySet.delete(), cascades, raw SQL.

- PostgreSQL: statement-level triggers with transition tables add one delta row
  per key a statement changed (a batch of 100 rows claimed is two delta rows).
  Writers only ever INSERT, so concurrent workers never wait on a shared row and
  cannot deadlock on one. Now and then (COMPACT_SHARE of the statements that wrote a
  delta) a trigger folds the deltas into one row per key, under an advisory lock
  that a busy writer does not wait for: a key's count is always the sum of its rows.
- SQLite: row-level triggers add to the key's one row in place (SQLite has one
  writer at a time, and no statement-level triggers).

`rebuild` recounts from the tables (migration 0008, `manage.py rebuild_rollups`),
`differences` compares with a real count (`rebuild_rollups --check`).
"""

from datetime import datetime

from django.db import connections, transaction
from django.db.models import Sum

from .models import AttemptCount, ContactCount, SyncStatusCount

# pg_advisory_xact_lock key of the compaction and the rebuild ("crms").
LOCK_KEY = 0x63726D73
# The share of delta-writing statements that try to compact (PostgreSQL).
COMPACT_SHARE = 0.05
SLOT_SECONDS = 15 * 60

CONTACTS = "contacts_contact"
SYNCS = "contacts_contactsync"
ATTEMPTS = "contacts_syncattempt"
SYNC_COUNTS = SyncStatusCount._meta.db_table
ATTEMPT_COUNTS = AttemptCount._meta.db_table
CONTACT_COUNTS = ContactCount._meta.db_table


def _slot(vendor, column):
    """SQL for the start of the quarter hour (UTC) that `column` falls in."""
    if vendor == "postgresql":
        return "date_bin('15 minutes', %s, TIMESTAMPTZ '2000-01-01 00:00:00+00')" % column
    # SQLite keeps datetimes as UTC text; the slot is written in the same form.
    return "datetime((CAST(strftime('%%s', %s) AS INTEGER) / %d) * %d, 'unixepoch')" % (
        column,
        SLOT_SECONDS,
        SLOT_SECONDS,
    )


def _rollups(vendor):
    """(rollup table, source table, [(key column, SQL of the key over a source
    row, with {row} for the row)], source columns the key is made of)."""
    return (
        (
            SYNC_COUNTS,
            SYNCS,
            [
                ("crm", "{row}.crm"),
                ("sync_status", "{row}.sync_status"),
                ("processing_status", "{row}.processing_status"),
                ("detached", "({row}.contact_id IS NULL)"),
            ],
            ["crm", "sync_status", "processing_status", "contact_id"],
        ),
        (
            ATTEMPT_COUNTS,
            ATTEMPTS,
            [
                ("crm", "{row}.crm"),
                ("outcome", "{row}.outcome"),
                ("period_start", _slot(vendor, "{row}.attempted_at")),
            ],
            ["crm", "outcome", "attempted_at"],
        ),
        (CONTACT_COUNTS, CONTACTS, [], []),
    )


# Reading


def status_counts(using="default"):
    """{(crm, sync_status, processing_status, detached): rows}, without zeros."""
    rows = (
        SyncStatusCount.objects.using(using)
        .values_list("crm", "sync_status", "processing_status", "detached")
        .annotate(rows=Sum("number"))
        .order_by()
    )
    return {
        (crm, sync, processing, bool(detached)): number for crm, sync, processing, detached, number in rows if number
    }


def contact_count(using="default"):
    return ContactCount.objects.using(using).aggregate(contacts=Sum("number"))["contacts"] or 0


def attempts_since(start, outcome, using="default"):
    """[(crm, quarter hour start, attempts)] with `outcome` from `start` (a quarter
    hour's start) on."""
    rows = (
        AttemptCount.objects.using(using)
        .filter(period_start__gte=start, outcome=outcome)
        .values_list("crm", "period_start")
        .annotate(attempts=Sum("number"))
        .order_by()
    )
    return [row for row in rows if row[2]]


# Keeping them right


def compact(using="default"):
    """Fold every delta row into one row per key and drop the keys counted down to
    zero (a quarter hour pruned whole). Waits for a compaction under way."""
    connection = connections[using]
    with transaction.atomic(using=using), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT crmsync_compact_counts(true)")
            return
        # SQLite keeps one row per key already; only the zeros remain to drop.
        for rollup, _source, _key, _watched in _rollups(connection.vendor):
            cursor.execute("DELETE FROM %s WHERE number = 0" % rollup)


def rebuild(using="default"):
    """Recount every rollup from its table, set-based, in one transaction. On
    PostgreSQL writers wait until it commits (SHARE locks), so no change is
    counted twice or missed."""
    connection = connections[using]
    with transaction.atomic(using=using), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The advisory lock first: a writer holding it (compacting) never waits for ours.
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
            cursor.execute("LOCK TABLE %s, %s, %s IN SHARE MODE" % (CONTACTS, SYNCS, ATTEMPTS))
        for rollup, source, key, _watched in _rollups(connection.vendor):
            cursor.execute("DELETE FROM %s" % rollup)
            columns = "".join("%s, " % column for column, _sql in key)
            count = _count_query(source, key, extra=", %s" % _false(connection.vendor))
            cursor.execute("INSERT INTO %s (%snumber, delta) %s" % (rollup, columns, count))


def differences(using="default"):
    """[(rollup table, key, rollup's count, real count)] for every key where the
    rollup and a real COUNT over the table disagree; [] when all are right."""
    connection = connections[using]
    found = []
    outermost = not connection.in_atomic_block
    with transaction.atomic(using=using), connection.cursor() as cursor:
        if connection.vendor == "postgresql" and outermost:
            # One snapshot for both sides, while workers write.
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        for rollup, source, key, _watched in _rollups(connection.vendor):
            rolled = _grouped(cursor, _sum_query(rollup, key))
            real = _grouped(cursor, _count_query(source, key))
            for group in sorted(set(rolled) | set(real), key=repr):
                if rolled.get(group, 0) != real.get(group, 0):
                    found.append((rollup, group, rolled.get(group, 0), real.get(group, 0)))
    return found


def _count_query(source, key, extra=""):
    """SELECT each key and COUNT(*) over `source`, grouped by the key."""
    expressions = [sql.format(row="r") for _column, sql in key]
    select = "".join("%s, " % expression for expression in expressions)
    group = " GROUP BY %s" % ", ".join(expressions) if key else ""
    return "SELECT %scount(*)%s FROM %s AS r%s" % (select, extra, source, group)


def _sum_query(rollup, key):
    columns = [column for column, _sql in key]
    select = "".join("%s, " % column for column in columns)
    group = " GROUP BY %s" % ", ".join(columns) if key else ""
    return "SELECT %ssum(number) FROM %s%s" % (select, rollup, group)


def _false(vendor):
    return "false" if vendor == "postgresql" else "0"


def _grouped(cursor, sql):
    cursor.execute(sql)
    return {tuple(map(_comparable, group)): number for *group, number in cursor.fetchall() if number}


def _comparable(value):
    # SQLite hands back a rollup's quarter hour as a datetime (its declared type)
    # and the same SQL over the source as text.
    return str(value) if isinstance(value, datetime) else value


# The triggers


def install_triggers(using="default"):
    """Create (or replace) the triggers that keep the rollups; the rollups are
    right only after a rebuild of what the tables held before."""
    connection = connections[using]
    statements = _postgresql_ddl() if connection.vendor == "postgresql" else _sqlite_ddl()
    with transaction.atomic(using=using), connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def drop_triggers(using="default"):
    connection = connections[using]
    with transaction.atomic(using=using), connection.cursor() as cursor:
        for table, name in _trigger_names(connection.vendor):
            on = " ON %s" % table if connection.vendor == "postgresql" else ""
            cursor.execute("DROP TRIGGER IF EXISTS %s%s" % (name, on))
        if connection.vendor == "postgresql":
            counters = ["%s()" % _function(source) for _rollup, source, _key, _watched in _rollups("postgresql")]
            for function in ["crmsync_compact_counts(boolean)", "crmsync_clear_counts()", *counters]:
                cursor.execute("DROP FUNCTION IF EXISTS %s" % function)


def missing_triggers(using="default"):
    """The names of the rollup triggers the database lacks. SQLite drops a table's
    triggers when a migration rebuilds the table (an AlterField, most AddFields)."""
    connection = connections[using]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        present = {name for (name,) in cursor.fetchall()}
    return [name for _table, name in _trigger_names(connection.vendor) if name not in present]


def after_migrate(using="default", plan=None, **kwargs):
    """post_migrate: put back triggers a migration dropped, and recount. On SQLite
    also after a flush (post_migrate without a plan), which empties the tables
    one by one with triggers firing into rollups already emptied."""
    connection = connections[using]
    if missing_triggers(using):
        install_triggers(using)
        rebuild(using)
    elif connection.vendor == "sqlite" and plan is None:
        rebuild(using)


def _function(source):
    return "crmsync_count_%s" % source


def _events(key):
    return ("insert", "update", "delete") if key else ("insert", "delete")


def _trigger_names(vendor):
    names = []
    for _rollup, source, key, _watched in _rollups(vendor):
        events = _events(key) + (("truncate",) if vendor == "postgresql" else ())
        names += [(source, "%s_%s" % (_function(source), event)) for event in events]
    return names


def _postgresql_ddl():
    statements = [PG_CLEAR, _pg_compaction()]
    for rollup, source, key, _watched in _rollups("postgresql"):
        function = _function(source)
        statements.append(_pg_count_function(function, rollup, key))
        for event in _events(key):
            statements.append(
                "CREATE OR REPLACE TRIGGER {function}_{event} AFTER {event} ON {source} REFERENCING {tables} "
                "FOR EACH STATEMENT EXECUTE FUNCTION {function}()".format(
                    function=function, event=event, source=source, tables=PG_TRANSITION_TABLES[event]
                )
            )
        statements.append(
            "CREATE OR REPLACE TRIGGER %s_truncate AFTER TRUNCATE ON %s FOR EACH STATEMENT "
            "EXECUTE FUNCTION crmsync_clear_counts('%s')" % (function, source, rollup)
        )
    return statements


PG_TRANSITION_TABLES = {
    "insert": "NEW TABLE AS new_rows",
    "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "OLD TABLE AS old_rows",
}

PG_CLEAR = """
CREATE OR REPLACE FUNCTION crmsync_clear_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DELETE FROM %I', TG_ARGV[0]);
    RETURN NULL;
END $$
"""

PG_COUNT = """
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {rollup} ({columns}number, delta)
        SELECT {new}count(*), true FROM new_rows AS r{group} HAVING count(*) > 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {rollup} ({columns}number, delta)
        SELECT {old}-count(*), true FROM old_rows AS r{group} HAVING count(*) > 0;
    ELSE
        -- A row whose key did not change adds 1 and takes 1: no delta for it.
        INSERT INTO {rollup} ({columns}number, delta)
        SELECT {columns}sum(number), true
        FROM (SELECT {new_as}1 AS number FROM new_rows AS r
              UNION ALL SELECT {old_as}-1 FROM old_rows AS r) AS moved
        {group_columns} HAVING sum(number) <> 0;
    END IF;
    IF FOUND AND random() < {share} THEN
        PERFORM crmsync_compact_counts(false);
    END IF;
    RETURN NULL;
END $$
"""


def _pg_count_function(function, rollup, key):
    expressions = [sql.format(row="r") for _column, sql in key]
    columns = [column for column, _sql in key]
    return PG_COUNT.format(
        function=function,
        rollup=rollup,
        columns="".join("%s, " % column for column in columns),
        new="".join("%s, " % expression for expression in expressions),
        old="".join("%s, " % expression for expression in expressions),
        group=" GROUP BY %s" % ", ".join(expressions) if key else "",
        new_as="".join("%s AS %s, " % pair for pair in zip(expressions, columns)),
        old_as="".join("%s AS %s, " % pair for pair in zip(expressions, columns)),
        group_columns="GROUP BY %s" % ", ".join(columns) if key else "",
        share=COMPACT_SHARE,
    )


PG_COMPACT = """
CREATE OR REPLACE FUNCTION crmsync_compact_counts(wait boolean) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF wait THEN
        PERFORM pg_advisory_xact_lock({lock});
    -- One compaction at a time, and never one that would wait: a writer that finds
    -- one under way leaves its deltas to the next. Its statements need their own
    -- snapshots (READ COMMITTED) to see the last compaction's result.
    ELSIF current_setting('transaction_isolation') <> 'read committed' OR NOT pg_try_advisory_xact_lock({lock}) THEN
        RETURN false;
    END IF;
{steps}
    RETURN true;
END $$
"""

PG_COMPACT_STEP = """
    WITH keys AS (SELECT DISTINCT {columns} FROM {rollup} WHERE delta),
    gone AS (DELETE FROM {rollup} AS c USING keys WHERE {match} RETURNING {returned}c.number)
    INSERT INTO {rollup} ({columns_list}number, delta)
    SELECT {columns_list}sum(number), false FROM gone {group} HAVING sum(number) <> 0;
"""


def _pg_compaction():
    steps = []
    for rollup, _source, key, _watched in _rollups("postgresql"):
        columns = [column for column, _sql in key]
        steps.append(
            PG_COMPACT_STEP.format(
                rollup=rollup,
                # A rollup without a key (the contacts) compacts when it has any delta.
                columns=", ".join(columns) if key else "1 AS any_delta",
                match=" AND ".join("c.%s = keys.%s" % (column, column) for column in columns) or "true",
                returned="".join("c.%s, " % column for column in columns),
                columns_list="".join("%s, " % column for column in columns),
                group="GROUP BY %s" % ", ".join(columns) if key else "",
            )
        )
    return PG_COMPACT.format(lock=LOCK_KEY, steps="".join(steps))


def _sqlite_ddl():
    statements = []
    for rollup, source, key, watched in _rollups("sqlite"):
        function = _function(source)
        statements += ["DROP TRIGGER IF EXISTS %s_%s" % (function, event) for event in _events(key)]
        statements.append(
            "CREATE TRIGGER %s_insert AFTER INSERT ON %s BEGIN %s END"
            % (function, source, _sqlite_add(rollup, key, "NEW", 1))
        )
        statements.append(
            "CREATE TRIGGER %s_delete AFTER DELETE ON %s BEGIN %s END"
            % (function, source, _sqlite_add(rollup, key, "OLD", -1))
        )
        if key:
            changed = " OR ".join(
                "%s IS NOT %s" % (sql.format(row="OLD"), sql.format(row="NEW")) for _column, sql in key
            )
            statements.append(
                "CREATE TRIGGER %s_update AFTER UPDATE OF %s ON %s WHEN %s BEGIN %s %s END"
                % (
                    function,
                    ", ".join(watched),
                    source,
                    changed,
                    _sqlite_add(rollup, key, "OLD", -1),
                    _sqlite_add(rollup, key, "NEW", 1),
                )
            )
    return statements


def _sqlite_add(rollup, key, row, amount):
    """Add `amount` to the key's one row, made first if the key has none."""
    expressions = [sql.format(row=row) for _column, sql in key]
    match = " AND ".join("%s = %s" % (column, expression) for (column, _sql), expression in zip(key, expressions))
    match = match or "1"
    return (
        "INSERT INTO {rollup} ({columns}number, delta) SELECT {values}0, 0 "
        "WHERE NOT EXISTS (SELECT 1 FROM {rollup} WHERE {match}); "
        "UPDATE {rollup} SET number = number + ({amount}) "
        "WHERE id = (SELECT min(id) FROM {rollup} WHERE {match});"
    ).format(
        rollup=rollup,
        columns="".join("%s, " % column for column, _sql in key),
        values="".join("%s, " % expression for expression in expressions),
        match=match,
        amount=amount,
    )
