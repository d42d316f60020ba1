"""The worker's claim in one statement, on PostgreSQL: lock the due rows, mark them
claimed and read them back with their contacts and erasures, in one round trip.

    WITH expired AS MATERIALIZED (SELECT ... LIMIT n FOR NO KEY UPDATE SKIP LOCKED),
         due AS MATERIALIZED (SELECT ... LIMIT n FOR NO KEY UPDATE SKIP LOCKED),
         claimed AS (UPDATE ... FROM expired, then due up to n in all, RETURNING ...)
    SELECT claimed, its contact, its erasure ...

Each MATERIALIZED select runs once and locks only the rows it returns (SKIP LOCKED:
another worker's rows are passed over, not waited for), so nesting it in the UPDATE
cannot lock more. Both have a constant LIMIT: with `n - expired` as the due
rows' LIMIT the planner guessed a tenth of the table and joined by scanning it
whole (14 ms at 10,000 rows). When leases expired, the due select may lock up to
that many rows it does not claim, until the statement ends.

Rows whose lease expired (their worker died) come first, by lease end, then the
queued ones by due time; each scan reads its own partial index and stops at the
limit. SQLite has no row locks: the engine keeps its compare-and-set
claim there (engine.SyncEngine._claim_by_compare_and_set).

The contact's row version (row_version: any write of the row changes it, by
save, QuerySet.update or raw SQL) is read with it, so that the record can tell
whether the contact was edited during the push by comparing versions alone.
"""

import functools
import inspect
from datetime import UTC, datetime
from typing import NamedTuple

from django.db import connections
from django.db.models import JSONField, signals
from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute

from contacts.bulk import Sql, set_clauses
from contacts.models import Contact, ContactSync, Erasure


class Claimed(NamedTuple):
    rows: list  # ContactSync instances with contact and erasure loaded, in claim order
    reclaimed: set  # pks of the rows whose lease had expired
    contact_versions: dict  # {contact pk: its row version when read}


def claim(rows, now, limit, changes, compiled=None):
    """Claim up to `limit` rows of `rows` (one CRM's ContactSync queryset) due at
    `now`, setting `changes` ({field name: value or bulk.Sql}) on each. `compiled`
    (a dict the caller keeps for one queryset) holds the due and expired rows'
    SELECTs once compiled: compiling them costs more than the claim's own CPU."""
    connection = connections[rows.db]
    known = _known(changes)
    sql, params = _statement(rows, now, limit, changes, known, connection, {} if compiled is None else compiled)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        fetched = cursor.fetchall()
    readers = [_Reader(ContactSync, connection, known), _Reader(Contact, connection), _Reader(Erasure, connection)]
    # Where field.set_cached_value puts a row's contact and erasure, without its two calls per row.
    contact_cache, erasure_cache = (ContactSync._meta.get_field(name).cache_name for name in ("contact", "erasure"))
    claimed, reclaimed, versions = [], set(), {}
    for values in fetched:
        row, contact, erasure = (reader.build(values) for reader in readers)
        cache = row._state.fields_cache
        cache[contact_cache], cache[erasure_cache] = contact, erasure
        claimed.append(row)
        if values[-2]:
            reclaimed.add(row.pk)
        if contact is not None:
            versions[contact.pk] = values[-1]
    return Claimed(claimed, reclaimed, versions)


def row_version(table):
    """SQL for the version of a row of `table` (a quoted name or alias): every
    UPDATE writes a new tuple, whose (xmin, ctid) differs from the old one's. xmin
    alone is the same for two versions written by one transaction (a worker run
    inside a caller's transaction); a ctid alone can be reused once the old tuple
    is pruned, and then xmin differs: a tuple is pruned only after the
    transaction that wrote it ends, and no later version can have its xmin."""
    return "{t}.xmin::text || {t}.ctid::text".format(t=table)


def _known(changes):
    """{attname: value} of the changes the claim need not read back: values set as
    they are, of a type the database returns converted (a moment, a UUID). Strings
    cost nothing to read, and reading them back keeps their plain type."""
    return {
        ContactSync._meta.get_field(name).attname: value
        for name, value in changes.items()
        if not isinstance(value, (str, Sql)) and value is not None
    }


def _statement(rows, now, limit, changes, known, connection, compiled):
    quote = connection.ops.quote_name
    table = quote(ContactSync._meta.db_table)
    expired, expired_params = _at(
        compiled, "expired", now, lambda at: _locking(rows.expired_leases(at), "lease_expires_at", connection)
    )
    due, due_params = _at(compiled, "due", now, lambda at: _locking(rows.queued_due(at), "next_attempt_at", connection))
    sets, set_params = set_clauses(ContactSync, connection, changes)
    contact, erasure = quote(Contact._meta.db_table), quote(Erasure._meta.db_table)
    sql = (
        "WITH expired (id, at) AS MATERIALIZED ({expired} LIMIT %s FOR NO KEY UPDATE SKIP LOCKED), "
        "due (id, at) AS MATERIALIZED ({due} LIMIT %s FOR NO KEY UPDATE SKIP LOCKED), "
        "picked AS (SELECT id, true AS reclaimed, at FROM expired "
        "UNION ALL (SELECT id, false, at FROM due ORDER BY at LIMIT %s - (SELECT count(*) FROM expired))), "
        "claimed AS (UPDATE {table} SET {sets} FROM picked WHERE {table}.{pk} = picked.id "
        "RETURNING {returned}, picked.reclaimed, picked.at) "
        "SELECT {selected}, claimed.reclaimed, {version} FROM claimed "
        "LEFT JOIN {contact} AS c ON c.{contact_pk} = claimed.{contact_id} "
        "LEFT JOIN {erasure} AS e ON e.{erasure_pk} = claimed.{erasure_id} "
        "ORDER BY claimed.reclaimed DESC, claimed.at, claimed.{pk}"
    ).format(
        expired=expired,
        due=due,
        table=table,
        sets=", ".join(sets),
        pk=quote(ContactSync._meta.pk.column),
        returned=", ".join("%s.%s" % (table, column) for column in _columns(ContactSync, quote)),
        selected=", ".join(
            [
                *(
                    "NULL" if field.attname in known else "claimed.%s" % quote(field.column)
                    for field in ContactSync._meta.concrete_fields
                ),
                *("c.%s" % column for column in _columns(Contact, quote)),
                *("e.%s" % column for column in _columns(Erasure, quote)),
            ]
        ),
        version=row_version("c"),
        contact=contact,
        contact_pk=quote(Contact._meta.pk.column),
        contact_id=quote(ContactSync._meta.get_field("contact").column),
        erasure=erasure,
        erasure_pk=quote(Erasure._meta.pk.column),
        erasure_id=quote(ContactSync._meta.get_field("erasure").column),
    )
    return sql, [*expired_params, limit, *due_params, limit, limit, *set_params]


