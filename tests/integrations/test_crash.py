"""Crash tests on PostgreSQL: a database connection lost while results are recorded,
and worker processes killed with SIGKILL in the middle of batches. Nothing is lost,
nothing is recorded twice, and the CRM creates each email once."""

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from io import StringIO
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.utils import timezone

from contacts import selection
from contacts.models import AttemptOutcome, Contact, ContactSync, ProcessingStatus, SyncAttempt, SyncStatus
from integrations import engine
from integrations.backends.hubspot import HubSpotBackend
from integrations.conf import SyncPolicy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
logger = logging.getLogger(__name__)

LEASE_SECONDS = 10  # the shortest CRMSYNC_LEASE_SECONDS allows


class UpsertLog:
    """Wraps the sandbox's request handler to note every HubSpot batch upsert: when it
    arrived, when it was answered, and which emails it created or updated."""

    def __init__(self, sandbox):
        self.handle = sandbox.handle
        self.entries = []
        self.in_flight = 0
        self.lock = threading.Lock()

    def __call__(self, crm, request):
        is_upsert = crm == "hubspot" and request.path.endswith("/batch/upsert")
        if not is_upsert:
            return self.handle(crm, request)
        started = time.time()
        with self.lock:
            self.in_flight += 1
        try:
            response = self.handle(crm, request)
        finally:
            with self.lock:
                self.in_flight -= 1
        results = json.loads(response.body).get("results", []) if response.status == 200 else []
        with self.lock:
            self.entries.append(
                {
                    "started": started,
                    "answered": time.time(),
                    "status": response.status,
                    "results": [(r["properties"]["email"], r["new"]) for r in results],
                }
            )
        return response

    def created(self):
        return Counter(email for entry in self.entries for email, new in entry["results"] if new)

    def pushed(self):
        return Counter(email for entry in self.entries for email, _ in entry["results"])


@pytest.fixture
def upserts(sandbox, sandbox_server, monkeypatch):
    log = UpsertLog(sandbox_server.sandbox)
    monkeypatch.setattr(sandbox_server.sandbox, "handle", log)
    return log


def queue_for_hubspot(count):
    Contact.objects.bulk_create(
        Contact(email="crash%d@example.com" % i, first_name="F%d" % i, last_name="Lee") for i in range(count)
    )
    selection.select(Contact.objects.all(), ["hubspot"])


def elsewhere(function):
    """Run `function` on another thread, so over another database connection."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function()
        except Exception as exc:  # re-raised below, on the test's thread
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def terminate_backend(pid):
    def run():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
            return cursor.fetchone()[0]

    assert elsewhere(run), "the backend was terminated"


# The database connection drops while a batch is recorded


class DropWhileRecording:
    """Wraps engine._write_claimed: during the second batch's record, once its UPDATE
    has run, the worker's database backend is terminated from another connection.
    The next batch's record looks at the dropped rows from outside."""

    def __init__(self):
        self.write_claimed = engine._write_claimed
        self.records = 0
        self.dropped = None

    def __call__(self, token, rows, **options):
        written = self.write_claimed(token, rows, **options)
        if rows:
            self.records += 1
            if self.records == 2:
                pid = connection.connection.get_backend_pid()
                self.dropped = {"token": token, "ids": set(rows), "written": len(written), "pid": pid}
                terminate_backend(pid)
            elif self.records == 3:
                self.dropped["seen_later"] = elsewhere(self.look_at_dropped_rows)
                self.dropped["pid_later"] = connection.connection.get_backend_pid()
        return written

    def look_at_dropped_rows(self):
        rows = ContactSync.objects.filter(pk__in=self.dropped["ids"])
        return {
            "states": set(rows.values_list("processing_status", "claim_token")),
            "leased": rows.filter(lease_expires_at__gt=timezone.now()).count(),
            "attempt_rows": SyncAttempt.objects.filter(contact_id__in=rows.values("contact_id")).count(),
        }


def count_claims(monkeypatch):
    """Counts SyncEngine.claim calls that found nothing due."""
    claim = engine.SyncEngine.claim
    counter = SimpleNamespace(empty=0)

    def counting(self, limit):
        batch = claim(self, limit)
        counter.empty += not batch.rows
        return batch

    monkeypatch.setattr(engine.SyncEngine, "claim", counting)
    return counter


