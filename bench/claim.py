"""What one batch of 100 costs the engine at 10,000 and at 1,000,000 rows, with the
due rows the newest in the table or scattered through it.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crmsync .venv/bin/python bench/claim.py

Runs in a throwaway database (test_<name>). For each size and layout it fills the
table (bench/engine.py's fill: one Brevo row per contact, 5,000 of them due, the
rest Complete), then runs 40 batches through the engine with a backend that accepts
everything (no HTTP) and prints the median milliseconds per batch of each step:

  lock    the claim statement: on PostgreSQL one statement locks the due rows
          (FOR NO KEY UPDATE SKIP LOCKED), marks them Processing and returns them
          with their contacts (integrations/claiming.py)
  mark    a separate UPDATE marking them Processing (0 with the one-statement
          claim; SQLite's compare-and-set claim has one)
  load    the rest of engine.claim(): building the rows and contacts in Python
  record  engine.record(): the Complete rows and their SyncAttempt rows

and, for one more batch, the pages each statement touched (EXPLAIN ANALYZE BUFFERS,
in a savepoint rolled back): shared-buffer hits + pages read from outside shared
buffers. What "cold" means here: PostgreSQL's shared_buffers is 128 MB by default,
smaller than the 1,000,000-row tables and indexes, so the pages of scattered rows
mostly come from the operating system's page cache (the machine has room for all of
it), not from disk. The bench neither drops that cache nor restarts the server; the
"read" column says how many pages came from outside shared buffers.

The ratios (1,000,000 / 10,000) are what the issue's target is about: <= 1.5x.
bench/report.py calls claim_figures().
"""

import argparse
import json
import os
import secrets
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crmsync_project.settings")
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "bench-claim-" + secrets.token_hex(24))

import django

django.setup()

from django.db import connection, connections  # noqa: E402
from django.test.utils import setup_databases, setup_test_environment, teardown_databases  # noqa: E402

from bench.engine import POLICY, NoopBackend, fill  # noqa: E402
from integrations.engine import RunResult, SyncEngine  # noqa: E402

SIZES = (10_000, 1_000_000)
LAYOUTS = (("newest", False), ("scattered", True))
DUE = 5_000
BATCHES = 40
STEPS = ("lock", "mark", "load", "record")


def load_average():
    return os.getloadavg()[0]


def _step_of(sql):
    """Which step of the claim a statement belongs to (None: not one of ours)."""
    if "SKIP LOCKED" in sql:
        return "lock"
    if sql.startswith('UPDATE "contacts_contactsync"') and '"attempts" = (' in sql:
        return "mark"
    return None


@contextmanager
def timed_statements(spent):
    """Add each lock / mark statement's milliseconds to `spent` {step: [ms]}."""

    def wrapper(execute, sql, params, many, context):
        step = _step_of(sql)
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            if step:
                spent[step][-1] += (time.perf_counter() - started) * 1000

    with connection.execute_wrapper(wrapper):
        yield


@contextmanager
def explained_statements(pages):
    """Before each statement, run it once under EXPLAIN (ANALYZE, BUFFERS) and
    record {label: (pages touched, pages read from outside shared buffers)}; inside
    a transaction in a savepoint that is rolled back, so the real statement still
    does the work. Outside one only plain SELECTs are explained."""

    def wrapper(execute, sql, params, many, context):
        in_transaction = connection.in_atomic_block
        if not many and (in_transaction or (sql.startswith("SELECT") and "FOR " not in sql)):
            cursor = context["cursor"].cursor  # the driver's: not wrapped again
            if in_transaction:
                cursor.execute("SAVEPOINT bench_explain")
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0]
            plan = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
            if in_transaction:
                cursor.execute("ROLLBACK TO SAVEPOINT bench_explain")
            label = _step_of(sql) or " ".join(sql.split()[:3]).replace('"', "")
            hit, read = plan.get("Shared Hit Blocks", 0), plan.get("Shared Read Blocks", 0)
            before = pages.get(label, (0, 0))
            pages[label] = (before[0] + hit + read, before[1] + read)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield


def one_batch(engine, spent):
    """Claim, push (no HTTP) and record one batch of 100; the steps' ms into `spent`."""
    for step in STEPS:
        spent[step].append(0.0)
    started = time.perf_counter()
    with timed_statements(spent):
        batch = engine.claim(100)
    loaded = time.perf_counter()
    assert len(batch.rows) == 100, len(batch.rows)
    engine.push(batch)
    recording = time.perf_counter()
    engine.record(batch, RunResult(engine.crm))
    spent["load"][-1] = (loaded - started) * 1000 - spent["lock"][-1] - spent["mark"][-1]
    spent["record"][-1] = (time.perf_counter() - recording) * 1000


