"""Sync throughput per CRM against the sandbox at the real rate limits.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crmsync .venv/bin/python bench/throughput.py

For each CRM: contacts/s and requests per contact for crmsync's engine over N
contacts, next to the ceiling the CRM's rate limit allows, and next to the
one-contact-at-a-time approach (one search plus one create or update per contact,
sequentially) measured in the same run on a sample. Runs in a throwaway database.
Target: at least 90% of the ceiling for HubSpot and Brevo.
"""

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crmsync_project.settings")
os.environ.setdefault("DEBUG", "true")

import django

django.setup()

import requests  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.test.utils import setup_databases, setup_test_environment, teardown_databases  # noqa: E402

from contacts import selection  # noqa: E402
from contacts.models import Contact, ContactSync  # noqa: E402
from crm_sandbox import brevo as brevo_sandbox  # noqa: E402
from crm_sandbox import hubspot as hubspot_sandbox  # noqa: E402
from crm_sandbox.server import SandboxOptions, SandboxServer  # noqa: E402
from integrations.registry import get_backend_class  # noqa: E402
from integrations.workers import run_workers  # noqa: E402

# Contacts per second the real limits allow: Brevo, one contact per request at 10
# requests/s (General tier); HubSpot, 100 contacts per batch request at 100 requests
# per rolling 10 s (Free/Starter).
CEILINGS = {"brevo": 10 * 1, "hubspot": 10 * 100}


def make_contacts(count, prefix):
    Contact.objects.bulk_create(
        (
            Contact(email="%s%d@example.com" % (prefix, i), first_name="F%d" % i, last_name="L", company="Acme")
            for i in range(count)
        ),
        batch_size=5000,
    )
    return Contact.objects.filter(email__startswith=prefix)


def sandbox_requests(url, crm):
    return len(requests.get("%s/_sandbox/%s/requests" % (url, crm), timeout=10).json())


def crmsync_run(url, crm, count, workers):
    contacts = make_contacts(count, "%s-engine-" % crm)
    selection.select(contacts, [crm])
    before = sandbox_requests(url, crm)
    started = time.perf_counter()
    result = run_workers(get_backend_class(crm), workers)
    seconds = time.perf_counter() - started
    complete = ContactSync.objects.filter(crm=crm, contact__in=contacts, processing_status="complete").count()
    sent = sandbox_requests(url, crm) - before
    return {
        "contacts": complete,
        "seconds": seconds,
        "rate": complete / seconds,
        "requests": sent / count,
        "claimed": result.claimed,
    }


class NaiveClient:
    """What a first implementation does: for each contact, search, then create or
    update, one request at a time, sleeping when told to slow down."""

    def __init__(self, url, crm):
        self.crm = crm
        self.session = requests.Session()
        self.requests = 0
        if crm == "brevo":
            self.base = url + "/brevo/v3"
            self.session.headers["api-key"] = brevo_sandbox.API_KEY
        else:
            self.base = url + "/hubspot"
            self.session.headers["Authorization"] = "Bearer " + hubspot_sandbox.ACCESS_TOKEN

    def call(self, method, path, **kwargs):
        while True:
            self.requests += 1
            response = self.session.request(method, self.base + path, timeout=30, **kwargs)
            if response.status_code != 429:
                return response
            wait = response.headers.get("x-sib-ratelimit-reset") or response.headers.get("Retry-After") or "1"
            time.sleep(float(wait))

    def sync(self, contact):
        if self.crm == "brevo":
            found = self.call("GET", "/contacts/%s" % quote(contact.email, safe="@"))
            attributes = {"FIRSTNAME": contact.first_name, "LASTNAME": contact.last_name}
            if found.status_code == 200:
                self.call("PUT", "/contacts/%s" % quote(contact.email, safe="@"), json={"attributes": attributes})
            else:
                self.call("POST", "/contacts", json={"email": contact.email, "attributes": attributes})
            return
        search = {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": contact.email}]}]}
        found = self.call("POST", "/crm/v3/objects/contacts/search", json=search).json().get("results", [])
        properties = {"email": contact.email, "firstname": contact.first_name, "lastname": contact.last_name}
        if found:
            self.call("PATCH", "/crm/v3/objects/contacts/%s" % found[0]["id"], json={"properties": properties})
        else:
            self.call("POST", "/crm/v3/objects/contacts", json={"properties": properties})


def naive_run(url, crm, count):
    contacts = list(make_contacts(count, "%s-naive-" % crm))
    client = NaiveClient(url, crm)
    started = time.perf_counter()
    for contact in contacts:
        client.sync(contact)
    seconds = time.perf_counter() - started
    return {"contacts": count, "seconds": seconds, "rate": count / seconds, "requests": client.requests / count}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crm", action="append", choices=sorted(CEILINGS), help="default: both")
    parser.add_argument("--contacts", type=int, default=20_000, help="contacts for crmsync's run, per CRM")
    parser.add_argument("--brevo-contacts", type=int, help="override --contacts for Brevo (10/s: 20,000 take 33 min)")
    parser.add_argument("--naive-sample", type=int, default=100, help="contacts for the one-at-a-time run")
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    crms = args.crm or sorted(CEILINGS)

    setup_test_environment()
    old_config = setup_databases(verbosity=0, interactive=False)
    server = SandboxServer(port=0, options=SandboxOptions(latency_ms=args.latency_ms, seed=1)).start()
    settings.CRMSYNC_SANDBOX_URL = server.url
    try:
        print(
            "database: %s; sandbox %s with the real rate limits and %d ms latency"
            % (connection.vendor, server.url, args.latency_ms)
        )
        call_setup()
        print(
            "%-8s %-22s %9s %9s %12s %10s %8s"
            % ("CRM", "approach", "contacts", "seconds", "contacts/s", "req/contact", "ceiling")
        )
        for crm in crms:
            count = args.brevo_contacts if crm == "brevo" and args.brevo_contacts else args.contacts
            engine = crmsync_run(server.url, crm, count, args.workers)
            naive = naive_run(server.url, crm, args.naive_sample)
            for label, figures in (("crmsync engine", engine), ("one at a time (naive)", naive)):
                print(
                    "%-8s %-22s %9d %9.1f %12.1f %10.2f %7.0f%%"
                    % (
                        crm,
                        label,
                        figures["contacts"],
                        figures["seconds"],
                        figures["rate"],
                        figures["requests"],
                        100 * figures["rate"] / CEILINGS[crm],
                    )
                )
            share = engine["rate"] / CEILINGS[crm]
            print(
                "%-8s ceiling %d contacts/s; crmsync at %.0f%% (target 90%%: %s), %.0fx the naive approach"
                % (
                    crm,
                    CEILINGS[crm],
                    100 * share,
                    "met" if share >= 0.9 else "NOT met",
                    engine["rate"] / naive["rate"],
                )
            )
    finally:
        server.stop()
        connections.close_all()
        teardown_databases(old_config, verbosity=0)


def call_setup():
    from io import StringIO

    from django.core.management import call_command

    call_command("crm_setup", stdout=StringIO())


if __name__ == "__main__":
    main()
