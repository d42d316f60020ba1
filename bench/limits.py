"""Rate limits as CRMs enforce them: Brevo and HubSpot at their ceiling under each
limiter model, and what a shared pace reservation costs.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crmsync .venv/bin/python bench/limits.py
    ... bench/limits.py --quick        # shorter cells: checks the harness, figures are rough

Runs in a throwaway PostgreSQL database (test_<name>) with the sandbox in this
process. For Brevo and HubSpot, under each of the sandbox's limiter models (fixed
window, sliding window: at most N in any T s, token bucket), with 1 and with 4
workers (`sync_crm` processes, bench/report_worker.py), it queues about
--seconds worth of contacts at the ceiling and syncs them. Brevo's limit is scaled
up (--brevo-scale, 3: 30 requests/s instead of 10, one-second windows; below 34
requests a window crmsync keeps its margin in time, as at the real 10/s, see
integrations.backends.pacing.SlotWindow) so that a cell has enough requests;
HubSpot keeps its 100 per 10 s (--hubspot-scale) and its cells last about four
windows (--hubspot-seconds). What is reported is the ratio to the limit in force:
requests/s from the sandbox's own log (first to last request) as a share of N / T
(a pacer may use a first window at once, which flatters a cell of one or two
windows: hence four), contacts/s from the start to the last Complete, and answers
of 429 per 1,000 requests. Target: >= 95% of the ceiling
and <= 3 answers of 429 per 1,000 requests in every cell.

Mautic and n8n document no rate limit: they are reported against their latency
bound (requests in flight / latency). The pace reservation is measured as 4
threads, each with its own database connection, reserving and waiting for slots at
50 requests/s together. Every figure is printed with the 1-minute load average;
timings are printed, never asserted.
"""

import argparse
import json
import logging
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.report_settings"
os.environ["DEBUG"] = "false"
os.environ.setdefault("SECRET_KEY", "bench-limits-" + secrets.token_hex(24))

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.db.models import Count, Max  # noqa: E402
from django.test.utils import setup_databases, setup_test_environment, teardown_databases  # noqa: E402

from contacts import selection  # noqa: E402
from contacts.models import Contact, ContactSync, ProcessingStatus  # noqa: E402
from crm_sandbox.base import LIMITER_MODELS  # noqa: E402
from crm_sandbox.server import SandboxOptions, SandboxServer  # noqa: E402
from integrations.ratelimit import SharedPacer  # noqa: E402

# (requests, seconds) each CRM documents, and contacts per request.
DOCUMENTED = {"brevo": ((10, 1), 1), "hubspot": ((100, 10), 100)}
WORKERS = (1, 4)
# Below this share of the ceiling, or above this many 429 per 1,000 requests, a cell misses its target.
TARGET_SHARE, TARGET_429_PER_1000 = 0.95, 3.0


def load():
    return os.getloadavg()[0]


# The database and the workers


def database_url():
    db = connection.settings_dict
    return "postgres://%s:%s@%s:%s/%s" % (
        quote(db["USER"] or "", safe=""),
        quote(db["PASSWORD"] or "", safe=""),
        db["HOST"] or "127.0.0.1",
        db["PORT"] or 5432,
        db["NAME"],
    )


def reset_tables():
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE contacts_contact, integrations_crmstate CASCADE")


def queue_contacts(crm, count):
    Contact.objects.bulk_create(
        (Contact(email="%s%d@example.com" % (crm, i), first_name="F%d" % i, last_name="L") for i in range(count)),
        batch_size=5000,
    )
    selection.select(Contact.objects.all(), [crm])


def run_workers(crm, workers, env, logs):
    """`workers` sync_crm processes, started, let go at once and waited for; the go time."""
    folder = Path(tempfile.mkdtemp(dir=logs))
    log = open(logs / "workers.log", "a")  # noqa: SIM115 (the workers write to it after this returns)
    processes = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "report_worker.py"), crm, str(folder / ("%d.json" % i))],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(workers)
    ]
    try:
        deadline = time.monotonic() + 120
        while not all((folder / ("%d.ready" % i)).exists() for i in range(workers)):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError("a sync_crm process did not start; see %s" % log.name)
            time.sleep(0.1)
        go = time.time()
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.close()
        for process in processes:
            if process.wait(timeout=900) != 0:
                raise RuntimeError("a sync_crm process failed; see %s" % log.name)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return go


