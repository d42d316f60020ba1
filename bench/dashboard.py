"""Time the sync dashboard with 1,000,000 ContactSync and 5,000,000 SyncAttempt rows,
at two traffic levels.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crmsync .venv/bin/python bench/dashboard.py

Runs in a throwaway database (test_<name>) created and dropped around the run. The
rows are written by INSERT ... SELECT generate_series (PostgreSQL only), with the
foreign-key and rollup triggers off for speed (session_replication_role replica),
then the rollups are rebuilt as migration 0008 does (its time is printed): 250,000
contacts, each with a row for each of the four CRMs in a mix of statuses, and
attempts over 30 days. First a fifth of the attempts fall in the last 24 hours
(the dashboard's window); then the attempts of four in five of those hours are moved
a day back by an UPDATE the rollup triggers follow, leaving a fiftieth. At each
level: the page's time over several renders, each query's own time, and whether
the rollups still equal a real COUNT. dashboard_figures() is what bench/report.py
calls. Target: under 0.3 s at both levels.
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

from contacts.models import ContactSync  # noqa: E402
from integrations import rollups  # noqa: E402

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
    next_attempt_at, lease_expires_at, last_error, external_id, synced_at, synced_hash, created_at, updated_at,
    operation, pending_decision, crm_event, synced_email, warning, crm_process_id)
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
       now() - (c.id %% 48) * interval '1 hour',
       '', '', '', '', '', ''
FROM (SELECT id, id %% 100 AS m FROM contacts_contact) AS c
CROSS JOIN (SELECT unnest(%(crms)s::text[]) AS name) AS crm
"""

# A fifth of the attempts fall in the last 24 hours, the rest over 30 days.
# In the last 24 hours, i % 50 = 0 marks a fiftieth of all attempts (see LESS_TRAFFIC_SQL).
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


# Four in five of the last day's attempts move a day back: a fiftieth of all
# attempts is left in the window. An UPDATE through the rollup triggers.
LESS_TRAFFIC_SQL = """
UPDATE contacts_syncattempt SET attempted_at = attempted_at - interval '1 day'
WHERE attempted_at > now() - interval '1 day' AND id % 50 <> 0
"""


def load_average():
    return os.getloadavg()[0]


def timed(label, func):
    started = time.perf_counter()
    func()
    seconds = time.perf_counter() - started
    print("%-44s %8.1f s   (load %.2f)" % (label, seconds, load_average()), flush=True)
    return seconds


def execute(sql, params=None):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def load(contacts, attempts):
    """The rows, then the rollups recounted from them; returns the rebuild's seconds."""
    params = {"contacts": contacts, "attempts": attempts, "crms": CRMS, "errors": ERRORS}
    # Neither foreign-key checks nor rollup triggers: the rebuild below counts it all.
    execute("SET session_replication_role = replica")
    try:
        timed("insert %d contacts" % contacts, lambda: execute(CONTACTS_SQL, params))
        timed("insert %d contact syncs" % (contacts * len(CRMS)), lambda: execute(SYNCS_SQL, params))
        timed("insert %d sync attempts" % attempts, lambda: execute(ATTEMPTS_SQL, params))
    finally:
        execute("SET session_replication_role = DEFAULT")
    rebuild_seconds = timed("rebuild the rollups (migration 0008's step)", rollups.rebuild)
    # What autovacuum does on a live database; index-only scans need the visibility map.
    timed("vacuum analyze", lambda: execute("VACUUM ANALYZE"))
    return rebuild_seconds


def render(client):
    started = time.perf_counter()
    response = client.get("/admin/dashboard/")
    seconds = time.perf_counter() - started
    assert response.status_code == 200, response.status_code
    assert response.content.count(b'class="crm-card"') == len(CRMS)
    return seconds


