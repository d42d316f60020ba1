"""Engine overhead with a backend that accepts everything at once (no HTTP).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crmsync .venv/bin/python bench/engine.py

Runs in a throwaway database (test_<name>), DEBUG off as in production. Prints
contacts/s of claim + record for 1 and 2 workers (processes, as qcluster runs
them) at batch 100 and 500, with each worker's CPU time per 1,000 contacts (less
noisy than wall time on shared cores) and the 1-minute load average; then the
claim latency per batch with 10,000 and with 1,000,000 rows in the table
(--throughput-only skips it). engine_throughput() is what bench/report.py calls.
Targets: at least 10,000 contacts/s for one worker; claim latency at 1,000,000
rows within 1.5x of 10,000.
"""

import argparse
import logging
import multiprocessing
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crmsync_project.settings")
# As in production: with DEBUG on, Django keeps every query in memory and wraps each
# cursor call, a cost no worker pays.
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "bench-engine-" + secrets.token_hex(24))

import django

django.setup()

from django.db import connection, connections  # noqa: E402
from django.test.utils import setup_databases, setup_test_environment, teardown_databases  # noqa: E402

from contacts.models import Contact, ContactSync  # noqa: E402
from integrations.backends.base import CRMBackend, Outcome  # noqa: E402
from integrations.conf import SyncPolicy  # noqa: E402
from integrations.engine import RunResult, SyncEngine  # noqa: E402

CRM = "brevo"  # rows need a registered CRM name; the backend below never calls Brevo


class NoopBackend(CRMBackend):
    name = CRM
    verbose_name = "No-op"

    def build_payload(self, contact):
        return {"email": contact.email}

    def push(self, items):
        return [Outcome.accepted(item, external_id=str(item.key)) for item in items]


POLICY = SyncPolicy(
    crm=CRM,
    interval_minutes=5,
    batch_size=100,
    max_instances=1,
    max_retries=3,
    retry_delay_minutes=5,
    retry_exponential=True,
    retry_max_delay_minutes=1440,
    lease_seconds=300,
)


def quiet_engine_log():
    """The engine logs a line per batch; thousands of them would bury the figures."""
    logging.getLogger("integrations").setLevel(logging.WARNING)


