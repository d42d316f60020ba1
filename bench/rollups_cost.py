"""What the dashboard's rollup triggers add to the engine's hot path.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crmsync .venv/bin/python bench/rollups_cost.py

Runs in a throwaway database (test_<name>), DEBUG off as in production. One
worker with a backend that accepts everything at once (no HTTP) claims and records
--contacts queued rows in batches of --batch, alternately with the rollup triggers
on and off (ALTER TABLE ... DISABLE TRIGGER), --rounds times each; prints contacts/s
and milliseconds per batch for both, and the difference, with the 1-minute load
average. Then the triggers' own time inside one claim-sized UPDATE and one
bulk_create of attempts, from EXPLAIN ANALYZE. rollup_cost() is what bench/report.py
can call.
"""

import argparse
import logging
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crmsync_project.settings")
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "bench-rollups-" + secrets.token_hex(24))

import django

django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import setup_databases, setup_test_environment, teardown_databases  # noqa: E402

from integrations import rollups  # noqa: E402
from integrations.backends.base import CRMBackend, Outcome  # noqa: E402
from integrations.conf import SyncPolicy  # noqa: E402
from integrations.engine import SyncEngine  # noqa: E402

CRM = "brevo"  # rows need a registered CRM name; the backend below never calls Brevo
TABLES = (rollups.CONTACTS, rollups.SYNCS, rollups.ATTEMPTS)

FILL_SQL = """
INSERT INTO contacts_contact (email, first_name, last_name, phone, company, website, source_url,
                              attributes, enrichment, created_at, updated_at)
SELECT 'cost' || i || '@example.com', '', '', '', '', '', '', '{}', '{}', now(), now()
FROM generate_series(1, %(contacts)s) AS i;
INSERT INTO contacts_contactsync (contact_id, crm, sync_status, processing_status, attempts, next_attempt_at,
    last_error, external_id, synced_hash, created_at, updated_at, operation, pending_decision, crm_event,
    synced_email, warning, crm_process_id)
SELECT id, %(crm)s, 'selected', 'queued', 0, now() - interval '1 minute', '', '', '', now(), now(),
       '', '', '', '', '', ''
FROM contacts_contact;
"""

REQUEUE_SQL = """
UPDATE contacts_contactsync SET sync_status = 'selected', processing_status = 'queued', attempts = 0,
    next_attempt_at = now() - interval '1 minute'
"""


class NoopBackend(CRMBackend):
    name = CRM
    verbose_name = "No-op"

    def build_payload(self, contact):
        return {"email": contact.email}

    def push(self, items):
        return [Outcome.accepted(item, external_id=str(item.key)) for item in items]


def policy(batch_size):
    return SyncPolicy(
        crm=CRM,
        interval_minutes=5,
        batch_size=batch_size,
        max_instances=1,
        max_retries=3,
        retry_delay_minutes=5,
        retry_exponential=True,
        retry_max_delay_minutes=60,
        lease_seconds=300,
    )


def execute(sql, params=None):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def set_triggers(enabled):
    action = "ENABLE" if enabled else "DISABLE"
    for table, name in rollups._trigger_names("postgresql"):
        execute("ALTER TABLE %s %s TRIGGER %s" % (table, action, name))


def one_run(contacts, batch_size, triggers):
    execute(REQUEUE_SQL)
    execute("VACUUM ANALYZE contacts_contactsync")
    set_triggers(triggers)
    try:
        started = time.perf_counter()
        result = SyncEngine(NoopBackend(), policy(batch_size)).run(max_contacts=contacts)
        seconds = time.perf_counter() - started
    finally:
        set_triggers(True)
    assert result.accepted == contacts, result.accepted
    return contacts / seconds, 1000 * seconds / (contacts / batch_size)


def trigger_times(batch_size):
    """{trigger: ms} inside one claim-sized UPDATE and one bulk insert of attempts."""
    statements = [
        "UPDATE contacts_contactsync SET processing_status = 'processing' WHERE id IN "
        "(SELECT id FROM contacts_contactsync ORDER BY id LIMIT %d)" % batch_size,
        "INSERT INTO contacts_syncattempt (contact_id, crm, attempted_at, outcome, duration_ms, error) "
        "SELECT contact_id, crm, now(), 'accepted', 0, '' FROM contacts_contactsync ORDER BY id LIMIT %d" % batch_size,
    ]
    found = {}
    for sql in statements:
        execute("BEGIN")
        try:
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE) " + sql)
                for (line,) in cursor.fetchall():
                    if line.startswith(("Trigger crmsync", "Execution Time")):
                        label, _colon, rest = line.partition(":")
                        found["%s (%s)" % (label, sql.split()[0])] = float(rest.split("time=")[-1].split()[0])
        finally:
            execute("ROLLBACK")
    return found


def rollup_cost(contacts=20_000, batch_size=100, rounds=3):
    """{"with": [contacts/s, ms/batch], "without": [...], "added_ms_per_batch", "triggers": {...}}."""
    setup_test_environment()
    old_config = setup_databases(verbosity=0, interactive=False)
    logging.getLogger("integrations").setLevel(logging.WARNING)
    try:
        execute(FILL_SQL, {"contacts": contacts, "crm": CRM})
        rollups.rebuild()
        one_run(contacts, batch_size, True)  # warm up
        runs = {True: [], False: []}
        for _round in range(rounds):
            for triggers in (True, False):
                runs[triggers].append(one_run(contacts, batch_size, triggers))
        # The runs without triggers left the rollups behind: recount, as an operator would.
        rollups.rebuild()
        assert rollups.differences() == []
        figures = {
            "with": [statistics.median(run[i] for run in runs[True]) for i in (0, 1)],
            "without": [statistics.median(run[i] for run in runs[False]) for i in (0, 1)],
            "triggers": trigger_times(batch_size),
            "load_average": os.getloadavg()[0],
        }
        figures["added_ms_per_batch"] = figures["with"][1] - figures["without"][1]
        return figures
    finally:
        teardown_databases(old_config, verbosity=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("bench/rollups_cost.py needs PostgreSQL: set DATABASE_URL=postgres://...")
    figures = rollup_cost(args.contacts, args.batch, args.rounds)
    for label in ("with", "without"):
        speed, per_batch = figures[label]
        print(
            "%-8s rollup triggers: %7.0f contacts/s, %6.2f ms per batch of %d" % (label, speed, per_batch, args.batch)
        )
    print(
        "the rollups add %.2f ms per batch of %d (load %.2f)"
        % (figures["added_ms_per_batch"], args.batch, figures["load_average"])
    )
    for name, ms in figures["triggers"].items():
        print("  %-70s %7.3f ms" % (name, ms))


if __name__ == "__main__":
    main()