def settle():
    """What a table that has been there a while looks like, rather than one bulk
    loaded a second ago: vacuumed (hint bits and the visibility map set, as
    autovacuum leaves them) and checkpointed (shared buffers clean, as the
    checkpointer leaves them every few minutes). Without it, the first visit to
    each row sets its hint bits and every page read evicts a dirty page."""
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE contacts_contactsync")
        cursor.execute("VACUUM ANALYZE contacts_contact")
        cursor.execute("CHECKPOINT")


def measure(total, scattered, settled=True):
    """{"ms": {step: median}, "pages": {label: (touched, read)}, "load": 1-min load average}."""
    fill(total, DUE, scattered)
    if settled:
        settle()
    engine = SyncEngine(NoopBackend(), POLICY)
    spent = {step: [] for step in STEPS}
    for _ in range(BATCHES):
        one_batch(engine, spent)
    pages = {}
    with explained_statements(pages):
        one_batch(engine, {step: [] for step in STEPS})
    medians = {step: statistics.median(values) for step, values in spent.items()}
    medians["claim"] = statistics.median(lock + mark for lock, mark in zip(spent["lock"], spent["mark"], strict=True))
    medians["batch"] = statistics.median(sum(values) for values in zip(*spent.values(), strict=True))
    return {"ms": medians, "pages": pages, "load": load_average()}


def claim_figures(large=SIZES[1], settled=True):
    """The four measurements ({(size, layout): measure()}) and the ratios
    {layout: {step: large / small}}; needs a PostgreSQL test database set up."""
    figures = {}
    for layout, scattered in LAYOUTS:
        for total in (SIZES[0], large):
            figures[(total, layout)] = measure(total, scattered, settled)
    ratios = {
        layout: {
            # A step that takes no time at 10,000 rows (mark, in the one-statement claim) has no ratio.
            step: figures[(large, layout)]["ms"][step] / figures[(SIZES[0], layout)]["ms"][step]
            if figures[(SIZES[0], layout)]["ms"][step]
            else float("nan")
            for step in figures[(large, layout)]["ms"]
        }
        for layout, _ in LAYOUTS
    }
    return figures, ratios


def print_figures(figures, ratios, large):
    columns = ("lock", "mark", "claim", "load", "record", "batch")
    print("median ms per batch of 100 (claim = lock + mark; batch = every step)")
    print("%-10s %10s %s %s" % ("layout", "rows", " ".join("%7s" % c for c in columns), "  load avg"))
    for (total, layout), figure in figures.items():
        cells = " ".join("%7.2f" % figure["ms"][c] for c in columns)
        print("%-10s %10s %s   %.2f" % (layout, format(total, ","), cells, figure["load"]))
    for layout, ratio in ratios.items():
        cells = " ".join("%6.2fx" % ratio[c] for c in columns)
        print("%-10s %10s %s   (target claim <= 1.5x)" % (layout, "ratio", cells))
    print("pages per batch (touched / read from outside shared buffers):")
    for (total, layout), figure in figures.items():
        cells = ", ".join("%s %d/%d" % (label, *counts) for label, counts in figure["pages"].items())
        print("  %-10s %10s %s" % (layout, format(total, ","), cells))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", type=int, default=SIZES[1], help="rows in the large table")
    parser.add_argument(
        "--fresh", action="store_true", help="measure right after the bulk fill (no VACUUM, no CHECKPOINT)"
    )
    args = parser.parse_args()
    setup_test_environment()
    old_config = setup_databases(verbosity=0, interactive=False)
    try:
        if connection.vendor != "postgresql":
            sys.exit("bench/claim.py measures PostgreSQL; set DATABASE_URL=postgres://...")
        print("database: PostgreSQL %s, %d cores" % (connection.pg_version, os.cpu_count()))
        print("tables %s" % ("as bulk loaded" if args.fresh else "settled (VACUUM ANALYZE, CHECKPOINT)"))
        figures, ratios = claim_figures(args.large, settled=not args.fresh)
        print_figures(figures, ratios, args.large)
    finally:
        connections.close_all()
        teardown_databases(old_config, verbosity=0)


if __name__ == "__main__":
    main()
