"""Performance report: crmsync end to end with django-q2, against the alternatives.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crmsync_report .venv/bin/python bench/report.py
    ... bench/report.py --quick                  # small sizes, a few minutes: checks the harness
    ... bench/report.py --only e2e,naive         # some sections only

Runs in a throwaway PostgreSQL database (test_<name>, created and dropped around the
run) with the sandbox in this process (real rate limits, --latency-ms 50). Sections:

  e2e       a qcluster runs integrations.tasks.sync_crm_task for the four CRMs side
            by side, enqueued again whenever a CRM's tick ends with contacts left,
            until every queue is empty; contacts/s per CRM from its first claim to
            its last Complete, next to the CRM's ceiling, and next to the same CRM
            one contact at a time (search, then create or update, sequentially, as
            bench/throughput.py does) on a sample measured just before.
  naive     per CRM, N contacts synced by crmsync's engine through the qcluster, then
            N others by one django-q2 task per contact (enqueued as an admin action
            would, each pushing its contact alone through the CRM's backend, so within
            its pace), from the first enqueue to the last Complete; the ratio.
  scaleout  1, 2 and 4 `sync_crm` processes on one database with a backend that
            accepts everything at once (no HTTP): contacts/s and speed-up.
  claim     claim latency per batch of 100 with 10,000 and with 1,000,000 rows
            (bench/engine.py's measurement).
  memory    peak RSS of one `sync_crm` process syncing 50,000 and 200,000 contacts
            (no HTTP), with DEBUG off and, for comparison, on.

The performance frontier's benchmarks run as their own scripts, each in a throwaway
database of its own (test_<name>_sub), their output shown as it comes:

  limits    bench/limits.py: Brevo and HubSpot as a share of their ceiling under each
            sandbox limiter model (fixed, sliding, token bucket), 1 and 4 workers;
            Mautic and n8n against their latency bound.
  bulk      bench/brevo_import.py: 20,000 new Brevo contacts (2% invalid) through
            the bulk import at the real 10 requests/s and the default import delay.
  pages     bench/claim.py: one batch of 100 at 10,000 vs 1,000,000 rows, due rows
            newest and scattered, each step's time and pages.
  dashboard bench/dashboard.py: the page at 1,000,000 ContactSync / 5,000,000
            attempts at two traffic levels.
  engine    bench/engine.py --throughput-only: claim + record contacts/s for 1 and 2
            worker processes, CPU per 1,000 contacts.
  drift     bench/drift.py: the drift sweep's cost with 100 changed contacts at two
            table sizes.

Every figure is printed with the 1-minute load average when it was taken; the
machine's other work shows in it. Workers run with DEBUG=false. The django-q2 broker
is the database unless REDIS_URL is set (then Redis, under a cluster name of this run's
own). Timings are printed, never asserted.
"""

import argparse
import json
import logging
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.report_settings"
# Workers and this process run as in production: DEBUG keeps every query in memory.
os.environ["DEBUG"] = "false"
os.environ.setdefault("SECRET_KEY", "bench-report-" + secrets.token_hex(24))
os.environ.setdefault("CRMSYNC_REPORT_CLUSTER", "crmsync-report-%d" % os.getpid())

import django  # noqa: E402

django.setup()

import requests  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.db.models import Count, Max  # noqa: E402
from django.test.utils import setup_databases, setup_test_environment, teardown_databases  # noqa: E402
from django_q.models import Failure, Schedule, Task  # noqa: E402
from django_q.tasks import async_task  # noqa: E402

from bench import engine as engine_bench  # noqa: E402
from bench import throughput  # noqa: E402
from contacts import selection  # noqa: E402
from contacts.models import Contact, ContactSync, ProcessingStatus, SyncAttempt  # noqa: E402
from crm_sandbox import mautic as mautic_sandbox  # noqa: E402
from crm_sandbox import n8n as n8n_sandbox  # noqa: E402
from crm_sandbox.server import SandboxOptions, SandboxServer  # noqa: E402
from integrations.engine import RunResult, SyncEngine  # noqa: E402

