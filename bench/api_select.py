"""Time selecting contacts by filter through the HTTP API on the configured database.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crmsync .venv/bin/python bench/api_select.py

Fills --contacts contacts with set-based SQL (as bench/engine.py does), half of
them Complete for HubSpot, then times real requests through Django's test client
to PUT /api/v3/contacts/crm/select with the filter {"crm": "hubspot",
"sync_status": "complete"}: select them for Brevo (rows inserted), again (already
queued), skip, unselect, and a select by search. Runs in a throwaway database
(test_<name>) created and dropped around the run; prints its figures.
Target on PostgreSQL: selecting 100,000 contacts by filter for one CRM in under 5 s.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crmsync_project.settings")
os.environ.setdefault("DEBUG", "true")
# What is measured is the call, not the throttle.
os.environ.setdefault("CRMSYNC_API_RATE", "100000/min")

import django

django.setup()

from django.contrib.auth.models import Permission, User  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import setup_databases, setup_test_environment, teardown_databases  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

TARGET_SECONDS = 5.0
URL = "/api/v3/contacts/crm/select"
COMPLETE_FOR_HUBSPOT = {"crm": "hubspot", "sync_status": "complete"}


def api_client():
    user = User.objects.create_user("bench", password="unused-password-1234")
    user.user_permissions.set([Permission.objects.get(content_type__app_label="contacts", codename="change_contact")])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token %s" % Token.objects.create(user=user).key)
    return client


def fill(selected):
    """2 x `selected` contacts; the even ones Complete for HubSpot (the filter's match)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO contacts_contact (email, first_name, last_name, phone, company, website, source_url,"
            " attributes, enrichment, created_at, updated_at) SELECT 'bench' || i || '@example.com', 'F' || i,"
            " 'L', '', 'Company ' || (i %% 500), '', '', '{}', '{}', now(), now() FROM generate_series(1, %s) i",
            [2 * selected],
        )
        cursor.execute(
            "INSERT INTO contacts_contactsync (contact_id, crm, sync_status, processing_status, attempts,"
            " next_attempt_at, last_error, external_id, synced_hash, pending_decision, created_at, updated_at)"
            " SELECT id, 'hubspot', 'complete', 'complete', 1, NULL, '', 'hs-' || id, 'h', '', now(), now()"
            " FROM contacts_contact WHERE id % 2 = 0"
        )
        cursor.execute("ANALYZE")


def timed_call(client, label, body):
    started = time.perf_counter()
    response = client.put(URL, body, format="json")
    seconds = time.perf_counter() - started
    answer = response.json()
    print(
        "%-44s %7.3f s  HTTP %d  found %s  queued %s  %s"
        % (
            label,
            seconds,
            response.status_code,
            answer.get("updated_count"),
            answer.get("queued_count"),
            answer.get("per_crm"),
        )
    )
    return seconds


def run(client):
    by_filter = {"filter": COMPLETE_FOR_HUBSPOT, "crms": ["brevo"]}
    first = timed_call(client, "select by filter for brevo (insert)", by_filter)
    timed_call(client, "select by filter again (already queued)", by_filter)
    timed_call(client, "skip by filter", {**by_filter, "action": "skip"})
    timed_call(client, "unselect by filter", {**by_filter, "action": "unselect"})
    timed_call(client, "select by search 'company' (every contact)", {"filter": {"search": "company"}, "crms": ["n8n"]})
    return first


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=100_000, help="contacts the filter matches")
    args = parser.parse_args()

    setup_test_environment()
    old_config = setup_databases(verbosity=0, interactive=False)
    try:
        if connection.vendor != "postgresql":
            sys.exit("PostgreSQL only: set DATABASE_URL.")
        print("database: %s %s" % (connection.vendor, connection.settings_dict["NAME"]))
        started = time.perf_counter()
        fill(args.contacts)
        print("%-44s %7.3f s" % ("fill %d contacts" % (2 * args.contacts), time.perf_counter() - started))
        first = run(api_client())
        print(
            "select %d contacts by filter for 1 CRM through the API: %.2f s (target under %.0f s)"
            % (args.contacts, first, TARGET_SECONDS)
        )
    finally:
        teardown_databases(old_config, verbosity=0)


if __name__ == "__main__":
    main()
