import itertools
import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from contacts import selection
from contacts.models import Contact
from integrations.conf import SyncPolicy

from .doubles import ScriptedBackend

DOUBLES = ["tests.integrations.doubles.ScriptedBackend", "tests.integrations.doubles.OtherBackend"]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = timezone.now() + timedelta(seconds=1)

    def __call__(self):
        return self.now

    def advance(self, **delta):
        self.now += timedelta(**delta)


class UpperBound:
    """An rng whose jitter always picks the top of the range, so delays are exact."""

    @staticmethod
    def uniform(low, high):
        return high


@pytest.fixture
def scripted_crm(settings):
    settings.CRMSYNC_EXTRA_BACKENDS = DOUBLES
    settings.SCRIPTED_API_KEY = "scripted-secret-key"
    return ScriptedBackend


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def policy(scripted_crm):
    def make(**changes):
        values = {
            "crm": "scripted",
            "interval_minutes": 5,
            "batch_size": 50,
            "max_instances": 1,
            "max_retries": 3,
            "retry_delay_minutes": 5,
            "retry_exponential": True,
            "retry_max_delay_minutes": 24 * 60,
            "lease_seconds": 300,
        }
        values.update(changes)
        return SyncPolicy(**values)

    return make


@pytest.fixture
def queued(scripted_crm):
    """`queued(n)` creates n contacts queued for the scripted CRM."""

    def make(count, prefix="c"):
        contacts = Contact.objects.bulk_create(
            Contact(email="%s%d@example.com" % (prefix, i), first_name="F%d" % i) for i in range(count)
        )
        selection.select(Contact.objects.filter(pk__in=[c.pk for c in contacts]), ["scripted"])
        return Contact.objects.filter(pk__in=[c.pk for c in contacts])

    return make


@pytest.fixture
def crm_api():
    """HTTP to the CRMs, mocked at the requests level."""
    import responses

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def no_pacing_sleep(monkeypatch):
    """The pacers' sleeps are skipped, and the moments they would sleep until
    (time.monotonic() values) listed, so that a hold of seconds costs a test none."""
    slept_until = []
    monkeypatch.setattr("integrations.backends.pacing.wait_until", slept_until.append)
    return slept_until


def sent_json(call):
    import json

    return json.loads(call.request.body)


# Unsaved contacts still need a pk each: outcomes and items are keyed by it.
_unsaved_contact_pks = itertools.count(1)


def unsaved_contact(**fields):
    """A Contact never saved, for backend unit tests that need no database. Its
    email stays exactly as given: the ORM stores the canonical form only when it
    saves (LowercaseEmailField.get_prep_value), so this also stands for a row
    stored before the canonical email rule."""
    return Contact(pk=next(_unsaved_contact_pks), **fields)


def make_item(contact, backend, key=None, external_id=""):
    from integrations.backends.base import SyncItem

    return SyncItem(
        key=key or contact.pk, contact=contact, payload=backend.build_payload(contact), external_id=external_id
    )


class SandboxClient:
    """Reads and steers a running sandbox through its own HTTP endpoints."""

    def __init__(self, url):
        self.url = url

    def contacts(self, crm):
        import requests

        return requests.get("%s/_sandbox/%s/contacts" % (self.url, crm), timeout=5).json()

    def requests(self, crm):
        import requests

        return requests.get("%s/_sandbox/%s/requests" % (self.url, crm), timeout=5).json()

    def settings(self, crm, **values):
        import requests

        response = requests.post("%s/_sandbox/%s/settings" % (self.url, crm), json=values, timeout=5)
        response.raise_for_status()

    def faults(self, crm, **faults):
        import requests

        response = requests.post("%s/_sandbox/%s/faults" % (self.url, crm), json=faults, timeout=5)
        response.raise_for_status()


@pytest.fixture(scope="session")
def sandbox_server():
    from crm_sandbox.server import SandboxOptions, SandboxServer

    server = SandboxServer(port=0, options=SandboxOptions(seed=7)).start()
    yield server
    server.stop()


@pytest.fixture
def sandbox(sandbox_server, settings):
    """The sandbox over real sockets, emptied, with crmsync pointed at it."""
    import requests

    requests.post(sandbox_server.url + "/_sandbox/reset", timeout=5).raise_for_status()
    settings.CRMSYNC_SANDBOX_URL = sandbox_server.url
    return SandboxClient(sandbox_server.url)


def in_threads(count, target):
    """Run target(index) in `count` threads, each with its own database
    connection (closed after), and fail on any error a thread met."""
    errors = []

    def wrapped(index):
        try:
            target(index)
        except Exception as exc:  # surfaced below; a thread cannot fail the test itself
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