CRMS = ("brevo", "hubspot", "mautic", "n8n")
SECTIONS = ("e2e", "naive", "scaleout", "claim", "memory", "limits", "bulk", "pages", "dashboard", "engine", "drift")
# The sections that run a script of their own: its arguments, full and --quick.
SCRIPTS = {
    "limits": ("limits.py", [], ["--quick"]),
    "bulk": ("brevo_import.py", [], ["--contacts", "2000"]),
    "pages": ("claim.py", [], ["--large", "100000"]),
    "dashboard": ("dashboard.py", [], ["--contacts", "25000", "--attempts", "500000"]),
    "engine": ("engine.py", ["--throughput-only"], ["--throughput-only", "--contacts", "5000", "--repeats", "1"]),
    "drift": ("drift.py", [], ["--sizes", "10000,100000"]),
}
# The lines of each script's output the summary repeats: its figures, each with its load.
HEADLINES = {
    "limits": r"^(brevo|hubspot|mautic|n8n) |^CRM ",
    "bulk": r"contacts/s|from the go|per contact|in Error",
    "pages": r"^layout|^(newest|scattered) ",
    "dashboard": r"^target:",
    "engine": r"^claim\+record|^target",
    "drift": r"Complete rows",
}
SYNC_TASK = "integrations.tasks.sync_crm_task"
NAIVE_TASK = "bench.report_support.sync_one_contact"
PENDING = (ProcessingStatus.QUEUED, ProcessingStatus.PROCESSING)
FULL = {
    "contacts": 20_000,
    "brevo_contacts": 2_000,
    "n8n_contacts": 2_000,
    "sample": 100,
    "naive_contacts": 500,
    "brevo_naive_contacts": 300,
    "scaleout_contacts": 50_000,
    "repeats": 3,
    "large_rows": 1_000_000,
    "memory_contacts": "50000,200000",
}
QUICK = {
    "contacts": 2_000,
    "brevo_contacts": 100,
    "n8n_contacts": 200,
    "sample": 10,
    "naive_contacts": 50,
    "brevo_naive_contacts": 30,
    "scaleout_contacts": 5_000,
    "repeats": 1,
    "large_rows": 100_000,
    "memory_contacts": "5000,20000",
}


def ceiling(crm, latency_ms):
    """(contacts/s the CRM's rate limit allows or None, how it is derived)."""
    round_trip = max(latency_ms, 1) / 1000
    return {
        "brevo": (10, "10 requests/s x 1 contact"),
        "hubspot": (1000, "100 requests/10 s x 100 contacts"),
        "mautic": (None, "no rate limit; latency bound ~%d/s per loop (200 per request)" % (200 / round_trip)),
        "n8n": (None, "no rate limit; latency bound ~%d/s per loop (1 per request, 4 in flight)" % (4 / round_trip)),
    }[crm]


def pg_version():
    return "%d.%d" % divmod(connection.pg_version, 10000)


def load():
    return os.getloadavg()[0]


def rate(count, seconds):
    return count / seconds if seconds > 0 else 0.0


def fmt_rate(value):
    return "%.1f" % value if value < 100 else "{:,.0f}".format(value)


class Report:
    """The run's shared state: options, the sandbox, the database's URL for the
    workers, log files and the rows of the final summary."""

    def __init__(self, args, server, logs):
        self.args, self.server, self.logs = args, server, logs
        self.summary, self.e2e = [], {crm: {} for crm in args.crms}
        # {section: the lines of a script's output that carry its figures}
        self.headlines = {}

    def note(self, what, figure, load_avg):
        self.summary.append((what, figure, load_avg))

    def worker_env(self, **extra):
        db = connection.settings_dict
        url = "postgres://%s:%s@%s:%s/%s" % (
            quote(db["USER"] or "", safe=""),
            quote(db["PASSWORD"] or "", safe=""),
            db["HOST"] or "127.0.0.1",
            db["PORT"] or 5432,
            db["NAME"],
        )
        env = {**os.environ, "DATABASE_URL": url, "CRMSYNC_SANDBOX_URL": self.server.url}
        return {**env, **{key: str(value) for key, value in extra.items()}}


# The database


def reset_tables():
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE contacts_contact, integrations_crmstate, django_q_task, django_q_ormq, django_q_schedule CASCADE"
        )


