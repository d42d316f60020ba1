"""Time bulk upserts through the HTTP API on the configured database engine.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crmsync .venv/bin/python bench/api_bulk.py

One client posts --requests requests of --per-request new contacts to
POST /api/v3/contacts/bulk, then the same contacts again with a changed name
(updates), then again as they are (unchanged), then new ones selected for a CRM.
Runs in a throwaway database (test_<name>) created and dropped around the run.
Target on PostgreSQL: at least 5,000 contacts/s, 1,000 per request.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crmsync_project.settings")
os.environ.setdefault("DEBUG", "true")
# One client posting fast is what is measured, not the throttle.
os.environ.setdefault("CRMSYNC_API_RATE", "100000/min")

import django

django.setup()

from django.contrib.auth.models import Permission, User  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import setup_databases, setup_test_environment, teardown_databases  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

TARGET_PER_SECOND = 5000


def api_client():
    user = User.objects.create_user("bench", password="unused-password-1234")
    user.user_permissions.set([Permission.objects.get(content_type__app_label="contacts", codename="change_contact")])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token %s" % Token.objects.create(user=user).key)
    return client


def contacts(start, count, first_name):
    return [
        {
            "email": "bench%d@example.com" % i,
            "first_name": first_name,
            "last_name": "Person %d" % i,
            "company": "Company %d" % (i % 500),
            "website": "company%d.example" % (i % 500),
            "attributes": {"plan": "pro", "seats": str(i % 40)},
        }
        for i in range(start, start + count)
    ]


def run(client, label, args, first_name, offset=0, crms=()):
    """Post the requests one after another; print and return contacts per second."""
    bodies = [
        {"contacts": contacts(offset + n * args.per_request, args.per_request, first_name), "crms": list(crms)}
        for n in range(args.requests)
    ]
    totals = {}
    started = time.perf_counter()
    for body in bodies:
        response = client.post("/api/v3/contacts/bulk", body, format="json")
        if response.status_code != 200:
            raise SystemExit("HTTP %d: %s" % (response.status_code, response.content[:500]))
        for result, count in response.json()["totals"].items():
            totals[result] = totals.get(result, 0) + count
    seconds = time.perf_counter() - started
    count = args.requests * args.per_request
    rate = count / seconds
    print("%-40s %7d contacts %7.2f s %8.0f contacts/s  %s" % (label, count, seconds, rate, totals))
    return rate


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--per-request", type=int, default=1000)
    args = parser.parse_args()

    setup_test_environment()
    old_config = setup_databases(verbosity=0, interactive=False)
    try:
        print("database: %s %s" % (connection.vendor, connection.settings_dict["NAME"]))
        client = api_client()
        rates = [
            run(client, "new contacts (created)", args, "First"),
            run(client, "the same again, renamed (updated)", args, "Renamed"),
            run(client, "the same again, as they are (unchanged)", args, "Renamed"),
        ]
        offset = args.requests * args.per_request
        rates.append(run(client, "new contacts selected for brevo", args, "First", offset=offset, crms=["brevo"]))
        slowest = min(rates)
        verdict = "met" if slowest >= TARGET_PER_SECOND else "NOT met"
        print(
            "target: at least %d contacts/s through the API, %d per request: slowest run %.0f/s (%s on %s)"
            % (TARGET_PER_SECOND, args.per_request, slowest, verdict, connection.vendor)
        )
    finally:
        teardown_databases(old_config, verbosity=0)


if __name__ == "__main__":
    main()