def test_a_connection_lost_while_recording_rolls_the_batch_back_and_sync_crm_carries_on(
    on_postgres, sandbox, upserts, settings, monkeypatch
):
    settings.CRMSYNC_LEASE_SECONDS = LEASE_SECONDS
    settings.HUBSPOT_SYNC_RETRY_DELAY_MINUTES = 0
    queue_for_hubspot(250)
    drop = DropWhileRecording()
    monkeypatch.setattr(engine, "_write_claimed", drop)
    claims = count_claims(monkeypatch)
    out, err = StringIO(), StringIO()

    call_command("sync_crm", "--crm", "hubspot", "--until-empty", stdout=out, stderr=err)

    dropped = drop.dropped
    assert dropped and dropped["written"] == 100, "the batch's UPDATE had run when the connection went"
    # Seen from outside while the loop went on: the whole batch rolled back and is
    # held by its lease; nothing of it was recorded.
    assert dropped["seen_later"] == {
        "states": {(ProcessingStatus.PROCESSING, dropped["token"])},
        "leased": 100,
        "attempt_rows": 0,
    }
    assert dropped["pid_later"] != dropped["pid"], "the loop carried on over a new connection"
    assert "database connection" in err.getvalue()
    # Nothing was due while the lease ran: the loop slept until it ran out, it did not spin.
    assert claims.empty <= 3, claims.empty
    rows = ContactSync.objects.select_related("contact")
    assert {(r.sync_status, r.processing_status) for r in rows} == {(SyncStatus.COMPLETE, ProcessingStatus.COMPLETE)}
    assert not rows.exclude(claim_token=None).exists() and not rows.exclude(lease_expires_at=None).exists()
    assert Counter(r.attempts for r in rows) == {1: 150, 2: 100}
    assert {r.pk for r in rows if r.attempts == 2} == dropped["ids"], "only the dropped batch was claimed again"
    attempts = SyncAttempt.objects.values_list("contact_id", "outcome")
    assert Counter(contact for contact, _ in attempts) == Counter({r.contact_id: 1 for r in rows})
    assert {outcome for _, outcome in attempts} == {AttemptOutcome.ACCEPTED}
    emails = {r.contact.email for r in rows}
    dropped_emails = {r.contact.email for r in rows if r.pk in dropped["ids"]}
    remote = [c["properties"]["email"] for c in sandbox.contacts("hubspot")]
    assert sorted(remote) == sorted(emails), "the CRM holds each email once"
    assert upserts.created() == Counter(dict.fromkeys(emails, 1)), "each email was created once"
    assert upserts.pushed() == Counter({email: 2 if email in dropped_emails else 1 for email in emails})


# Worker processes killed with SIGKILL in the middle of batches

CONTACTS = 5000
WORKERS = 3
# What each kill waits for its victim to be doing (None: whatever it is doing); the
# order is shuffled, and the moments and victims drawn, by a seeded random.Random.
KILL_TARGETS = ["claim", "push", "record", "claim", "record", None]
SEED = int(os.environ.get("CRMSYNC_CRASH_SEED", "20261128"))
TABLE = '"%s"' % ContactSync._meta.db_table
# How the worker's statements start, as pg_stat_activity shows them.
CLAIM_SQL = ('SELECT %s."id" AS "pk"' % TABLE, 'UPDATE %s SET "processing_status"' % TABLE)
RECORD_UPDATE = 'UPDATE %s SET "external_id"' % TABLE
RECORD_INSERT = 'INSERT INTO "%s"' % SyncAttempt._meta.db_table


def database_url(application_name):
    """The test database as a DATABASE_URL; the application name tells workers apart."""
    db = connection.settings_dict
    user = quote(db["USER"] or "", safe="") + (":" + quote(db["PASSWORD"], safe="") if db["PASSWORD"] else "")
    return "postgres://%s@%s:%s/%s?application_name=%s" % (
        user,
        db["HOST"],
        db["PORT"] or 5432,
        quote(db["NAME"]),
        application_name,
    )