def fill(total, crm, queued=None, scattered=False):
    """`total` contacts with a row each for `crm`, written by SQL in one go;
    `queued` of them (default all) due now, the rest Complete. Scattered: the due
    rows are spread through the table; otherwise they are the newest."""
    queued = total if queued is None else queued
    due = "id %%%% %d = 0" % (total // queued) if scattered else "id > %d" % (total - queued)
    reset_tables()
    with connection.cursor() as cursor:
        cursor.execute("ALTER SEQUENCE contacts_contact_id_seq RESTART")
        insert_select(
            cursor,
            Contact,
            "generate_series(1, %d) i" % total,
            {
                "email": "'c' || i || '@example.com'",
                "first_name": "'F' || i",
                "last_name": "'L'",
                "company": "'Acme'",
            },
        )
        insert_select(
            cursor,
            ContactSync,
            "contacts_contact",
            {
                "contact": "id",
                "crm": "'%s'" % crm,
                "sync_status": "CASE WHEN {due} THEN 'selected' ELSE 'complete' END".format(due=due),
                "processing_status": "CASE WHEN {due} THEN 'queued' ELSE 'complete' END".format(due=due),
                "next_attempt_at": "CASE WHEN {due} THEN now() - interval '1 minute' END".format(due=due),
            },
        )
        cursor.execute("ANALYZE")


def insert_select(cursor, model, source, expressions):
    """INSERT INTO model's table SELECT ... FROM source: `expressions` ({field name:
    SQL}) for some columns, now() for timestamps, each other field's default."""
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


def queue_contacts(crm, count, prefix):
    contacts = throughput.make_contacts(count, prefix)
    selection.select(contacts, [crm])
    return contacts


def completed(crm, prefix):
    """(contacts Complete, the last one's synced_at) among `prefix`'s contacts."""
    rows = ContactSync.objects.filter(crm=crm, contact__email__startswith=prefix)
    figures = rows.filter(processing_status=ProcessingStatus.COMPLETE).aggregate(n=Count("pk"), last=Max("synced_at"))
    return figures["n"], figures["last"]


def pending(crm, prefix):
    return ContactSync.objects.filter(crm=crm, contact__email__startswith=prefix, processing_status__in=PENDING).count()


def first_claim(crm, prefix):
    """When the engine claimed its first batch among `prefix`'s contacts: an attempt
    is written when its push ends, and says how long the push took."""
    attempts = SyncAttempt.objects.filter(crm=crm, contact__email__startswith=prefix).order_by("attempted_at")
    return min(at - timedelta(milliseconds=ms) for at, ms in attempts.values_list("attempted_at", "duration_ms")[:1000])


# Worker processes


class Cluster:
    """`manage.py qcluster` processes, each in a session of its own so that stopping
    one stops its django-q2 children with it."""

    def __init__(self, report):
        self.report, self.processes = report, []

    def __enter__(self):
        args = self.report.args
        env = self.report.worker_env(Q_CLUSTER_WORKERS=args.q_workers)
        for index in range(args.clusters):
            log = open(self.report.logs / ("qcluster-%d.log" % index), "a")
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "manage.py", "qcluster"],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        # Up and taking tasks before anything is timed.
        warm_up = async_task("math.floor", 1.5, group="warm-up")
        wait_for(lambda: Task.objects.filter(id=warm_up).exists(), 300, "the qcluster to start")
        return self

    def __exit__(self, *exc_info):
        for process in self.processes:
            stop_group(process)


def stop_group(process, grace=30):
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run_sync_processes(report, crm, workers, **env):
    """Start `workers` bench/report_worker.py processes (each `sync_crm --crm crm`),
    let them all go at once, wait for them; return (go time, their results)."""
    env = report.worker_env(NOOP_ENABLED=1, **env)
    folder = Path(tempfile.mkdtemp(dir=report.logs))
    log = open(report.logs / "sync-workers.log", "a")  # noqa: SIM115 (the workers write to it after this returns)
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
        wait_for(
            lambda: (
                all((folder / ("%d.ready" % i)).exists() for i in range(workers))
                or any(p.poll() is not None for p in processes)
            ),
            300,
            "the sync_crm processes to start",
        )
        if any(p.poll() is not None for p in processes):
            raise RuntimeError("a sync_crm process ended before the start; see %s" % log.name)
        go = time.time()
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.close()
        for process in processes:
            if process.wait(timeout=3600) != 0:
                raise RuntimeError("a sync_crm process failed; see %s" % log.name)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return go, [json.loads((folder / ("%d.json" % i)).read_text()) for i in range(workers)]


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("gave up waiting for %s after %d s" % (what, timeout))
        time.sleep(0.2)


