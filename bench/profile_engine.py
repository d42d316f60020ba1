"""Where a worker's time goes: the engine's CPU profile and its SQL per batch.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crmsync .venv/bin/python bench/profile_engine.py
    ... bench/profile_engine.py --rate 0        # as fast as it goes (no pacing)
    ... bench/profile_engine.py --explain       # also EXPLAIN ANALYZE one batch's statements

Runs in a throwaway database (test_<name>). One worker syncs --contacts queued
contacts through a backend that accepts everything, paced at --rate contacts/s
(default 1,000, what a fast CRM such as HubSpot asks of it; 0 for no pacing).
Prints:
- the CPU profile of the worker process (cProfile timed by process time, so the
  pacing's sleep and the waits on PostgreSQL do not count): the top functions by
  own time and the engine's functions by cumulative time;
- each SQL statement of the claim -> record cycle (how many per batch, ms per
  batch measured from this process, so each includes its round trip);
- with --explain, EXPLAIN (ANALYZE, BUFFERS) of one batch's statements, each run
  and rolled back, so the server's own time can be told from the round trip.
"""

import argparse
import cProfile
import io
import os
import pstats
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django.db import connection, connections
from django.test.utils import setup_databases, setup_test_environment, teardown_databases

from bench import engine as engine_bench
from integrations.backends.base import Outcome
from integrations.engine import SyncEngine


class PacedNoopBackend(engine_bench.NoopBackend):
    """Accepts everything, but no faster than `rate` contacts/s: a CRM's pace."""

    def __init__(self, rate):
        super().__init__()
        self.rate = rate
        self.next_slot = time.monotonic()

    def push(self, items):
        if self.rate:
            self.next_slot = max(self.next_slot, time.monotonic()) + len(items) / self.rate
            time.sleep(max(0.0, self.next_slot - time.monotonic()))
        return [Outcome.accepted(item, external_id=str(item.key)) for item in items]


class StatementTimer:
    """Execute wrapper: the time of each statement from this process, by shape."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.count = defaultdict(int)

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            label = statement_label(sql)
            self.seconds[label] += time.perf_counter() - started
            self.count[label] += 1


class Explainer:
    """Execute wrapper: EXPLAIN ANALYZE each statement, rolled back, then run it."""

    def __init__(self):
        self.plans = []

    def __call__(self, execute, sql, params, many, context):
        verb = sql.lstrip().split(None, 1)[0].upper()
        if not many and verb in ("SELECT", "UPDATE", "INSERT", "DELETE"):
            # The driver's own cursor: Django's would run this wrapper again.
            self.plans.append((statement_label(sql), self._explain(context["cursor"].cursor, sql, params)))
        return execute(sql, params, many, context)

    @staticmethod
    def _explain(cursor, sql, params):
        inside = connection.in_atomic_block
        cursor.execute("SAVEPOINT explain" if inside else "BEGIN")
        try:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, TIMING) " + sql, params)
            return [line for (line,) in cursor.fetchall()]
        finally:
            cursor.execute("ROLLBACK TO SAVEPOINT explain" if inside else "ROLLBACK")


def statement_label(sql):
    """A statement's shape: its verb, table and what makes it different from its
    neighbours (the columns it sets or the condition it filters on)."""
    text = re.sub(r"\s+", " ", sql).strip()
    verb = text.split(" ", 1)[0].upper()
    tables = re.findall(r'(?:FROM|UPDATE|INTO|JOIN) "?(\w+)"?', text)
    where = re.search(r" WHERE (.{0,90})", text)
    detail = re.sub(r"%s(, %s)*", "...", where.group(1)) if where else ""
    if verb == "UPDATE":
        detail = re.sub(r" = .*", "", text.split(" SET ", 1)[1])[:40] + " | " + detail
    return "%s %s %s" % (verb, "/".join(dict.fromkeys(tables)), detail)


def profiled_run(contacts, rate, batch_size):
    engine_bench.fill(contacts, contacts)
    engine = SyncEngine(PacedNoopBackend(rate), engine_bench.POLICY)
    timer, profile = StatementTimer(), cProfile.Profile(time.process_time)
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    with connection.execute_wrapper(timer):
        profile.enable()
        result = engine.run(batch_size=batch_size)
        profile.disable()
    wall, cpu = time.perf_counter() - started_wall, time.process_time() - started_cpu
    return result, wall, cpu, timer, profile


def explain_one_batch(batch_size):
    engine_bench.fill(batch_size * 2, batch_size * 2)
    explainer = Explainer()
    engine = SyncEngine(PacedNoopBackend(0), engine_bench.POLICY)
    with connection.execute_wrapper(explainer):
        engine.run(max_contacts=batch_size, batch_size=batch_size)
    return explainer.plans


def print_profile(profile, top):
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(r"integrations/engine|contacts/bulk|integrations/leases", top)
    for line in out.getvalue().splitlines():
        # The file paths make the lines long; the project's own are enough.
        print(line.replace(str(Path(__file__).resolve().parent.parent) + "/", ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="contacts/s the backend accepts (0: no limit)")
    parser.add_argument("--batch-size", type=int, default=engine_bench.POLICY.batch_size)
    parser.add_argument("--top", type=int, default=25, help="lines of each profile table")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE one batch's statements")
    args = parser.parse_args()
    engine_bench.quiet_engine_log()
    setup_test_environment()
    old_config = setup_databases(verbosity=0, interactive=False)
    try:
        if connection.vendor != "postgresql":
            sys.exit("bench/profile_engine.py measures PostgreSQL; set DATABASE_URL=postgres://...")
        result, wall, cpu, timer, profile = profiled_run(args.contacts, args.rate, args.batch_size)
        batches = max(result.batches, 1)
        print(
            "%d contacts in %d batches of %d at %s: %.0f contacts/s, worker CPU %.3f s per 1,000 contacts"
            " (load %.2f)"
            % (
                result.claimed,
                result.batches,
                args.batch_size,
                "%.0f contacts/s paced" % args.rate if args.rate else "no pacing",
                result.claimed / wall,
                cpu * 1000 / max(result.claimed, 1),
                os.getloadavg()[0],
            )
        )
        print("\nSQL per batch, measured from the worker (round trip included):")
        print("  %6s %8s  %s" % ("count", "ms", "statement"))
        for label in sorted(timer.seconds, key=timer.seconds.get, reverse=True):
            print("  %6.2f %8.3f  %s" % (timer.count[label] / batches, timer.seconds[label] * 1000 / batches, label))
        total = sum(timer.seconds.values()) * 1000 / batches
        print("  %6.2f %8.3f  all statements" % (sum(timer.count.values()) / batches, total))
        print("\nCPU profile of the worker (process time):")
        print_profile(profile, args.top)
        if args.explain:
            print("\nEXPLAIN ANALYZE of one batch's statements (each rolled back after):")
            for label, plan in explain_one_batch(args.batch_size):
                print("- %s" % label)
                for line in plan:
                    print("    " + line)
    finally:
        connections.close_all()
        teardown_databases(old_config, verbosity=0)


if __name__ == "__main__":
    main()