class Workers:
    """`sync_crm --until-empty` processes on the test database, each logging to a file."""

    def __init__(self, base_dir, log_dir, env):
        self.base_dir, self.log_dir, self.env = base_dir, log_dir, env
        self.all = []

    def start(self):
        name = "crmsync-crash-%d" % len(self.all)
        log = self.log_dir / (name + ".log")
        command = ["manage.py", "sync_crm", "--crm", "hubspot", "--until-empty", "--batch-size", "50"]
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [sys.executable, *command, "--verbosity", "2"],
                cwd=self.base_dir,
                env={**self.env, "DATABASE_URL": database_url(name)},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.all.append(SimpleNamespace(name=name, process=process, log=log))

    def live(self):
        return [worker for worker in self.all if worker.process.poll() is None]

    def wait(self, timeout):
        deadline = time.monotonic() + timeout
        for worker in self.all:
            worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))

    def stop(self):
        for worker in self.live():
            worker.process.kill()
            worker.process.wait()


@dataclass(eq=False)
class Kill:
    target: str  # the phase it waited for; None: any
    victim: SimpleNamespace
    at: float  # time.time()
    offset: float  # seconds into the run
    phase: str  # the phase the victim was seen in
    query: str
    fate: str = None  # of the transaction it was in: "committed" or "aborted"
    touched: dict = field(default_factory=dict)  # {pk: (status, token, lease)} that transaction held
    processing: dict = field(default_factory=dict)  # {pk: (token, attempts, lease)} right after