# django-q2 drivers


def drive_engine(report, crms, group_prefix, prefixes):
    """Enqueue sync_crm_task for each CRM, and again each time a tick ends with
    contacts left (a stand-in for the schedule, without its minute between ticks),
    until none is left. Returns {crm: ticks}."""
    inflight, ticks = {}, dict.fromkeys(crms, 0)
    deadline = time.monotonic() + report.args.timeout
    while True:
        left = {crm: pending(crm, prefixes[crm]) for crm in crms}
        for crm in crms:
            task_id = inflight.get(crm)
            if task_id:
                task = Task.objects.filter(id=task_id).values("success", "result").first()
                if task is None:
                    continue
                if not task["success"]:
                    raise RuntimeError("sync_crm_task(%r) failed: %s" % (crm, task["result"]))
                del inflight[crm]
            if left[crm]:
                inflight[crm] = async_task(SYNC_TASK, crm, group="%s-%s" % (group_prefix, crm))
                ticks[crm] += 1
        if not inflight and not any(left.values()):
            return ticks
        if time.monotonic() > deadline:
            print("  timed out after %d s with %s contacts left" % (report.args.timeout, left))
            return ticks
        time.sleep(0.25)


def drive_naive(report, crm, contacts, prefix):
    """One django-q2 task per contact, enqueued as an admin action would; wait
    until every contact is done. Returns (when the first was enqueued, seconds
    spent enqueueing)."""
    ids, group = list(contacts.values_list("pk", flat=True)), "naive-%s" % crm
    first = datetime.now(UTC)
    started = time.perf_counter()
    for contact_id in ids:
        async_task(NAIVE_TASK, contact_id, crm, group=group)
    enqueue_seconds = time.perf_counter() - started

    def done():
        failure = Failure.objects.filter(group=group).values_list("result", flat=True).first()
        if failure:
            raise RuntimeError("a one-contact task failed: %s" % failure)
        return not pending(crm, prefix)

    wait_for(done, report.args.timeout, "%d one-contact tasks" % len(ids))
    return first, enqueue_seconds


# Section: end to end


class OneAtATimeClient(throughput.NaiveClient):
    """bench/throughput.py's search-then-write client, extended to Mautic and n8n."""

    def __init__(self, url, crm):
        if crm in ("brevo", "hubspot"):
            super().__init__(url, crm)
            return
        self.crm, self.session, self.requests = crm, requests.Session(), 0
        if crm == "mautic":
            self.base = url + "/mautic"
            self.session.auth = (mautic_sandbox.USERNAME, mautic_sandbox.PASSWORD)
        else:
            self.base = url + "/n8n"
            self.session.headers["Authorization"] = "Bearer " + n8n_sandbox.WEBHOOK_SECRET

    def sync(self, contact):
        if self.crm in ("brevo", "hubspot"):
            return super().sync(contact)
        fields = {"email": contact.email, "firstname": contact.first_name, "lastname": contact.last_name}
        if self.crm == "n8n":  # a webhook has nothing to search: one POST
            self.call("POST", "/webhook/%s" % n8n_sandbox.WEBHOOK_PATH, json=fields)
            return
        found = self.call("GET", "/api/contacts", params={"search": "email:" + contact.email}).json()
        if found.get("total"):
            self.call("PATCH", "/api/contacts/%s/edit" % next(iter(found["contacts"])), json=fields)
        else:
            self.call("POST", "/api/contacts/new", json=fields)


