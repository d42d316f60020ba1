"""One UPDATE that gives many rows each their own values, and one INSERT of many
rows that keeps only those whose foreign key still has a target.

UPDATE ... FROM (VALUES ...) reads the same on PostgreSQL and SQLite (whose VALUES
columns are both named column1, column2, ...), and costs far less to build than a
CASE per row. The worker records a batch with it (integrations.engine) and staff
changes queue changed contacts again with it (contacts.selection).
"""

from django.db import connections, models


class Sql:
    """A SET expression written in SQL; `{column}` stands for the column's current
    value and each %s for one of `values`, prepared like the column's own values."""

    def __init__(self, template, *values):
        self.template = template
        self.values = values


def set_clauses(model, connection, values):
    """SET clauses and their parameters for `values` ({field name: value}): an Sql
    is written as its template, anything else is a parameter prepared like the
    field's own values."""
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    sets, params = [], []
    for name, value in values.items():
        field = model._meta.get_field(name)
        if isinstance(value, Sql):
            current = "%s.%s" % (table, quote(field.column))
            sets.append("%s = %s" % (quote(field.column), value.template.format(column=current)))
            params += [field.get_db_prep_value(v, connection) for v in value.values]
        else:
            sets.append("%s = %%s" % quote(field.column))
            params.append(field.get_db_prep_value(value, connection))
    return sets, params


def update_from_values(
    model, rows, *, per_row, fixed, matching=None, where="", where_params=(), returning=(), using="default"
):
    """UPDATE the rows of `model` whose pk is a key of `rows` in one statement;
    return the pks of the rows written, or with `returning` (field names) a
    (pk, value, ...) tuple per row written, each value as the row holds it once
    written (what a later statement would read, without that statement).

    - `rows` is {pk: (value, ...)}, one value per entry of `per_row`, each prepared
      like that field's values.
    - `per_row` is {field name: SQL}: in the SQL, `{v}` stands for the row's value
      and `{column}` for the column's current value. SQL None writes nothing: the
      value is there only for `where` to read.
    - `fixed` is {field name: value or Sql}, the same for every row (set_clauses).
    - `matching` is {field name: value}: only rows with these values are written
      (a guard such as the claim token), each value prepared like the field's.
    - `where` adds a condition, with `{table}` for the table and `{v[name]}` for
      the row's value of the per_row entry `name`; its %s take `where_params`.
    """
    if not rows:
        return []
    connection = connections[using]
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    value_columns = {name: "v.column%d" % position for position, name in enumerate(per_row, start=2)}
    sets = _per_row_sets(model, connection, per_row, value_columns)
    fixed_sets, set_params = set_clauses(model, connection, fixed)
    conditions, condition_params = _matching(model, connection, matching or {})
    if where:
        conditions.append("(%s)" % where.format(table=table, v=value_columns))
    returned = [model._meta.pk, *(model._meta.get_field(name) for name in returning)]
    sql = "UPDATE {table} SET {sets} FROM (VALUES {rows}) AS v WHERE {conditions} RETURNING {returned}".format(
        table=table,
        sets=", ".join(sets + fixed_sets),
        rows=", ".join(["(%s)" % ", ".join(["%s"] * (len(per_row) + 1))] * len(rows)),
        conditions=" AND ".join(["%s.%s = v.column1" % (table, quote(model._meta.pk.column)), *conditions]),
        returned=", ".join("%s.%s" % (table, quote(field.column)) for field in returned),
    )
    params = [*set_params, *_row_params(model, connection, rows, per_row), *condition_params, *where_params]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if not returning:
            return [pk for (pk, *_rest) in cursor.fetchall()]
        return cursor.fetchall()


def _per_row_sets(model, connection, per_row, value_columns):
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    sets = []
    for name, template in per_row.items():
        if template is not None:
            column = quote(model._meta.get_field(name).column)
            current = "%s.%s" % (table, column)
            sets.append("%s = %s" % (column, template.format(v=value_columns[name], column=current)))
    return sets