def activity(worker):
    """(state, query, transaction id) of the worker's database backend, or None. A
    worker may have several (its claim ahead and its record behind have their own
    connections): the one holding a transaction, if any, tells what it is doing."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT state, query, backend_xid::text FROM pg_stat_activity WHERE application_name = %s "
            "ORDER BY backend_xid IS NULL, backend_start",
            [worker.name],
        )
        return cursor.fetchone()


def phase_of(seen, upserts):
    state, query, xid = seen or ("not connected", "", None)
    # With a transaction id, it holds rows: locked by the claim, or written by the record.
    busy = state in ("active", "idle in transaction") and xid
    if busy and query.startswith(CLAIM_SQL):
        return "claim"
    # The record has updated the rows and not yet written (all) the attempts.
    updated = state == "idle in transaction" and query.startswith(RECORD_UPDATE)
    if busy and (updated or query.startswith(RECORD_INSERT)):
        return "record"
    # Idle after committing its pacing slot: waiting for it, or its request is out.
    if state == "idle" and query == "COMMIT" and upserts.in_flight:
        return "push"
    return "other"


def kill_in_phase(worker, target, upserts, started, patience=5.0):
    """SIGKILL `worker` as soon as it is seen in phase `target` (None: at once; after
    `patience` seconds: whatever it is doing); return what is known of the kill once
    its database backend has gone."""
    deadline = time.monotonic() + patience
    while True:
        seen = activity(worker)
        phase = phase_of(seen, upserts)
        if target is None or phase == target or time.monotonic() > deadline:
            break
        time.sleep(0.002)
    worker.process.kill()
    at = time.time()
    worker.process.wait()
    while activity(worker) and time.time() - at < 10:
        time.sleep(0.01)  # its open transaction, if any, is rolled back
    kill = Kill(target, worker, at, at - started, phase, (seen or ("", "", None))[1][:60])
    if seen and seen[2] and phase in ("claim", "record"):
        kill.fate, kill.touched = transaction_fate(seen[2]), rows_touched_by(seen[2])
    kill.processing = {
        pk: (token, attempts, lease)
        for pk, token, attempts, lease in ContactSync.objects.filter(
            processing_status=ProcessingStatus.PROCESSING
        ).values_list("pk", "claim_token", "attempts", "lease_expires_at")
    }
    return kill


def transaction_fate(xid):
    """ "committed" or "aborted": what became of the transaction with this 32-bit id (the
    kill may land after its COMMIT left the client)."""
    epoch = "((pg_snapshot_xmax(pg_current_snapshot())::text::bigint >> 32) << 32)"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_xact_status((%s | %%s::bigint)::text::xid8)" % epoch, [int(xid)])
        return cursor.fetchone()[0]


def rows_touched_by(xid):
    """The rows a transaction locked or updated, as they are now: the version visible
    after it carries its id as xmax (a rolled-back update, or a lock carried over)."""
    with connection.cursor() as cursor:
        columns = "id, processing_status, claim_token, lease_expires_at"
        cursor.execute("SELECT %s FROM %s WHERE xmax = %%s::xid" % (columns, TABLE), [xid])
        return {pk: (status, token, lease) for pk, status, token, lease in cursor.fetchall()}


def lost_claims(kills, rows):
    """{token: (kill, {pk: attempts}, lease)}: the claims seen Processing right after a
    kill that were never recorded (their rows were claimed again later), each with the
    first kill after which it was seen."""
    first_seen = {}
    for kill in kills:
        for pk, (token, attempts, lease) in kill.processing.items():
            claim = first_seen.setdefault(token, (kill, {}, lease))
            if claim[0] is kill:
                claim[1][pk] = attempts
    return {
        token: claim
        for token, claim in first_seen.items()
        if all(rows[pk].attempts > attempts for pk, attempts in claim[1].items())
    }


def how_far(claim, email, upserts, kill=None):
    """How far a lost claim got before its worker died (by default at the first kill
    after which it was seen), from what the sandbox had received by then."""
    first_seen, claimed, lease = claim
    kill = kill or first_seen
    emails = {email[pk] for pk in claimed}
    claimed_at = lease.timestamp() - LEASE_SECONDS
    sent = [
        entry
        for entry in upserts.entries
        if claimed_at <= entry["started"] < kill.at and emails & {address for address, _ in entry["results"]}
    ]
    if not sent:
        return "claimed, not pushed"
    if any(entry["answered"] > kill.at for entry in sent):
        return "push in flight"
    return "pushed, not recorded"


def assert_left_whole(kill, lost, email, upserts):
    """A kill inside a transaction leaves all of it or none of it."""
    if not kill.touched:
        return
    statuses = {status for status, _, _ in kill.touched.values()}
    tokens = {token for _, token, _ in kill.touched.values()}
    if kill.phase == "record" and kill.fate == "aborted":
        # The whole record rolled back: the rows are still claimed, though the CRM has them.
        assert statuses == {ProcessingStatus.PROCESSING} and len(tokens) == 1
        assert how_far(lost[tokens.pop()], email, upserts, kill) == "pushed, not recorded"
    if kill.phase == "claim" and kill.fate == "aborted":
        # The whole claim rolled back: its rows are as they were, queued or on an old lease.
        for status, _, lease in kill.touched.values():
            assert status == ProcessingStatus.QUEUED or (
                status == ProcessingStatus.PROCESSING and lease.timestamp() < kill.at
            )
    if kill.phase == "claim" and kill.fate == "committed":
        # Its COMMIT got out first: the whole batch is claimed, and waits for its lease.
        assert statuses == {ProcessingStatus.PROCESSING} and len(tokens) == 1
        assert how_far(lost[tokens.pop()], email, upserts, kill) == "claimed, not pushed"


def crash_env(sandbox):
    return {
        **os.environ,
        "DEBUG": "true",
        "LOG_LEVEL": "DEBUG",
        "PYTHONUNBUFFERED": "1",
        "CRMSYNC_SANDBOX_URL": sandbox.url,
        "CRMSYNC_LEASE_SECONDS": str(LEASE_SECONDS),
        # Within what the short lease allows (system check integrations.E002); in
        # sandbox mode every CRM is enabled, so every CRM's deadline counts.
        **{"%s_TIMEOUT_SECONDS" % crm: "5" for crm in ("BREVO", "HUBSPOT", "MAUTIC", "N8N")},
        "HUBSPOT_SYNC_RETRY_DELAY_MINUTES": "0",
    }


def run_and_kill(workers, upserts, rng):
    """Start the workers, kill one at a random moment in each target phase and start
    another in its place, then let them finish. Returns the kills."""
    kills, started = [], time.time()
    for _ in range(WORKERS):
        workers.start()
    for target in rng.sample(KILL_TARGETS, len(KILL_TARGETS)):
        time.sleep(rng.uniform(1.0, 2.5))
        # Work left: due, or held by a worker (claimed ahead during a push, say).
        left = [ProcessingStatus.QUEUED, ProcessingStatus.PROCESSING]
        if not ContactSync.objects.filter(processing_status__in=left).exists():
            break
        kill = kill_in_phase(rng.choice(workers.live()), target, upserts, started)
        kills.append(kill)
        logger.info(
            "kill %d at %.2f s: %s, waiting for %s, seen in %s (%s); its transaction: %s, %d rows",
            len(kills),
            kill.offset,
            kill.victim.name,
            target or "anything",
            kill.phase,
            kill.query,
            kill.fate or "none",
            len(kill.touched),
        )
        workers.start()
    try:
        workers.wait(timeout=150)
    except subprocess.TimeoutExpired:
        pytest.fail("the workers did not finish within 150 s; their logs are in %s" % workers.log_dir)
    return kills


def test_workers_killed_mid_batch_lose_nothing_and_create_each_email_once(
    on_postgres, sandbox, upserts, settings, tmp_path
):
    queue_for_hubspot(CONTACTS)
    # Each push takes long enough to be killed in flight; HubSpot's real rate limit applies.
    sandbox.faults("hubspot", latency_ms=500)
    workers = Workers(settings.BASE_DIR, tmp_path, crash_env(sandbox))
    logger.info("crash test: seed %d (CRMSYNC_CRASH_SEED), worker logs in %s", SEED, tmp_path)
    try:
        kills = run_and_kill(workers, upserts, random.Random(SEED))
    finally:
        workers.stop()

    rows = {row.pk: row for row in ContactSync.objects.select_related("contact")}
    email = {pk: row.contact.email for pk, row in rows.items()}
    lost = lost_claims(kills, rows)
    progress = {token: how_far(claim, email, upserts) for token, claim in lost.items()}
    for token, (kill, claimed, _) in lost.items():
        logger.info("kill at %.2f s left %d rows Processing: %s", kill.offset, len(claimed), progress[token])
    logger.info("phases the victims were seen in: %s", dict(Counter((k.phase, k.fate) for k in kills)))
    logger.info("how far the lost claims had got: %s", dict(Counter(progress.values())))

    assert len(kills) >= 4 and {kill.victim.process.returncode for kill in kills} == {-signal.SIGKILL}
    assert lost, "at least one kill came between a claim and its record"
    for kill in kills:
        assert_left_whole(kill, lost, email, upserts)
    victims = [kill.victim for kill in kills]
    for worker in workers.all:
        if worker not in victims:
            log = worker.log.read_text()
            assert worker.process.returncode == 0 and "Traceback" not in log, log[-3000:]

    assert {(r.sync_status, r.processing_status) for r in rows.values()} == {
        (SyncStatus.COMPLETE, ProcessingStatus.COMPLETE)
    }
    assert all(r.claim_token is None and r.lease_expires_at is None for r in rows.values())
    remote = {c["properties"]["email"]: str(c["id"]) for c in sandbox.contacts("hubspot")}
    assert len(sandbox.contacts("hubspot")) == CONTACTS and set(remote) == set(email.values())
    assert all(row.external_id == remote[email[pk]] for pk, row in rows.items())
    # An email-keyed store cannot hold duplicates; the upserts show what was attempted.
    assert upserts.created() == Counter(set(email.values())), "each email was created once, then only updated"
    pushed_again = {address for address, count in upserts.pushed().items() if count > 1}
    assert pushed_again <= {email[pk] for pk, row in rows.items() if row.attempts > 1}

    attempts = SyncAttempt.objects.values_list("contact_id", "outcome")
    assert Counter(contact for contact, _ in attempts) == Counter({row.contact_id: 1 for row in rows.values()})
    assert {outcome for _, outcome in attempts} == {AttemptOutcome.ACCEPTED}
    times_lost = Counter(pk for _, claimed, _ in lost.values() for pk in claimed)
    max_attempts = SyncPolicy.for_backend(HubSpotBackend).max_attempts
    for pk, row in rows.items():
        assert row.attempts == 1 + times_lost[pk] <= max_attempts, "each claim beyond the first was lost to a kill"