def one_at_a_time(report, crms, sample):
    """Each CRM's sample synced sequentially, the CRMs side by side in threads."""
    contacts = {crm: list(throughput.make_contacts(sample, "one-%s-" % crm)) for crm in crms}
    figures = {}

    def run(crm):
        client = OneAtATimeClient(report.server.url, crm)
        started = time.perf_counter()
        for contact in contacts[crm]:
            client.sync(contact)
        seconds = time.perf_counter() - started
        figures[crm] = {"n": sample, "rate": rate(sample, seconds), "requests": client.requests / sample}

    threads = [threading.Thread(target=run, args=(crm,)) for crm in crms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return figures


def section_e2e(report):
    args, crms = report.args, report.args.crms
    counts = {crm: {"brevo": args.brevo_contacts, "n8n": args.n8n_contacts}.get(crm, args.contacts) for crm in crms}
    print(
        "\n== End to end: django-q2 (%d qcluster x %d workers), sandbox at real rate limits, %d ms latency =="
        % (args.clusters, args.q_workers, args.latency_ms)
    )
    reset_tables()
    print("one contact at a time, sequentially (search, then create or update), %d per CRM ..." % args.sample)
    sample = one_at_a_time(report, crms, args.sample)
    time.sleep(11)  # HubSpot's rolling 10 s window empties before the engine's pace starts
    prefixes = {crm: "e2e-%s-" % crm for crm in crms}
    for crm in crms:
        queue_contacts(crm, counts[crm], prefixes[crm])
    requests_before = {crm: len(report.server.sandbox.requests(crm)) for crm in crms}
    print(
        "crmsync: %s queued; ticks run until every queue is empty ..."
        % ", ".join("%s %s" % (crm, format(counts[crm], ",")) for crm in crms)
    )
    with Cluster(report):
        ticks = drive_engine(report, crms, "e2e", prefixes)
    print(
        "%-8s %8s %9s %12s %8s %9s %7s  %-20s %s"
        % ("CRM", "contacts", "seconds", "contacts/s", "of ceil", "req/cont", "ticks", "one at a time", "load")
    )
    for crm in crms:
        done, last = completed(crm, prefixes[crm])
        seconds = (last - first_claim(crm, prefixes[crm])).total_seconds() if last else 0.0
        figures = {"n": done, "rate": rate(done, seconds), "sample": sample[crm], "load": load()}
        sent = len(report.server.sandbox.requests(crm)) - requests_before[crm]
        limit, how = ceiling(crm, args.latency_ms)
        share = "%.0f%%" % (100 * figures["rate"] / limit) if limit else "-"
        print(
            "%-8s %8d %9.1f %12s %8s %9.2f %7d  %-20s %.2f"
            % (
                crm,
                done,
                seconds,
                fmt_rate(figures["rate"]),
                share,
                rate(sent, done),
                ticks[crm],
                "%s/s (%d, %.1f req)" % (fmt_rate(sample[crm]["rate"]), args.sample, sample[crm]["requests"]),
                figures["load"],
            )
        )
        if done < counts[crm]:
            print("         only %d of %d contacts ended Complete" % (done, counts[crm]))
        print("         ceiling: %s" % how)
        report.e2e[crm].update(engine=figures)


# Section: naive, one django-q2 task per contact


def section_naive(report):
    args, crms = report.args, report.args.crms
    print(
        "\n== One django-q2 task per contact vs crmsync's engine, same CRM and N, same qcluster "
        "(%d x %d workers) ==" % (args.clusters, args.q_workers)
    )
    print("%-8s %6s %-22s %12s %11s %7s %s" % ("CRM", "N", "approach", "contacts/s", "enqueue s", "errors", "load"))
    reset_tables()
    with Cluster(report):
        for crm in crms:
            Task.objects.all().delete()  # django-q2 prunes successes past save_limit; start each CRM clear
            count = args.brevo_naive_contacts if crm == "brevo" else args.naive_contacts
            engine = naive_engine_run(report, crm, count)
            naive = naive_task_run(report, crm, count)
            ratio = engine["rate"] / naive["rate"] if naive["rate"] else float("inf")
            for label, figures in (("crmsync engine", engine), ("one task per contact", naive)):
                print(
                    "%-8s %6d %-22s %12s %11s %7d %.2f"
                    % (
                        crm,
                        count,
                        label,
                        fmt_rate(figures["rate"]),
                        figures.get("enqueue", "-"),
                        figures["errors"],
                        figures["load"],
                    )
                )
            print("%-8s crmsync / one task per contact: %.1fx" % (crm, ratio))
            report.e2e[crm].update(naive=naive, naive_engine=engine, ratio=ratio)


def naive_engine_run(report, crm, count):
    prefix = "qe-%s-" % crm
    queue_contacts(crm, count, prefix)
    drive_engine(report, [crm], "naive-engine", {crm: prefix})
    done, last = completed(crm, prefix)
    seconds = (last - first_claim(crm, prefix)).total_seconds() if last else 0.0
    return {"rate": rate(done, seconds), "errors": count - done, "load": load()}


def naive_task_run(report, crm, count):
    prefix = "qn-%s-" % crm
    contacts = queue_contacts(crm, count, prefix)
    first, enqueue = drive_naive(report, crm, contacts, prefix)
    done, last = completed(crm, prefix)
    seconds = (last - first).total_seconds() if last else 0.0
    return {"rate": rate(done, seconds), "errors": count - done, "enqueue": "%.1f" % enqueue, "load": load()}


# Section: scale-out


def section_scaleout(report):
    args = report.args
    print(
        "\n== Scale-out: `sync_crm --crm %s` in 1, 2 and 4 processes on one database, %s contacts, "
        "median of %d ==" % (args.worker_crm, format(args.scaleout_contacts, ","), args.repeats)
    )
    print("%-9s %12s %9s %-30s %s" % ("processes", "contacts/s", "speed-up", "runs", "load"))
    base = None
    for workers in (1, 2, 4):
        rates = sorted(scaleout_run(report, workers) for _ in range(args.repeats))
        median = statistics.median(rates)
        base = base or median
        load_avg = load()
        print(
            "%-9d %12s %8.2fx %-30s %.2f"
            % (workers, fmt_rate(median), median / base, ", ".join(fmt_rate(r) for r in rates), load_avg)
        )
        report.note(
            "scale-out, %d `sync_crm` process%s (%s contacts, %s backend)"
            % (workers, "es" if workers > 1 else "", format(args.scaleout_contacts, ","), args.worker_crm),
            "%s contacts/s (%.2fx)" % (fmt_rate(median), median / base),
            load_avg,
        )


def scaleout_run(report, workers):
    fill(report.args.scaleout_contacts, report.args.worker_crm)
    go, _ = run_sync_processes(report, report.args.worker_crm, workers)
    figures = ContactSync.objects.filter(processing_status=ProcessingStatus.COMPLETE).aggregate(
        n=Count("pk"), last=Max("synced_at")
    )
    return rate(figures["n"], figures["last"].timestamp() - go) if figures["last"] else 0.0


# Section: claim latency


def section_claim(report):
    large = report.args.large_rows
    print(
        "\n== Claim latency: median ms per batch of 100, 5,000 due rows, with 10,000 and %s rows =="
        % format(large, ",")
    )
    print("%-20s %12s %14s %7s %s" % ("due rows", "10,000 rows", "%s rows" % format(large, ","), "ratio", "load"))
    for scattered, layout in ((False, "newest"), (True, "scattered")):
        small = claim_latency(10_000, scattered)
        big = claim_latency(large, scattered)
        load_avg = load()
        print("%-20s %9.2f ms %11.2f ms %6.2fx %.2f" % (layout, small, big, big / small, load_avg))
        report.note(
            "claim of 100, 5,000 due rows %s: 10,000 / %s rows" % (layout, format(large, ",")),
            "%.2f / %.2f ms (%.2fx)" % (small, big, big / small),
            load_avg,
        )


def claim_latency(total, scattered, batches=40):
    """Median ms of engine.claim() for a batch of 100, as bench/engine.py
    measures it (its NoopBackend and policy); each batch is recorded before the next."""
    fill(total, engine_bench.CRM, queued=5_000, scattered=scattered)
    engine = SyncEngine(engine_bench.NoopBackend(), engine_bench.POLICY)
    timings = []
    for _ in range(batches):
        started = time.perf_counter()
        batch = engine.claim(100)  # on PostgreSQL one statement, rows and contacts loaded
        timings.append((time.perf_counter() - started) * 1000)
        engine.push(batch)
        engine.record(batch, RunResult(engine_bench.CRM))
    return statistics.median(timings)


# Sections that run a script of their own


def run_script(report, section):
    """Run the section's bench script in a database of its own, showing its output as
    it comes; note its exit status and time in the summary."""
    script, full, quick = SCRIPTS[section]
    env = report.worker_env()
    env["DATABASE_URL"] += "_sub"  # the script makes and drops test_<name>_sub
    for own in ("CRMSYNC_SANDBOX_URL", "DJANGO_SETTINGS_MODULE", "DEBUG"):
        env.pop(own, None)  # each script starts its own sandbox and picks its settings
    print("\n== %s: bench/%s %s ==" % (section, script, " ".join(quick if report.args.quick else full)), flush=True)
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / script), *(quick if report.args.quick else full)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    headline = re.compile(HEADLINES[section])
    for line in process.stdout:
        print(line, end="", flush=True)
        if headline.search(line):
            report.headlines.setdefault(section, []).append(line.rstrip())
    returncode = process.wait()
    outcome = "done" if returncode == 0 else "FAILED (exit %d)" % returncode
    report.note("bench/%s" % script, "%s in %.0f s; figures above" % (outcome, time.monotonic() - started), load())


