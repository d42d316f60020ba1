"""Time the sync dashboard with 1,000,000 ContactSync and 5,000,000 SyncAttempt rows.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crmsync .venv/bin/python bench/dashboard.py

Runs in a throwaway database (test_<name>) created and dropped around the run. The
rows are written by INSERT ... SELECT generate_series (PostgreSQL only): 250,000
contacts, each with a row for each of the four CRMs in a mix of statuses, and
attempts spread over 30 days with a fifth of them in the last 24 hours (the
dashboard's window, so the worst case for it). Prints the page's time over several
renders and each query's own time and plan. Target: under 1 s.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crmsync_project.settings")
os.environ.setdefault("DEBUG", "true")
# Sandbox mode enables the four CRMs with placeholder credentials; nothing is sent.
os.environ.setdefault("CRMSYNC_SANDBOX_URL", "http://127.0.0.1:9")

import django

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_databases, setup_test_environment, teardown_databases  # noqa: E402

from contacts.models import Contact  # noqa: E402

CRMS = ["brevo", "hubspot", "mautic", "n8n"]
ERRORS = 20

CONTACTS_SQL = """
INSERT INTO contacts_contact (email, first_name, last_name, phone, company, website, source_url,
                              attributes, enrichment, created_at, updated_at)
SELECT 'bench' || i || '@example.com', 'First' || i, '', '', 'Company ' || (i %% 500), '', '',
       '{}', '{}', now(), now()
FROM generate_series(1, %(contacts)s) AS i
"""

# One row per contact and CRM. By i %% 100: 70 complete, 10 queued (half due, half
# backing off), 1 processing, 5 error, 4 skipped, 10 new.
SYNCS_SQL = """
INSERT INTO contacts_contactsync (contact_id, crm, sync_status, processing_status, attempts,
    next_attempt_at, lease_expires_at, last_error, external_id, synced_at, synced_hash, created_at, updated_at)
SELECT c.id, crm.name,
       CASE WHEN m < 70 THEN 'complete' WHEN m < 81 THEN 'selected' WHEN m < 86 THEN 'error'
            WHEN m < 90 THEN 'skipped' ELSE 'new' END,
       CASE WHEN m < 70 THEN 'complete' WHEN m < 80 THEN 'queued' WHEN m < 81 THEN 'processing'
            WHEN m < 86 THEN 'error' ELSE '' END,
       1,
       CASE WHEN m < 75 AND m >= 70 THEN now() - (c.id %% 3600) * interval '1 second'
            WHEN m < 80 AND m >= 75 THEN now() + (c.id %% 3600) * interval '1 second' END,
       CASE WHEN m = 80 THEN now() + interval '5 minutes' END,
       CASE WHEN m >= 81 AND m < 86 THEN 'Error number ' || (c.id %% %(errors)s) || ': the CRM rejected this contact'
            ELSE '' END,
       CASE WHEN m < 70 THEN 'ext-' || c.id ELSE '' END,
       CASE WHEN m < 70 THEN now() - interval '3 days' END,
       '', now(),
       now() - (c.id %% 48) * interval '1 hour'
FROM (SELECT id, id %% 100 AS m FROM contacts_contact) AS c
CROSS JOIN (SELECT unnest(%(crms)s::text[]) AS name) AS crm
"""

# A fifth of the attempts fall in the last 24 hours, the rest over 30 days.
ATTEMPTS_SQL = """
INSERT INTO contacts_syncattempt (contact_id, crm, attempted_at, outcome, http_status, duration_ms, error)
SELECT (SELECT min(id) FROM contacts_contact) + (i %% %(contacts)s),
       (%(crms)s::text[])[1 + i %% 4],
       CASE WHEN i %% 5 = 0 THEN now() - (i %% 86400) * interval '1 second'
            ELSE now() - interval '1 day' - (i %% 2505600) * interval '1 second' END,
       CASE WHEN i %% 20 < 17 THEN 'accepted' WHEN i %% 20 < 19 THEN 'retry' ELSE 'failed' END,
       200, 50, ''
FROM generate_series(1, %(attempts)s) AS i
"""


def timed(label, func):
    started = time.perf_counter()
    func()
    print("%-44s %8.1f s" % (label, time.perf_counter() - started), flush=True)


def execute(sql, params=None):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def load(contacts, attempts):
    params = {"contacts": contacts, "attempts": attempts, "crms": CRMS, "errors": ERRORS}
    timed("insert %d contacts" % contacts, lambda: execute(CONTACTS_SQL, params))
    timed("insert %d contact syncs" % (contacts * len(CRMS)), lambda: execute(SYNCS_SQL, params))
    timed("insert %d sync attempts" % attempts, lambda: execute(ATTEMPTS_SQL, params))
    # What autovacuum does on a live database; index-only scans need the visibility map.
    timed("vacuum analyze", lambda: execute("VACUUM ANALYZE"))


def render(client):
    started = time.perf_counter()
    response = client.get("/admin/dashboard/")
    seconds = time.perf_counter() - started
    assert response.status_code == 200, response.status_code
    assert response.content.count(b'class="crm-card"') == len(CRMS)
    return seconds


def explain(queries):
    """Each query's time, and the plan of the slow ones, from EXPLAIN ANALYZE."""
    for query in queries:
        sql = query["sql"]
        if not sql.startswith("SELECT"):
            continue
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            plan = [row[0] for row in cursor.fetchall()]
        total = next((line for line in reversed(plan) if line.startswith("Execution Time")), "")
        print("\n%s\n  %s" % (sql[:160] + ("..." if len(sql) > 160 else ""), total))
        if float(total.split(":")[1].split()[0]) > 20:
            print("\n".join("    " + line for line in plan))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=250_000, help="contacts; each gets one row per CRM (4)")
    parser.add_argument("--attempts", type=int, default=5_000_000)
    parser.add_argument("--renders", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the database and its rows for the next run")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("bench/dashboard.py needs PostgreSQL: set DATABASE_URL=postgres://...")

    setup_test_environment()
    old_config = setup_databases(verbosity=0, interactive=False, keepdb=args.keep)
    try:
        print("database: %s %s" % (connection.vendor, connection.settings_dict["NAME"]))
        if not Contact.objects.exists():
            load(args.contacts, args.attempts)
        client = Client()
        user = User.objects.filter(username="bench").first() or User.objects.create_superuser("bench", password="x")
        client.force_login(user)
        render(client)  # templates and the first connection
        with CaptureQueriesContext(connection) as captured:
            times = [render(client) for _ in range(args.renders)]
        per_render = len(captured) // args.renders
        print(
            "\ndashboard, %d renders: min %.3f s, median %.3f s, max %.3f s; %d queries per render"
            % (args.renders, min(times), statistics.median(times), max(times), per_render)
        )
        explain(captured.captured_queries[:per_render])
        verdict = "met" if statistics.median(times) < 1 else "NOT met"
        print(
            "\ntarget: the dashboard in under 1 s with %d ContactSync and %d SyncAttempt rows: median %.3f s (%s)"
            % (args.contacts * len(CRMS), args.attempts, statistics.median(times), verdict)
        )
    finally:
        teardown_databases(old_config, verbosity=0, keepdb=args.keep)


if __name__ == "__main__":
    main()
