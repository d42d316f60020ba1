"""Sync rows and attempts die with their contact in the database itself, not only
through Django's collector.

A worker records a batch while staff may delete one of its contacts. Django's
delete() collects the related rows first and deletes the contact afterwards, so an
attempt recorded in between would refer to a deleted contact and make the delete
fail at commit (the foreign keys are deferred). With ON DELETE CASCADE the database
removes whatever refers to the contact at the moment it is deleted, whichever path
deleted it (delete(), a QuerySet, a cascade, raw SQL). PostgreSQL only: SQLite runs
one writer at a time, so the race cannot happen there.

An AlterField on these foreign keys would recreate the constraints without the
cascade: repeat this operation after one.
"""

from django.db import migrations

FOREIGN_KEYS = (("ContactSync", "contact_id"), ("SyncAttempt", "contact_id"))


def _set_on_delete(apps, schema_editor, action):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    contact_table = apps.get_model("contacts", "Contact")._meta.db_table
    quote = connection.ops.quote_name
    for model_name, column in FOREIGN_KEYS:
        table = apps.get_model("contacts", model_name)._meta.db_table
        with connection.cursor() as cursor:
            constraints = connection.introspection.get_constraints(cursor, table)
        for name, info in constraints.items():
            if info["foreign_key"] == (contact_table, "id") and info["columns"] == [column]:
                schema_editor.execute(
                    "ALTER TABLE %s DROP CONSTRAINT %s, ADD CONSTRAINT %s FOREIGN KEY (%s) "
                    "REFERENCES %s (id) %s DEFERRABLE INITIALLY DEFERRED"
                    % (quote(table), quote(name), quote(name), quote(column), quote(contact_table), action)
                )


def cascade(apps, schema_editor):
    _set_on_delete(apps, schema_editor, "ON DELETE CASCADE")


def no_action(apps, schema_editor):
    _set_on_delete(apps, schema_editor, "")


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0006_contactsync_pending_decision_first_failed"),
    ]

    operations = [migrations.RunPython(cascade, no_action, elidable=False)]
