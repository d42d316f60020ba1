"""Time staff selection of 100,000 contacts on the configured database engine.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crmsync .venv/bin/python bench/select_100k.py

Runs in a throwaway database (test_<name>) created and dropped around the run.
Target on PostgreSQL: selecting 100,000 contacts for one CRM in under 5 s.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crmsync_project.settings")
os.environ.setdefault("DEBUG", "true")

import django

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_databases, setup_test_environment, teardown_databases  # noqa: E402

from contacts import selection  # noqa: E402
from contacts.models import Contact, ContactSync  # noqa: E402

ALL_CRMS = ["brevo", "hubspot", "mautic", "n8n"]


def timed(label, func):
    started = time.perf_counter()
    result = func()
    seconds = time.perf_counter() - started
    print("%-58s %8.3f s  %s" % (label, seconds, "" if result is None else result))
    return seconds


def create_contacts(count):
    batch = 10_000
    for start in range(0, count, batch):
        Contact.objects.bulk_create(
            Contact(email="bench%d@example.com" % i, first_name="First%d" % i, company="Company %d" % (i % 500))
            for i in range(start, min(start + batch, count))
        )
    return "%d contacts" % Contact.objects.count()


def admin_page(client, query=""):
    def get():
        response = client.get("/admin/contacts/contact/" + query)
        assert response.status_code == 200, response.status_code
        return "HTTP %d" % response.status_code

    return get


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=100_000)
    args = parser.parse_args()

    setup_test_environment()
    old_config = setup_databases(verbosity=0, interactive=False)
    try:
        print("database: %s %s" % (connection.vendor, connection.settings_dict["NAME"]))
        timed("create %d contacts" % args.contacts, lambda: create_contacts(args.contacts))
        everyone = Contact.objects.all()
        one = timed("select all for 1 CRM (insert)", lambda: "%d rows" % selection.select(everyone, ["brevo"]))
        timed("select all for 1 CRM again (re-queue)", lambda: "%d rows" % selection.select(everyone, ["brevo"]))
        timed("skip all for 1 CRM", lambda: "%d rows" % selection.skip(everyone, ["brevo"]))
        ContactSync.objects.all().delete()
        timed("select all for 4 CRMs (insert)", lambda: "%d rows" % selection.select(everyone, ALL_CRMS))
        timed("select all for 4 CRMs again (re-queue)", lambda: "%d rows" % selection.select(everyone, ALL_CRMS))
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        client = Client()
        client.force_login(User.objects.create_superuser("bench", password="x"))
        admin_page(client)()  # warm up templates
        timed("admin contact list, first page", admin_page(client))
        timed("admin contact list, Brevo + Selected filter", admin_page(client, "?crm=brevo&sync_status=selected"))
        timed("admin contact list, search 'company 42'", admin_page(client, "?q=company+42"))
        verdict = "met" if one < 5 else "NOT met"
        print(
            "target: select %d contacts for 1 CRM in under 5 s on PostgreSQL: %.2f s (%s on %s)"
            % (args.contacts, one, verdict, connection.vendor)
        )
    finally:
        teardown_databases(old_config, verbosity=0)


if __name__ == "__main__":
    main()
