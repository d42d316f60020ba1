"""The drift sweep reads only the contacts changed since its last run, and every
status change of a ContactSync writes two index entries fewer.

ContactSync: the index Django gives the contact foreign key goes (the unique
constraint on (contact, crm) finds rows by contact), and the erasure foreign key's
index holds only the rows that have one. Each status change is a non-HOT update
that writes every index of the row; at a million rows each is a cold page.

Contact.updated_at is auto_now, which only Model.save() honours: QuerySet.update,
raw SQL and other programs leave it as it was, and those are the changes the sweep
exists for. A trigger sets it whenever an UPDATE leaves it unchanged, so that it
moves on every change whatever wrote it. A statement that sets updated_at itself
(save(), bulk_update with it) keeps the value it wrote.
"""

import importlib

import django.db.models.deletion
from django.db import migrations, models

import integrations.registry

POSTGRESQL_TRIGGER = """
CREATE FUNCTION contacts_contact_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END
$$;
CREATE TRIGGER contacts_contact_touch BEFORE UPDATE ON contacts_contact FOR EACH ROW
    WHEN (NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at)
    EXECUTE FUNCTION contacts_contact_touch();
"""
POSTGRESQL_DROP = """
DROP TRIGGER IF EXISTS contacts_contact_touch ON contacts_contact;
DROP FUNCTION IF EXISTS contacts_contact_touch();
"""
# SQLite has no BEFORE trigger that changes the row: the AFTER trigger writes it
# again (recursive triggers are off, and the WHEN clause would stop one anyway).
# The text has Django's own format (six fraction digits, UTC), so that it compares
# as Django's values do.
SQLITE_TRIGGER = """
CREATE TRIGGER contacts_contact_touch AFTER UPDATE ON contacts_contact FOR EACH ROW
    WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE contacts_contact SET updated_at = strftime('%Y-%m-%d %H:%M:%f000', 'now') WHERE id = NEW.id;
END;
"""
SQLITE_DROP = "DROP TRIGGER IF EXISTS contacts_contact_touch;"


def _run(schema_editor, statements):
    # PostgreSQL takes the function and the trigger in one call; SQLite's text is
    # one statement.
    sql = statements.get(schema_editor.connection.vendor)
    if sql:
        schema_editor.execute(sql.strip(), params=None)


# 0007 says it: an AlterField of the contact foreign key may recreate its
# constraint without ON DELETE CASCADE; set it again (it is idempotent).
_on_delete = importlib.import_module("contacts.migrations.0007_contact_delete_cascades_in_database")


def create_trigger(apps, schema_editor):
    _run(schema_editor, {"postgresql": POSTGRESQL_TRIGGER, "sqlite": SQLITE_TRIGGER})


def drop_trigger(apps, schema_editor):
    _run(schema_editor, {"postgresql": POSTGRESQL_DROP, "sqlite": SQLITE_DROP})


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0013_contactsync_crm_process_id"),
    ]

    operations = [
        migrations.CreateModel(
            name="DriftSweep",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "crm",
                    models.CharField(
                        max_length=32,
                        unique=True,
                        validators=[integrations.registry.validate_crm_name],
                        verbose_name="CRM",
                    ),
                ),
                ("changed_since", models.DateTimeField(verbose_name="contacts changed since")),
                ("payload_fingerprint", models.CharField(max_length=64, verbose_name="payload fingerprint")),
                ("swept_at", models.DateTimeField(verbose_name="swept at")),
            ],
            options={
                "verbose_name": "drift sweep",
                "verbose_name_plural": "drift sweeps",
            },
        ),
        migrations.AddIndex(
            model_name="contact",
            index=models.Index(fields=["updated_at", "id"], name="contact_changed"),
        ),
        migrations.RunPython(create_trigger, drop_trigger, elidable=False),
        migrations.AlterField(
            model_name="contactsync",
            name="contact",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="syncs",
                to="contacts.contact",
                verbose_name="contact",
            ),
        ),
        migrations.AlterField(
            model_name="contactsync",
            name="erasure",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="syncs",
                to="contacts.erasure",
                verbose_name="erasure",
            ),
        ),
        migrations.RunPython(_on_delete.cascade, _on_delete.cascade, elidable=False),
        migrations.AddIndex(
            model_name="contactsync",
            index=models.Index(
                condition=models.Q(("erasure__isnull", False)), fields=["erasure"], name="contactsync_erasure"
            ),
        ),
    ]