def section_runner(section):
    return lambda report: run_script(report, section)


for _section in SCRIPTS:
    globals()["section_" + _section] = section_runner(_section)


# Section: memory


def section_memory(report):
    args = report.args
    sizes = [int(size) for size in args.memory_contacts.split(",")]
    print("\n== Peak memory of one `sync_crm --crm %s` process ==" % args.worker_crm)
    print("RSS when started; a tenth, half way and all the way through the sync; peak; peak minus the peak before")
    print(
        "%-9s %5s %8s %-20s %8s %8s %11s %8s %s"
        % ("contacts", "DEBUG", "start MB", "10% / 50% / end MB", "peak MB", "growth", "contacts/s", "queries", "load")
    )
    for debug in (False, True) if args.memory_debug else (False,):
        for size in sizes:
            fill(size, args.worker_crm)
            go, (result,) = run_sync_processes(report, args.worker_crm, 1, DEBUG="true" if debug else "false")
            load_avg = load()
            growth = (result["max_rss_kb"] - result["peak_kb"]) / 1024
            profile = " / ".join("%.1f" % (kb / 1024) for kb in result["rss_profile_kb"])
            print(
                "%-9s %5s %8.1f %-20s %8.1f %8.1f %11s %8d %.2f"
                % (
                    format(size, ","),
                    "on" if debug else "off",
                    result["rss_kb"] / 1024,
                    profile,
                    result["max_rss_kb"] / 1024,
                    growth,
                    fmt_rate(rate(size, result["ended"] - go)),
                    result["queries_kept"],
                    load_avg,
                )
            )
            report.note(
                "peak RSS, `sync_crm` of %s contacts, DEBUG %s" % (format(size, ","), "on" if debug else "off"),
                "%.1f MB (RSS %s MB at a tenth / half / end of the sync)" % (result["max_rss_kb"] / 1024, profile),
                load_avg,
            )


