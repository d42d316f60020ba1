from datetime import timedelta

import pytest
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
        values = dict(
            crm="scripted",
            interval_minutes=5,
            batch_size=50,
            max_instances=1,
            max_retries=3,
            retry_delay_minutes=5,
            retry_exponential=True,
            retry_max_delay_minutes=24 * 60,
            lease_seconds=300,
        )
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


def sent_json(call):
    import json

    return json.loads(call.request.body)


def make_item(contact, backend, key=None, external_id=""):
    from integrations.backends.base import SyncItem

    return SyncItem(key=key or contact.pk, contact=contact, payload=backend.build_payload(contact), external_id=external_id)