# One cell


class Cell:
    """One CRM under one limiter model with some workers: what to run and what came of it."""

    def __init__(self, crm, model, workers, limit, per_request, contacts, **figures):
        self.crm, self.model, self.workers = crm, model, workers
        self.limit, self.per_request, self.contacts = limit, per_request, contacts
        self.figures = figures

    @property
    def requests_per_second(self):
        requests, seconds = self.limit
        return requests / seconds


def run_cell(server, cell, worker_env, logs):
    reset_tables()
    server.sandbox.reset()
    requests, seconds = cell.limit
    server.sandbox.control(
        "POST",
        [cell.crm, "faults"],
        json.dumps({"rate_limit": {"requests": requests, "seconds": seconds, "model": cell.model}}).encode(),
    )
    queue_contacts(cell.crm, cell.contacts)
    go = run_workers(cell.crm, cell.workers, worker_env, logs)
    done = ContactSync.objects.filter(crm=cell.crm, processing_status=ProcessingStatus.COMPLETE).aggregate(
        n=Count("pk"), last=Max("synced_at")
    )
    log = server.sandbox.requests(cell.crm)
    stamps = [datetime.fromisoformat(entry["at"]).timestamp() for entry in log]
    span = max(stamps) - min(stamps) if len(stamps) > 1 else 0.0
    refused = sum(entry["status"] == 429 for entry in log)
    cell.figures = {
        "requests": len(log),
        "refused": refused,
        # N requests are N - 1 intervals of the pace.
        "request_rate": (len(log) - 1) / span if span else 0.0,
        "complete": done["n"],
        "contact_rate": done["n"] / (done["last"].timestamp() - go) if done["last"] else 0.0,
        "load": load(),
    }
    return cell


def limit_cells(args):
    cells = []
    for crm, scale in (("brevo", args.brevo_scale), ("hubspot", args.hubspot_scale)):
        (requests, seconds), per_request = DOCUMENTED[crm]
        limit = (requests * scale, seconds)
        cell_seconds = args.hubspot_seconds if crm == "hubspot" else args.seconds
        contacts = int(requests * scale / seconds * per_request * cell_seconds)
        for model in LIMITER_MODELS:
            cells += [Cell(crm, model, workers, limit, per_request, contacts) for workers in WORKERS]
    return [
        cell for cell in cells if cell.crm in args.crms and cell.model in args.models and cell.workers in args.workers
    ]


def worker_env(server, args):
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CRMSYNC_SANDBOX_URL": server.url,
        "BREVO_REQUESTS_PER_SECOND": str(DOCUMENTED["brevo"][0][0] * args.brevo_scale),
        "HUBSPOT_REQUESTS_PER_SECOND": str(DOCUMENTED["hubspot"][0][0] / 10 * args.hubspot_scale),
        # The single-contact path is the one paced here; bulk import is bench/brevo_import.py's.
        "BREVO_IMPORT_THRESHOLD": "0",
        "BREVO_SYNC_SCHEDULER_BATCH_SIZE": str(args.brevo_batch),
        "HUBSPOT_SYNC_SCHEDULER_BATCH_SIZE": str(args.hubspot_batch),
    }
    return env


# Mautic and n8n: no documented limit, so their bound is latency