# The report


def print_summary(report):
    args = report.args
    print("\n== Summary (Markdown, for README's Performance section) ==\n")
    print(
        "PostgreSQL %s, %d cores, django-q2 broker: %s, %s UTC, bench/report.py %s\n"
        % (
            pg_version(),
            os.cpu_count(),
            "Redis" if settings.REDIS_URL else "database",
            datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
            " ".join(sys.argv[1:]) or "(defaults)",
        )
    )
    if any(report.e2e[crm] for crm in args.crms):
        print(
            "| CRM | ceiling | crmsync, django-q2 | of ceiling | one at a time | one task per contact "
            "| crmsync at the same N | ratio | load |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for crm in args.crms:
            print(e2e_row(crm, report.e2e[crm], args))
        print()
    if report.summary:
        print("| what | figure | load |")
        print("|---|---|---|")
        for what, figure, load_avg in report.summary:
            print("| %s | %s | %.2f |" % (what, figure, load_avg))
    for section, lines in report.headlines.items():
        print("\n%s (bench/%s):\n\n```\n%s\n```" % (section, SCRIPTS[section][0], "\n".join(lines)))


def e2e_row(crm, figures, args):
    limit, _ = ceiling(crm, args.latency_ms)
    engine, naive = figures.get("engine"), figures.get("naive")
    cells = [crm, "%s/s" % format(limit, ",") if limit else "none"]
    if engine:
        cells += [
            "%s/s (%s)" % (fmt_rate(engine["rate"]), format(engine["n"], ",")),
            "%.0f%%" % (100 * engine["rate"] / limit) if limit else "-",
            "%s/s (%d)" % (fmt_rate(engine["sample"]["rate"]), engine["sample"]["n"]),
        ]
    else:
        cells += ["-", "-", "-"]
    if naive:
        count = args.brevo_naive_contacts if crm == "brevo" else args.naive_contacts
        cells += [
            "%s/s (%s)" % (fmt_rate(naive["rate"]), format(count, ",")),
            "%s/s" % fmt_rate(figures["naive_engine"]["rate"]),
            "%.1fx" % figures["ratio"],
        ]
    else:
        cells += ["-", "-", "-"]
    loads = [f["load"] for f in (engine, naive) if f]
    cells.append("/".join("%.2f" % value for value in loads) or "-")
    return "| %s |" % " | ".join(cells)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the harness, figures are rough")
    parser.add_argument("--crm", action="append", choices=CRMS, help="e2e and naive: these CRMs (default: all four)")
    parser.add_argument("--contacts", type=int, help="e2e: contacts for HubSpot and Mautic (20,000; quick 2,000)")
    parser.add_argument("--brevo-contacts", type=int, help="e2e: contacts for Brevo, 10/s (2,000 = 200 s; quick 100)")
    parser.add_argument("--n8n-contacts", type=int, help="e2e: contacts for n8n (2,000; quick 200)")
    parser.add_argument("--sample", type=int, help="e2e: contacts per CRM one at a time (100; quick 10)")
    parser.add_argument("--naive-contacts", type=int, help="naive: N per CRM but Brevo (500; quick 50)")
    parser.add_argument("--brevo-naive-contacts", type=int, help="naive: N for Brevo (300 = 2 x 30 s; quick 30)")
    parser.add_argument("--scaleout-contacts", type=int, help="scaleout: contacts per run (50,000; quick 5,000)")
    parser.add_argument("--repeats", type=int, help="scaleout: runs per process count (3; quick 1)")
    parser.add_argument("--large-rows", type=int, help="claim: rows in the large table (1,000,000; quick 100,000)")
    parser.add_argument("--memory-contacts", help="memory: sizes, comma-separated (50000,200000; quick 5000,20000)")
    parser.add_argument(
        "--no-memory-debug", dest="memory_debug", action="store_false", help="memory: skip the runs with DEBUG on"
    )
    parser.add_argument(
        "--worker-crm",
        choices=("noop", "mautic"),
        default="noop",
        help="scaleout and memory: the no-HTTP backend (default) or the sandbox's Mautic",
    )
    parser.add_argument("--latency-ms", type=int, default=50, help="sandbox latency per request")
    parser.add_argument("--clusters", type=int, default=1, help="qcluster processes (default 1)")
    parser.add_argument("--q-workers", type=int, default=4, help="django-q2 workers per qcluster (default 4)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds to wait for a queue to drain")
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.crms = args.crm or list(CRMS)
    args.sections = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error("unknown sections: %s (choose from %s)" % (", ".join(unknown), ", ".join(SECTIONS)))
    return args


def main():
    args = parse_args()
    logging.disable(logging.INFO)  # this process's own; the workers log to files
    setup_test_environment()
    old_config = setup_databases(verbosity=0, interactive=False)
    server = SandboxServer(port=0, options=SandboxOptions(latency_ms=args.latency_ms, seed=1)).start()
    settings.CRMSYNC_SANDBOX_URL = server.url
    logs = Path(tempfile.mkdtemp(prefix="crmsync-report-"))
    report = Report(args, server, logs)
    started = time.monotonic()
    try:
        if connection.vendor != "postgresql":
            sys.exit("bench/report.py measures PostgreSQL; set DATABASE_URL=postgres://...")
        print(
            "PostgreSQL %s (%s), %d cores, load %.2f; django-q2 broker: %s; worker logs in %s"
            % (
                pg_version(),
                connection.settings_dict["NAME"],
                os.cpu_count(),
                load(),
                "Redis" if settings.REDIS_URL else "database",
                logs,
            )
        )
        call_command("crm_setup", *["--crm=%s" % crm for crm in CRMS], stdout=open(os.devnull, "w"))  # noqa: SIM115
        Schedule.objects.all().delete()  # migrate's schedules would run beside the measurements
        for name in SECTIONS:
            if name in args.sections:
                globals()["section_" + name](report)
        print_summary(report)
        print("\nwhole run: %.0f s" % (time.monotonic() - started))
        shutil.rmtree(logs)
    except BaseException:
        print("worker logs kept in %s" % logs, file=sys.stderr)
        raise
    finally:
        server.stop()
        connections.close_all()
        teardown_databases(old_config, verbosity=0)


if __name__ == "__main__":
    main()
