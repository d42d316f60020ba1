"""Brevo in bulk, end to end: new contacts through Brevo's import at the real 10 requests/s.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crmsync .venv/bin/python bench/brevo_import.py
    ... bench/brevo_import.py --contacts 20000 --workers 2 --invalid-share 0.02

Runs in a throwaway PostgreSQL database (test_<name>) with the sandbox in this
process at its real rate limits and its default import delay (2 s plus 1 s per
1,000 rows), and `sync_crm --crm brevo` in worker processes (bench/report_worker.py).
A share of the contacts have an address Brevo refuses though crmsync takes it (a
domain without a dot). Prints contacts/s from the go to the last Complete, requests
per contact, the time to the last Complete, and whether every refused contact is in
Error with Brevo's words, each with the 1-minute load average. Target: 500 contacts/s,
50 times the single-contact ceiling of 10/s. bench/report.py can call measure().
"""

import argparse
import os
import secrets
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.report_settings")
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "bench-brevo-import-" + secrets.token_hex(24))

import django  # noqa: E402

django.setup()

import requests  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.db.models import Max  # noqa: E402
from django.test.utils import setup_databases, setup_test_environment, teardown_databases  # noqa: E402

from contacts import selection  # noqa: E402
from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus  # noqa: E402
from crm_sandbox.server import SandboxOptions, SandboxServer  # noqa: E402

SINGLE_CONTACT_CEILING = 10  # contacts/s: one contact per request at 10 requests/s
TARGET = 500
LIST_ID = 2  # the sandbox's "Your first list", as in a new Brevo account


def load():
    return os.getloadavg()[0]


def make_contacts(total, invalid_share):
    invalid = int(total * invalid_share)
    contacts = [
        Contact(email="imp%d@example.com" % i, first_name="F%d" % i, last_name="L", company="Acme")
        for i in range(total - invalid)
    ]
    contacts += [Contact(email="refused%d@localhost" % i, first_name="R") for i in range(invalid)]
    Contact.objects.bulk_create(contacts, batch_size=5000)
    selection.select(Contact.objects.all(), ["brevo"])
    return invalid


def measure(server, worker_env, contacts=20_000, workers=2, invalid_share=0.02):
    """Sync `contacts` new contacts to the sandbox's Brevo with `workers` sync_crm
    processes; return the figures (each with the load average when taken). The
    database is this process's connection; worker_env(**extra) gives the workers'
    environment (DATABASE_URL, CRMSYNC_SANDBOX_URL)."""
    from bench.report import run_sync_processes

    invalid = make_contacts(contacts, invalid_share)
    requests.post(server.url + "/_sandbox/reset", timeout=10).raise_for_status()

    class Runner:
        logs = Path(tempfile.mkdtemp(prefix="brevo-import-"))

        @staticmethod
        def worker_env(**extra):
            return worker_env(BREVO_LIST_ID=LIST_ID, **extra)

    go, _ = run_sync_processes(Runner, "brevo", workers)
    return figures(server, go, contacts, invalid)


def figures(server, go, contacts, invalid):
    from datetime import UTC, datetime

    rows = ContactSync.objects.filter(crm="brevo")
    last = rows.aggregate(last=Max("synced_at"))["last"]
    errors = rows.filter(sync_status=SyncStatus.ERROR, processing_status=ProcessingStatus.ERROR)
    refused = errors.filter(contact__email__endswith="@localhost")
    in_brevos_words = refused.filter(last_error__startswith="Brevo's import").count()
    complete = rows.filter(processing_status=ProcessingStatus.COMPLETE).exclude(external_id="").count()
    seconds = (last - datetime.fromtimestamp(go, UTC)).total_seconds() if last else float("nan")
    sent = len(requests.get(server.url + "/_sandbox/brevo/requests", timeout=30).json())
    average = load()
    return {
        "contacts": contacts,
        "complete_with_id": complete,
        "refused": invalid,
        "refused_in_brevos_words": in_brevos_words,
        "other_errors": errors.count() - refused.count(),
        "seconds_to_last_complete": seconds,
        "contacts_per_second": contacts / seconds if seconds else 0.0,
        "requests": sent,
        "requests_per_contact": sent / contacts,
        "load_average": average,
    }


def report(result):
    load_note = "(load %.2f)" % result["load_average"]
    rate = result["contacts_per_second"]
    print("Brevo bulk import, %d new contacts at 10 requests/s:" % result["contacts"])
    print(
        "  %.0f contacts/s, %.1fx the single-contact ceiling (target %d) %s"
        % (rate, rate / SINGLE_CONTACT_CEILING, TARGET, load_note)
    )
    print("  %.1f s from the go to the last Complete %s" % (result["seconds_to_last_complete"], load_note))
    print("  %d requests, %.4f per contact %s" % (result["requests"], result["requests_per_contact"], load_note))
    print("  %d Complete with their Brevo id" % result["complete_with_id"])
    print(
        "  %d of %d refused contacts in Error with Brevo's words (%d other errors)"
        % (result["refused_in_brevos_words"], result["refused"], result["other_errors"])
    )


def worker_env_for(server):
    from urllib.parse import quote

    db = connection.settings_dict

    def worker_env(**extra):
        url = "postgres://%s:%s@%s:%s/%s" % (
            quote(db["USER"] or "", safe=""),
            quote(db["PASSWORD"] or "", safe=""),
            db["HOST"] or "127.0.0.1",
            db["PORT"] or 5432,
            db["NAME"],
        )
        env = {**os.environ, "DATABASE_URL": url, "CRMSYNC_SANDBOX_URL": server.url}
        return {**env, **{key: str(value) for key, value in extra.items()}}

    return worker_env


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--invalid-share", type=float, default=0.02)
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("bench/brevo_import.py measures PostgreSQL; set DATABASE_URL=postgres://...")
    setup_test_environment()
    databases = setup_databases(verbosity=0, interactive=False, serialized_aliases=set())
    try:
        with SandboxServer(options=SandboxOptions()) as server:
            result = measure(server, worker_env_for(server), args.contacts, args.workers, args.invalid_share)
        report(result)
    finally:
        connections.close_all()
        teardown_databases(databases, verbosity=0)


if __name__ == "__main__":
    main()