def latency_cells(server, args, env, logs):
    """(crm, contacts/s, the latency bound in contacts/s, load) for Mautic and n8n."""
    bounds = {"mautic": (1, 200), "n8n": (4, 1)}  # (requests in flight, contacts per request)
    rows = []
    for crm, (in_flight, per_request) in bounds.items():
        bound = in_flight * per_request / (args.latency_ms / 1000)
        count = int(bound * args.seconds / 2)
        reset_tables()
        server.sandbox.reset()
        queue_contacts(crm, count)
        go = run_workers(crm, 1, env, logs)
        last = ContactSync.objects.filter(crm=crm, processing_status=ProcessingStatus.COMPLETE).aggregate(
            n=Count("pk"), last=Max("synced_at")
        )
        rate = last["n"] / (last["last"].timestamp() - go) if last["last"] else 0.0
        rows.append((crm, rate, bound, load()))
    return rows


# The cost of a reservation


def reservation_cost(rate=50, threads=4, seconds=5):
    """Milliseconds one reserve() takes (median, 95th percentile, max) with
    `threads` threads, each on its own connection, taking slots at `rate` a second
    in all."""
    SharedPacer("bench-pace", rate).reserve(1)  # its CRMState row, made once
    timings, stop = [], time.monotonic() + seconds

    def worker():
        pacer = SharedPacer("bench-pace", rate)
        try:
            while time.monotonic() < stop:
                started = time.perf_counter()
                slot = pacer.reserve(1)[0]
                timings.append((time.perf_counter() - started) * 1000)
                time.sleep(max(0.0, slot - time.monotonic()))
        finally:
            connections.close_all()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    timings.sort()
    return {
        "reservations": len(timings),
        "rate": len(timings) / seconds,
        "median": statistics.median(timings),
        "p95": timings[int(0.95 * (len(timings) - 1))],
        "max": timings[-1],
        "load": load(),
    }


# Running and printing


def run_limits(quick=False, **overrides):
    """Every cell of the benchmark; returns its rows as dicts (bench/report.py's hook)."""
    args = parse_args([] if not quick else ["--quick"])
    for name, value in overrides.items():
        setattr(args, name, value)
    return run(args, print_rows=False)


def run(args, print_rows=True):
    logging.disable(logging.INFO)
    server = SandboxServer(port=0, options=SandboxOptions(latency_ms=args.latency_ms, jitter_ms=args.jitter_ms, seed=1))
    server.start()
    settings.CRMSYNC_SANDBOX_URL = server.url
    logs = Path(tempfile.mkdtemp(prefix="crmsync-limits-"))
    env = worker_env(server, args)
    rows = []
    try:
        call_command("crm_setup", "--crm=brevo", "--crm=hubspot", stdout=open(os.devnull, "w"))  # noqa: SIM115
        if print_rows:
            print_header(args)
        for cell in limit_cells(args):
            row = cell_row(run_cell(server, cell, env, logs))
            rows.append(row)
            if print_rows:
                print_cell(row)
        for crm, rate, bound, load_avg in latency_cells(server, args, env, logs) if args.latency_bound else []:
            rows.append({"crm": crm, "contact_rate": rate, "latency_bound": bound, "load": load_avg})
            if print_rows:
                print(
                    "%-8s %-8s %7s contacts/s %8.1f of a latency bound of %.0f (%.0f%%)   load %.2f"
                    % (crm, "none", "1", rate, bound, 100 * rate / bound, load_avg)
                )
        cost = reservation_cost()
        rows.append({"reservation": cost})
        if print_rows:
            print_cost(cost)
    finally:
        server.stop()
    return rows


def cell_row(cell):
    figures = cell.figures
    share = figures["request_rate"] / cell.requests_per_second
    per_1000 = 1000 * figures["refused"] / figures["requests"] if figures["requests"] else 0.0
    return {
        "crm": cell.crm,
        "model": cell.model,
        "workers": cell.workers,
        "limit": "%d/%gs" % cell.limit,
        "contacts": cell.contacts,
        **figures,
        "share": share,
        "per_1000": per_1000,
        "met": share >= TARGET_SHARE and per_1000 <= TARGET_429_PER_1000 and figures["complete"] == cell.contacts,
    }