def fill(total, queued, scattered=True):
    """`total` contacts with a Brevo row each, `queued` of them due now, the rest
    Complete. Scattered: the due rows are spread evenly through the table (staff
    re-selected old contacts); otherwise they are the newest rows (new contacts)."""
    due = "id %%%% %d = 0" % (total // queued) if scattered else "id > %d" % (total - queued)
    with connection.cursor() as cursor:
        # CASCADE: whatever else refers to contacts (enrichments) goes too.
        cursor.execute(
            "TRUNCATE contacts_syncattempt, contacts_contactsync, contacts_contact, integrations_crmstate CASCADE"
        )
        insert_select(
            cursor,
            Contact,
            "generate_series(1, %d) i" % total,
            {"email": "'c' || i || '@example.com'", "first_name": "'F'", "last_name": "'L'"},
        )
        insert_select(
            cursor,
            ContactSync,
            "contacts_contact",
            {
                "contact": "id",
                "crm": "'%s'" % CRM,
                "sync_status": "CASE WHEN {due} THEN 'selected' ELSE 'complete' END".format(due=due),
                "processing_status": "CASE WHEN {due} THEN 'queued' ELSE 'complete' END".format(due=due),
                "next_attempt_at": "CASE WHEN {due} THEN now() - interval '1 minute' END".format(due=due),
            },
        )
        cursor.execute("ANALYZE")


def insert_select(cursor, model, source, expressions):
    """INSERT INTO model's table SELECT ... FROM source: `expressions` ({field name:
    SQL}) for some columns, now() for timestamps, each other field's default (so
    that a column added later needs no change here)."""
    columns, values, params = [], [], []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(connection.ops.quote_name(field.column))
        if field.name in expressions:
            values.append(expressions[field.name])
        elif getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            values.append("now()")
        else:
            values.append("%s")
            params.append(field.get_db_prep_save(field.get_default(), connection))
    cursor.execute(
        "INSERT INTO %s (%s) SELECT %s FROM %s" % (model._meta.db_table, ", ".join(columns), ", ".join(values), source),
        params,
    )


def worker_process(batch_size):
    """One worker's run until nothing is due: (contacts claimed, its CPU seconds)."""
    connections.close_all()
    started = time.process_time()
    result = SyncEngine(NoopBackend(), POLICY).run(batch_size=batch_size)
    cpu = time.process_time() - started
    connections.close_all()
    return result.claimed, cpu


def throughput(workers, queued, batch_size=100):
    """One run of `workers` processes (as qcluster runs them) over `queued` due
    contacts: {rate: contacts/s, cpu_ms: worker CPU ms per 1,000 contacts, load}.
    Each worker is a process of its own even alone, so that its CPU time is its own."""
    fill(queued, queued)
    connections.close_all()
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        results = pool.map(worker_process, [batch_size] * workers)
    seconds = time.perf_counter() - started
    claimed, cpu = sum(r[0] for r in results), sum(r[1] for r in results)
    complete = ContactSync.objects.filter(processing_status="complete").count()
    assert claimed == queued == complete, (claimed, queued, complete)
    return {"rate": claimed / seconds, "cpu_ms": cpu * 1_000_000 / claimed, "load": os.getloadavg()[0]}


def engine_throughput(workers=(1, 2), contacts=20_000, repeats=5, batch_sizes=(100,)):
    """The figures bench/report.py prints: {(batch size, workers): {rate, cpu_ms,
    load, rates}}, each the median of `repeats` runs (the cores are shared)."""
    figures = {}
    for batch_size in batch_sizes:
        for count in workers:
            runs = [throughput(count, contacts, batch_size) for _ in range(repeats)]
            figures[batch_size, count] = {
                "rate": statistics.median(r["rate"] for r in runs),
                "cpu_ms": statistics.median(r["cpu_ms"] for r in runs),
                "load": statistics.median(r["load"] for r in runs),
                "rates": sorted(r["rate"] for r in runs),
            }
    return figures


def print_throughput(figures, contacts):
    for (batch_size, workers), f in figures.items():
        print(
            "claim+record, batch %d, %d worker%s: median %6.0f contacts/s, worker CPU %.0f ms per 1,000 contacts"
            " (load %.2f; %d runs of %s: %s)"
            % (
                batch_size,
                workers,
                "s" if workers > 1 else " ",
                f["rate"],
                f["cpu_ms"],
                f["load"],
                len(f["rates"]),
                format(contacts, ","),
                ", ".join("%.0f" % rate for rate in f["rates"]),
            )
        )


def claim_latency(total, queued, scattered, batches=40):
    """Median milliseconds per batch of 100 of engine.claim(): the due rows locked,
    marked and loaded with their contacts (on PostgreSQL one statement, see
    integrations/claiming.py), what a worker waits for before its push."""
    fill(total, queued, scattered)
    engine = SyncEngine(NoopBackend(), POLICY)
    claim_ms = []
    for _ in range(batches):
        started = time.perf_counter()
        batch = engine.claim(100)
        claim_ms.append((time.perf_counter() - started) * 1000)
        assert len(batch.rows) == 100
        engine.push(batch)
        engine.record(batch, RunResult(CRM))
    return statistics.median(claim_ms)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=20_000, help="queued contacts for the throughput runs")
    parser.add_argument("--large", type=int, default=1_000_000, help="rows in the large table")
    parser.add_argument("--repeats", type=int, default=5, help="throughput runs per worker count")
    parser.add_argument("--batch-sizes", default="100,500", help="batch sizes of the throughput runs, comma-separated")
    parser.add_argument("--throughput-only", action="store_true", help="skip the claim latency (1,000,000 rows)")
    args = parser.parse_args()
    quiet_engine_log()
    setup_test_environment()
    old_config = setup_databases(verbosity=0, interactive=False)
    try:
        if connection.vendor != "postgresql":
            sys.exit("bench/engine.py measures PostgreSQL; set DATABASE_URL=postgres://...")
        print("database: PostgreSQL %s, %d cores" % (connection.pg_version, os.cpu_count()))
        # The database shares two cores with the workers: runs vary, so take the median.
        batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
        figures = engine_throughput((1, 2), args.contacts, args.repeats, batch_sizes)
        print_throughput(figures, args.contacts)
        one = figures[batch_sizes[0], 1]["rate"]
        print(
            "target 1 worker >= 10,000 contacts/s at batch %d: %s"
            % (batch_sizes[0], "met" if one >= 10_000 else "NOT met")
        )
        if args.throughput_only:
            return
        for scattered, layout in ((False, "due rows newest"), (True, "due rows scattered")):
            small = claim_latency(10_000, 5_000, scattered)
            large = claim_latency(args.large, 5_000, scattered)
            ratio = large / small
            print("median ms per claim of 100 (rows and contacts loaded), %s" % layout)
            print("  %9s rows: %6.2f" % ("10,000", small))
            print("  %9s rows: %6.2f" % (format(args.large, ","), large))
            print("  claim ratio %.2fx (target <= 1.5x: %s)" % (ratio, "met" if ratio <= 1.5 else "NOT met"))
    finally:
        connections.close_all()
        teardown_databases(old_config, verbosity=0)


if __name__ == "__main__":
    main()
