"""Time the admin's streamed CSV export of the Contacts list, and its memory.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crmsync .venv/bin/python bench/export.py [--contacts 200000]

Runs in a throwaway database (test_<name>) created and dropped around the run.
Each contact has a row for two CRMs, so the export carries the per-CRM columns.
Prints rows per second, the bytes streamed, and the Python memory the export
allocated at its peak (tracemalloc), which must not grow with the row count.
"""

import argparse
import os
import sys
import time
import tracemalloc
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

from contacts.models import Contact, ContactSync  # noqa: E402


def create(count):
    batch = 10_000
    for start in range(0, count, batch):
        contacts = Contact.objects.bulk_create(
            Contact(email="bench%d@example.com" % i, first_name="=First%d" % i, company="Company %d" % (i % 500))
            for i in range(start, min(start + batch, count))
        )
        ContactSync.objects.bulk_create(
            ContactSync(contact=c, crm=crm, sync_status="complete", processing_status="complete", external_id=str(c.pk))
            for c in contacts
            for crm in ("brevo", "hubspot")
        )


def export(client):
    tracemalloc.start()
    started = time.perf_counter()
    response = client.get("/admin/contacts/contact/export/")
    assert response.status_code == 200, response.status_code
    size = lines = 0
    for chunk in response.streaming_content:
        size += len(chunk)
        lines += chunk.count(b"\n")
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return lines - 1, size, seconds, peak


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=200_000)
    args = parser.parse_args()
    setup_test_environment()
    names = setup_databases(verbosity=0, interactive=False)
    try:
        User.objects.create_superuser("bench", password="bench-password")
        client = Client()
        client.login(username="bench", password="bench-password")
        for count in (args.contacts // 10, args.contacts):
            Contact.objects.all().delete()
            create(count)
            rows, size, seconds, peak = export(client)
            print(
                "%s, %d contacts: %d rows exported in %.1f s (%.0f rows/s, %.1f MB); peak Python memory %.1f MB"
                % (connection.vendor, count, rows, seconds, rows / seconds, size / 1e6, peak / 1e6)
            )
    finally:
        teardown_databases(names, verbosity=0)


if __name__ == "__main__":
    main()