def _row_params(model, connection, rows, per_row):
    prepare = [_preparer(model._meta.get_field(name), connection) for name in per_row]
    params = []
    for pk, values in rows.items():
        params.append(pk)
        params += [prep(value) for prep, value in zip(prepare, values)]
    return params


# Django's own text and integer fields (exactly these classes: a subclass may
# prepare values its own way, as LowercaseEmailField does), whose preparation of a
# str (text) or an int (integer), or of None, returns it unchanged after a few
# calls per value. A foreign key prepares its value as its target field does.
_UNCHANGED = {
    **dict.fromkeys((models.CharField, models.TextField, models.EmailField, models.SlugField, models.URLField), str),
    **dict.fromkeys(
        (
            models.IntegerField,
            models.BigIntegerField,
            models.SmallIntegerField,
            models.PositiveIntegerField,
            models.PositiveSmallIntegerField,
            models.PositiveBigIntegerField,
            models.AutoField,
            models.BigAutoField,
        ),
        int,
    ),
}


def _preparer(field, connection):
    """A function preparing `field`'s values for the database, as
    field.get_db_prep_save does. A batch prepares thousands of values: a value
    Django's preparation would return unchanged is passed as it is."""
    target = field.target_field if type(field) is models.ForeignKey else field
    kind = _UNCHANGED.get(type(target))
    if kind is None:
        return lambda value: field.get_db_prep_save(value, connection)

    def prepare(value):
        if value is None or type(value) is kind:
            return value
        return field.get_db_prep_save(value, connection)

    return prepare


def _matching(model, connection, matching):
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    conditions, params = [], []
    for name, value in matching.items():
        field = model._meta.get_field(name)
        conditions.append("%s.%s = %%s" % (table, quote(field.column)))
        params.append(field.get_db_prep_value(value, connection))
    return conditions, params


def insert_from_values(model, rows, *, per_row, fixed, existing=None, using="default"):
    """INSERT one row of `model` per tuple of `rows` in one statement; return how
    many were inserted.

    - `rows` is [(value, ...)], one value per field named in `per_row`;
    - `fixed` is {field name: value}, the same for every row;
    - `existing` names a foreign key among `per_row`: only the rows whose target
      still exists are inserted, and on PostgreSQL each target is locked against
      deletion (FOR KEY SHARE, which an edit does not wait for) until the
      transaction ends. SQLite has one writer at a time: nothing can delete it
      in between.
    """
    if not rows:
        return 0
    connection = connections[using]
    quote = connection.ops.quote_name
    fields = [model._meta.get_field(name) for name in per_row]
    fixed_fields = [model._meta.get_field(name) for name in fixed]
    # VALUES guesses each column's type from its values (text when all are NULL):
    # a cast to the field's own type keeps the INSERT valid whatever they are.
    selected = ["CAST(v.column%d AS %s)" % (i, f.cast_db_type(connection)) for i, f in enumerate(fields, start=1)]
    source, lock = "(VALUES {rows}) AS v", ""
    if existing:
        target = model._meta.get_field(existing).target_field
        position = per_row.index(existing)
        source += " JOIN {target} AS t ON t.{key} = {value}".format(
            target=quote(target.model._meta.db_table), key=quote(target.column), value=selected[position]
        )
        lock = " FOR KEY SHARE OF t" if connection.features.has_select_for_update else ""
    sql = ("INSERT INTO {table} ({columns}) SELECT {selected} FROM " + source + "{lock}").format(
        table=quote(model._meta.db_table),
        columns=", ".join(quote(f.column) for f in fields + fixed_fields),
        selected=", ".join(selected + ["%s"] * len(fixed_fields)),
        rows=", ".join(["(%s)" % ", ".join(["%s"] * len(fields))] * len(rows)),
        lock=lock,
    )
    # In the order of the text: the fixed values in the SELECT list, then VALUES.
    params = [f.get_db_prep_save(value, connection) for f, value in zip(fixed_fields, fixed.values())]
    prepare = [_preparer(field, connection) for field in fields]
    for values in rows:
        params += [prep(value) for prep, value in zip(prepare, values)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount
