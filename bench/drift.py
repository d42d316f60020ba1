"""The drift sweep's cost with 100,000 and 1,000,000 Complete rows and 100 changed
contacts: it should grow with what changed, not with the table.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crmsync .venv/bin/python bench/drift.py

Runs in a throwaway database (test_<name>). For each size it fills the table (one
Complete row per contact for a CRM whose payload is the email, with the hash of that
payload, the contacts last changed two days ago), runs a first sweep (it reads every
row: the CRM has no watermark yet), changes the email of 100 contacts spread through
the table with QuerySet.update (no signal), and times:

  changes  requeue_drifted(): reads the contacts changed since the last sweep
  full     requeue_drifted(full=True): every Complete row, as every sweep did before

with the rows whose payload each one built, and the 1-minute load average.
bench/report.py calls drift_figures().
"""

import argparse
import os
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crmsync_project.settings")
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "bench-drift-" + secrets.token_hex(24))

import django

django.setup()

from django.db import connection, connections  # noqa: E402
from django.db.models import Value  # noqa: E402
from django.db.models.functions import Concat  # noqa: E402
from django.test.utils import (  # noqa: E402
    override_settings,
    setup_databases,
    setup_test_environment,
    teardown_databases,
)

from bench.engine import insert_select  # noqa: E402
from bench.report_support import NoopBackend  # noqa: E402
from contacts.models import Contact, ContactSync  # noqa: E402
from integrations import resync  # noqa: E402

CRM = NoopBackend.name  # payload {"email": ...}: its hash can be written in SQL
SIZES = (100_000, 1_000_000)
CHANGED = 100
# The payload hash the engine stores (integrations.engine.payload_hash) of
# {"email": email}, written by PostgreSQL.
PAYLOAD_HASH_SQL = "encode(sha256(convert_to('{\"email\":\"' || email || '\"}', 'UTF8')), 'hex')"


def fill(total):
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE contacts_syncattempt, contacts_contactsync, contacts_contact, contacts_driftsweep"
            " RESTART IDENTITY CASCADE"
        )
        insert_select(
            cursor,
            Contact,
            "generate_series(1, %d) i" % total,
            {"email": "'c' || i || '@example.com'", "first_name": "'F'", "last_name": "'L'"},
        )
        cursor.execute("UPDATE contacts_contact SET updated_at = now() - interval '2 days'")
        insert_select(
            cursor,
            ContactSync,
            "contacts_contact",
            {
                "contact": "id",
                "crm": "'%s'" % CRM,
                "sync_status": "'complete'",
                "processing_status": "'complete'",
                "synced_hash": PAYLOAD_HASH_SQL,
            },
        )
        cursor.execute("VACUUM ANALYZE contacts_contact")
        cursor.execute("VACUUM ANALYZE contacts_contactsync")


def timed_sweep(built, **options):
    built.clear()
    started = time.perf_counter()
    requeued = resync.requeue_drifted(CRM, **options)[CRM]
    return {"seconds": time.perf_counter() - started, "read": len(built), "requeued": requeued}


def change_emails(count, total):
    """Give `count` contacts spread through the table a new email, with a
    QuerySet.update (no signal, and no updated_at in the statement)."""
    step = total // count
    ids = list(range(step, total + 1, step))[:count]
    Contact.objects.filter(pk__in=ids).update(email=Concat(Value("x"), "email"))


def sweeps(total):
    """The first sweep, then the two sweeps after CHANGED contacts changed."""
    fill(total)
    built = []
    build = NoopBackend.build_payload

    def counting(self, contact):
        if contact.pk is not None:  # not the fingerprint's probe
            built.append(contact.pk)
        return build(self, contact)

    NoopBackend.build_payload = counting
    try:
        first = timed_sweep(built)
        change_emails(CHANGED, total)
        changes = timed_sweep(built)
        # Complete again with the old hash: the full sweep finds the same changes.
        ContactSync.objects.filter(crm=CRM).update(sync_status="complete", processing_status="complete")
        full = timed_sweep(built, full=True)
    finally:
        NoopBackend.build_payload = build
    return {"first": first, "changes": changes, "full": full, "load": os.getloadavg()[0]}


def drift_figures(sizes=SIZES):
    """{size: sweeps(size)}; needs a PostgreSQL test database set up."""
    with override_settings(CRMSYNC_EXTRA_BACKENDS=["bench.report_support.NoopBackend"], NOOP_ENABLED="1"):
        return {total: sweeps(total) for total in sizes}


def print_figures(figures):
    print("drift sweep, %d contacts changed by QuerySet.update (seconds / rows read / queued)" % CHANGED)
    for total, figure in figures.items():
        cells = "  ".join(
            "%s %7.3f s %9s %4d"
            % (name, figure[name]["seconds"], format(figure[name]["read"], ","), figure[name]["requeued"])
            for name in ("first", "changes", "full")
        )
        print("  %10s Complete rows: %s   load %.2f" % (format(total, ","), cells, figure["load"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="Complete rows, comma-separated")
    args = parser.parse_args()
    setup_test_environment()
    old_config = setup_databases(verbosity=0, interactive=False)
    try:
        if connection.vendor != "postgresql":
            sys.exit("bench/drift.py measures PostgreSQL; set DATABASE_URL=postgres://...")
        print("database: PostgreSQL %s, %d cores" % (connection.pg_version, os.cpu_count()))
        print_figures(drift_figures([int(size) for size in args.sizes.split(",")]))
    finally:
        connections.close_all()
        teardown_databases(old_config, verbosity=0)


if __name__ == "__main__":
    main()