# Compiled once with this moment, the SELECTs show where `now` goes among their
# parameters: no other value of a claim's SELECT can equal it.
_MARK = datetime(2001, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)


def _at(compiled, name, now, compile_at):
    """compile_at(now) -> (sql, params), the SQL compiled once into `compiled`
    and `now` put in its place among the parameters."""
    if name not in compiled:
        sql, params = compile_at(_MARK)
        places = [position for position, value in enumerate(params) if value == _MARK]
        if len(places) != 1:  # not the SELECT this expects: compile each time
            return compile_at(now)
        compiled[name] = sql, params, places[0]
    sql, params, place = compiled[name]
    params = list(params)
    params[place] = now
    return sql, params


def _locking(queryset, order_by, connection):
    """The SELECT of a row's pk and `order_by` column for `queryset`, ordered by that
    column (the partial index's), without its LIMIT and lock (added by the caller)."""
    selected = queryset.order_by(order_by).values_list("pk", order_by)
    sql, params = selected.query.get_compiler(connection=connection).as_sql()
    return sql, params


def _columns(model, quote):
    return [quote(field.column) for field in model._meta.concrete_fields]


class _Reader:
    """Builds one model's instances from its slice of a fetched row, with the
    conversions Django's own queries apply (a JSON field is decoded once here)."""

    def __init__(self, model, connection, known=None):
        """`known`: {attname: value} of fields not read back (NULL in the row), which
        every instance gets as they are."""
        self.model, self.db = model, connection.alias
        self.start = _offsets()[model]
        fields = model._meta.concrete_fields
        self.attnames = [field.attname for field in fields]
        known = known or {}
        self.known = [(self.attnames.index(attname), value) for attname, value in known.items()]
        self.converters = []
        for position, field in enumerate(fields):
            if field.attname in known:
                continue
            column = field.get_col(model._meta.db_table)
            found = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
            if found:
                self.converters.append((position, found, column, _decodes_plain_json(field)))
        self.connection = connection

    def build(self, fetched):
        if fetched[self.start] is None:
            return None  # LEFT JOIN found no row: no contact, or no erasure
        values = list(fetched[self.start : self.start + len(self.attnames)])
        for position, value in self.known:
            values[position] = value
        for position, converters, column, plain_json in self.converters:
            value = values[position]
            if plain_json and value == "{}":
                values[position] = {}  # what decoding gives, for the usual empty attributes
                continue
            for convert in converters:
                value = convert(value, column, self.connection)
            values[position] = value
        if not _plain(self.model):
            return self.model.from_db(self.db, self.attnames, values)
        # What Model.from_db leaves, without Model.__init__'s call per field (a
        # fifth of the worker's CPU): the values in the instance's dict, the state
        # of a row read from the database.
        instance = self.model.__new__(self.model)
        instance.__dict__.update(zip(self.attnames, values))
        instance._state = ModelState()
        instance._state.adding, instance._state.db = False, self.db
        return instance


def _decodes_plain_json(field):
    """Whether `field` is Django's own JSONField with the standard decoder."""
    return type(field) is JSONField and field.decoder is None


@functools.cache
def _plain(model):
    """Whether an instance of `model` can be built from its values alone: no field
    stores its value through a descriptor of its own (a file field does), and no
    receiver listens for the instance's creation (pre_init, post_init). Decided
    once per process: receivers connect when the apps load."""
    setters = [
        field.attname
        for field in model._meta.concrete_fields
        if hasattr(type(descriptor := inspect.getattr_static(model, field.attname, None)), "__set__")
        # A foreign key's id only drops the cached object, which a new instance lacks.
        and not isinstance(descriptor, ForeignKeyDeferredAttribute)
    ]
    return not setters and not signals.pre_init.has_listeners(model) and not signals.post_init.has_listeners(model)


def _offsets():
    sync, contact = len(ContactSync._meta.concrete_fields), len(Contact._meta.concrete_fields)
    return {ContactSync: 0, Contact: sync, Erasure: sync + contact}


def contact_versions(pks, *, using):
    """[(pk, row version)] of the contacts of `pks` that still exist, in one query
    with the keys as one array parameter (a hundred placeholders cost more to
    prepare than the read)."""
    connection = connections[using]
    quote = connection.ops.quote_name
    sql = "SELECT {pk}, {version} FROM {table} WHERE {pk} = ANY(%s)".format(
        pk=quote(Contact._meta.pk.column),
        version=row_version(quote(Contact._meta.db_table)),
        table=quote(Contact._meta.db_table),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [pks])
        return cursor.fetchall()
