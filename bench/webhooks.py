"""Time what a CRM's webhook call and an erasure cost as tables grow.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crmsync .venv/bin/python bench/webhooks.py [--contacts 100000]

Runs in a throwaway database (test_<name>) created and dropped around the run.
Prints, with N contacts each synced to HubSpot:
- a signed HubSpot webhook call of 100 events (opt-outs, deletions, merges) through
  the real view, the median and worst of 20 calls: a CRM wants a quick answer;
- starting the erasure of 1,000 people (queued in every configured CRM);
- recording those erasures through the engine (the scripted CRM confirms).
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crmsync_project.settings")
os.environ.setdefault("DEBUG", "true")

import django

django.setup()

from django.db import connection  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.test.utils import setup_databases, setup_test_environment, teardown_databases  # noqa: E402

from contacts import erasure  # noqa: E402
from contacts.models import Contact, ContactSync, ErasureOutcome, ErasureResult  # noqa: E402
from crm_sandbox.hubspot import signature_v3  # noqa: E402

SECRET = "bench-hubspot-client-secret"
URL = "http://testserver/integrations/hubspot/webhook/"
KINDS = [
    ("contact.propertyChange", {"propertyName": "hs_email_optout", "propertyValue": "true"}),
    ("contact.deletion", {}),
    ("contact.merge", None),
]


def create_synced(count):
    batch = 10_000
    for start in range(0, count, batch):
        contacts = Contact.objects.bulk_create(
            Contact(email="bench%d@example.com" % i, first_name="First%d" % i)
            for i in range(start, min(start + batch, count))
        )
        ContactSync.objects.bulk_create(
            ContactSync(
                contact=c,
                crm="hubspot",
                sync_status="complete",
                processing_status="complete",
                external_id=str(100_000_000 + c.pk),
                synced_email=c.email,
            )
            for c in contacts
        )


def events(call_number, count=100):
    ids = [100_000_000 + 1 + (call_number * count + i) * 7 % 90_000 for i in range(count)]
    body = []
    for i, object_id in enumerate(ids):
        kind, extra = KINDS[i % len(KINDS)]
        event = {
            "eventId": call_number * count + i,
            "subscriptionType": kind,
            "objectId": object_id,
            "occurredAt": int(time.time() * 1000),
            "attemptNumber": 0,
            "portalId": 1,
            "appId": 1,
        }
        if extra is None:
            event.update(primaryObjectId=object_id + 1, mergedObjectIds=[object_id], newObjectId=object_id + 1)
        else:
            event.update(extra)
        body.append(event)
    return json.dumps(body).encode()


def time_webhooks(calls=20):
    client, seconds = Client(), []
    for number in range(calls):
        body = events(number)
        stamp = str(int(time.time() * 1000))
        started = time.perf_counter()
        response = client.post(
            URL,
            body,
            content_type="application/json",
            HTTP_X_HUBSPOT_REQUEST_TIMESTAMP=stamp,
            HTTP_X_HUBSPOT_SIGNATURE_V3=signature_v3(SECRET, "POST", URL, body, stamp),
        )
        seconds.append(time.perf_counter() - started)
        assert response.status_code == 200, response.content
    return statistics.median(seconds), max(seconds)


def time_erasures(count):
    emails = list(Contact.objects.order_by("-pk").values_list("email", flat=True)[:count])
    started = time.perf_counter()
    erasure.start(emails, requested_by="bench", via="bench")
    start_seconds = time.perf_counter() - started

    from integrations.backends.base import Outcome
    from integrations.engine import SyncEngine
    from tests.integrations.doubles import ScriptedBackend

    backend = ScriptedBackend(lambda items: [Outcome.removed(item, http_status=204) for item in items])
    started = time.perf_counter()
    SyncEngine(backend).run()
    record_seconds = time.perf_counter() - started
    # HubSpot is configured too and not run here: those erasures stay pending.
    done = ErasureResult.objects.filter(crm="scripted", outcome=ErasureOutcome.ERASED).count()
    return start_seconds, record_seconds, done


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=100_000)
    args = parser.parse_args()
    setup_test_environment()
    names = setup_databases(verbosity=0, interactive=False)
    try:
        with override_settings(
            HUBSPOT_API_KEY="bench",
            HUBSPOT_WEBHOOK_SECRET=SECRET,
            CRMSYNC_SUPPRESSION_KEY="bench-key",
            CRMSYNC_EXTRA_BACKENDS=["tests.integrations.doubles.ScriptedBackend"],
            SCRIPTED_API_KEY="bench",
            ALLOWED_HOSTS=["testserver"],
        ):
            create_synced(args.contacts)
            print("database: %s, %d contacts synced to HubSpot" % (connection.vendor, args.contacts))
            median, worst = time_webhooks()
            print(
                "HubSpot webhook call of 100 events: median %.1f ms, worst %.1f ms (20 calls)"
                % (median * 1000, worst * 1000)
            )
            start_s, record_s, done = time_erasures(1000)
            print(
                "erasure of 1,000 people: started in %.2f s; the scripted CRM's confirmations "
                "recorded in %.2f s; %d confirmed" % (start_s, record_s, done)
            )
    finally:
        teardown_databases(names, verbosity=0)


if __name__ == "__main__":
    main()