def print_header(args):
    print(
        "PostgreSQL %s, %d cores, load %.2f; sandbox latency %d ms + up to %d ms jitter; Brevo x%g, HubSpot x%g; "
        "pace %.0f%% of the limit; batches: Brevo %d, HubSpot %d"
        % (
            "%d.%d" % divmod(connection.pg_version, 10000),
            os.cpu_count(),
            load(),
            args.latency_ms,
            args.jitter_ms,
            args.brevo_scale,
            args.hubspot_scale,
            100 * __import__("integrations.backends.pacing", fromlist=["PACE_SHARE"]).PACE_SHARE,
            args.brevo_batch,
            args.hubspot_batch,
        )
    )
    print(
        "%-8s %-8s %7s %9s %9s %9s %7s %12s %6s %9s %8s %5s"
        % (
            "CRM",
            "limiter",
            "workers",
            "limit",
            "requests",
            "req/s",
            "ceiling",
            "contacts/s",
            "429",
            "429/1000",
            "complete",
            "load",
        )
    )


def print_cell(row):
    print(
        "%-8s %-8s %7d %9s %9d %9.1f %6.1f%% %12.1f %6d %9.2f %8s %5.2f%s"
        % (
            row["crm"],
            row["model"],
            row["workers"],
            row["limit"],
            row["requests"],
            row["request_rate"],
            100 * row["share"],
            row["contact_rate"],
            row["refused"],
            row["per_1000"],
            "%d/%d" % (row["complete"], row["contacts"]),
            row["load"],
            "" if row["met"] else "  (target missed)",
        ),
        flush=True,
    )


def print_cost(cost):
    print(
        "pace reservation (one UPDATE ... RETURNING), 4 threads with a connection each at %.0f slots/s: "
        "%d reservations, median %.2f ms, 95th percentile %.2f ms, max %.2f ms   load %.2f"
        % (cost["rate"], cost["reservations"], cost["median"], cost["p95"], cost["max"], cost["load"])
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 s cells instead of 15")
    parser.add_argument("--seconds", type=float, help="contacts queued per cell: this many seconds at the ceiling")
    parser.add_argument("--hubspot-seconds", type=float, help="the same for HubSpot's 10 s windows (default 40)")
    parser.add_argument("--brevo-scale", type=float, default=3, help="Brevo's limit x this (default 3: 30/s)")
    parser.add_argument("--hubspot-scale", type=float, default=1, help="HubSpot's limit x this (default 1)")
    parser.add_argument("--brevo-batch", type=int, default=200, help="BREVO_SYNC_SCHEDULER_BATCH_SIZE")
    parser.add_argument("--hubspot-batch", type=int, default=500, help="HUBSPOT_SYNC_SCHEDULER_BATCH_SIZE")
    parser.add_argument("--latency-ms", type=int, default=50, help="sandbox latency per request")
    parser.add_argument("--jitter-ms", type=int, default=10, help="up to this much more, at random")
    parser.add_argument("--crm", action="append", choices=sorted(DOCUMENTED), help="default: both")
    parser.add_argument("--model", action="append", choices=LIMITER_MODELS, help="default: all three")
    parser.add_argument("--workers", action="append", type=int, help="default: 1 and 4")
    parser.add_argument("--no-latency-bound", dest="latency_bound", action="store_false", help="skip Mautic and n8n")
    args = parser.parse_args(argv)
    args.crms, args.models = args.crm or sorted(DOCUMENTED), args.model or list(LIMITER_MODELS)
    args.workers = args.workers or list(WORKERS)
    if args.seconds is None:
        args.seconds = 5 if args.quick else 15
    if args.hubspot_seconds is None:
        args.hubspot_seconds = 20 if args.quick else 40
    return args


def main():
    args = parse_args()
    setup_test_environment()
    old_config = setup_databases(verbosity=0, interactive=False)
    started = time.monotonic()
    try:
        if connection.vendor != "postgresql":
            sys.exit("bench/limits.py measures PostgreSQL; set DATABASE_URL=postgres://...")
        run(args)
        print("whole run: %.0f s" % (time.monotonic() - started))
    finally:
        connections.close_all()
        teardown_databases(old_config, verbosity=0)


if __name__ == "__main__":
    main()