def explain(queries, plans=True):
    """Each query's time, and the plan of the slow ones, from EXPLAIN ANALYZE;
    returns [(sql, ms)]."""
    timings = []
    for query in queries:
        sql = query["sql"]
        if not sql.startswith("SELECT"):
            continue
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            plan = [row[0] for row in cursor.fetchall()]
        total = next((line for line in reversed(plan) if line.startswith("Execution Time")), "")
        ms = float(total.split(":")[1].split()[0])
        timings.append((sql, ms))
        print("  %8.2f ms  %s" % (ms, sql[:110] + ("..." if len(sql) > 110 else "")))
        if plans and ms > 20:
            print("\n".join("    " + line for line in plan))
    return timings


def measure(client, label, renders):
    """One traffic level: the page's renders, each query's time, the rollups' check."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM contacts_syncattempt WHERE attempted_at > now() - interval '1 day'")
        (last_day,) = cursor.fetchone()
    render(client)  # templates and the first connection
    with CaptureQueriesContext(connection) as captured:
        times = [render(client) for _ in range(renders)]
    load = load_average()
    per_render = len(captured) // renders
    print(
        "\n%s: %d attempts in the last 24 hours; dashboard, %d renders: min %.3f s, median %.3f s, "
        "max %.3f s; %d queries per render (load %.2f)"
        % (label, last_day, renders, min(times), statistics.median(times), max(times), per_render, load)
    )
    queries = explain(captured.captured_queries[:per_render])
    exact = not rollups.differences()
    print("rollups equal a real COUNT: %s" % ("yes" if exact else "NO"))
    return {
        "label": label,
        "attempts_last_24h": last_day,
        "median_seconds": statistics.median(times),
        "min_seconds": min(times),
        "queries": per_render,
        "slowest_query_ms": max(ms for _sql, ms in queries),
        "rollups_exact": exact,
        "load_average": load,
    }


def dashboard_figures(contacts=250_000, attempts=5_000_000, renders=5, keep=False):
    """The dashboard at two traffic levels: {"rows": ..., "rebuild_seconds", "levels":
    [figures of measure()]}. Creates and drops its own database (keep: reuse it)."""
    setup_test_environment()
    old_config = setup_databases(verbosity=0, interactive=False, keepdb=keep)
    try:
        print("database: %s %s" % (connection.vendor, connection.settings_dict["NAME"]))
        rebuild_seconds = None
        if not ContactSync.objects.exists():
            rebuild_seconds = load(contacts, attempts)
        client = Client()
        user = User.objects.filter(username="bench").first() or User.objects.create_superuser("bench", password="x")
        client.force_login(user)
        levels = [measure(client, "a fifth of the attempts in the last 24 hours", renders)]
        timed("move 4 in 5 of the last day's attempts a day back", lambda: execute(LESS_TRAFFIC_SQL))
        execute("VACUUM ANALYZE")
        levels.append(measure(client, "a fiftieth of the attempts in the last 24 hours", renders))
        return {
            "contact_syncs": contacts * len(CRMS),
            "attempts": attempts,
            "rebuild_seconds": rebuild_seconds,
            "levels": levels,
        }
    finally:
        teardown_databases(old_config, verbosity=0, keepdb=keep)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=250_000, help="contacts; each gets one row per CRM (4)")
    parser.add_argument("--attempts", type=int, default=5_000_000)
    parser.add_argument("--renders", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the database and its rows for the next run")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("bench/dashboard.py needs PostgreSQL: set DATABASE_URL=postgres://...")
    figures = dashboard_figures(args.contacts, args.attempts, args.renders, args.keep)
    print()
    for level in figures["levels"]:
        verdict = "met" if level["median_seconds"] < 0.3 else "NOT met"
        print(
            "target: the dashboard in under 0.3 s with %d ContactSync and %d SyncAttempt rows, %s: "
            "median %.3f s (%s; load %.2f)"
            % (
                figures["contact_syncs"],
                figures["attempts"],
                level["label"],
                level["median_seconds"],
                verdict,
                level["load_average"],
            )
        )


if __name__ == "__main__":
    main()
