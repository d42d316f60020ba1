"""A phone Brevo cannot take (no country code) is left out of the payload, and the
accepted outcome says so: the engine keeps it as the sync's warning for staff."""

import pytest
from django.urls import reverse
from django.utils.html import escape

from contacts import selection
from contacts.models import Contact, ContactSync, ProcessingStatus
from integrations.backends.base import OutcomeKind
from integrations.backends.brevo import BrevoBackend
from integrations.engine import SyncEngine

from .conftest import make_item, sent_json, unsaved_contact

API = "https://api.brevo.com/v3"
WARNING = (
    "Brevo cannot take the phone '020 7946 0000' (it needs a country code: set BREVO_DEFAULT_COUNTRY_CODE "
    "or store it as +<code><number>); synced without it."
)


@pytest.fixture
def brevo(settings):
    settings.BREVO_API_KEY = "xkeysib-test-0000000000000000000000"
    settings.BREVO_REQUESTS_PER_SECOND = 1000
    settings.BREVO_CONCURRENCY = 1
    return BrevoBackend


def push_one(external_id="", **fields):
    backend = BrevoBackend()
    [outcome] = backend.push(
        [make_item(unsaved_contact(email="ann@example.com", **fields), backend, external_id=external_id)]
    )
    return outcome


def test_a_created_contact_without_its_phone_carries_the_warning(brevo, crm_api):
    crm_api.post(API + "/contacts", status=201, json={"id": 42})
    outcome = push_one(phone="020 7946 0000")
    assert (outcome.kind, outcome.external_id, outcome.message) == (OutcomeKind.ACCEPTED, "42", WARNING)


def test_an_update_by_id_without_its_phone_carries_the_warning(brevo, crm_api):
    crm_api.put(API + "/contacts/42", status=204)
    assert push_one(external_id="42", phone="020 7946 0000").message == WARNING


def test_the_warning_survives_the_lookup_of_the_id_of_a_contact_brevo_had(brevo, crm_api):
    crm_api.post(API + "/contacts", status=204)
    crm_api.get(API + "/contacts/ann@example.com", json={"id": 77})
    outcome = push_one(phone="020 7946 0000")
    assert (outcome.external_id, outcome.message) == ("77", WARNING)


@pytest.mark.parametrize("phone", ["", "+44 20 7946 0000"])
def test_no_phone_or_a_phone_brevo_takes_carries_no_warning(brevo, crm_api, phone):
    crm_api.post(API + "/contacts", status=201, json={"id": 42})
    assert push_one(phone=phone).message == ""


def test_a_default_country_code_takes_the_phone_and_the_warning_goes(brevo, crm_api, settings):
    settings.BREVO_DEFAULT_COUNTRY_CODE = "44"
    crm_api.post(API + "/contacts", status=201, json={"id": 42})
    assert push_one(phone="020 7946 0000").message == ""


@pytest.mark.django_db
def test_the_engine_keeps_the_warning_on_the_sync_and_the_admin_shows_it(brevo, crm_api, admin_client):
    contact = Contact.objects.create(email="ann@example.com", phone="020 7946 0000")
    Contact.objects.create(email="bo@example.com", phone="+44 20 7946 0001")
    selection.select(Contact.objects.all(), ["brevo"])
    crm_api.post(API + "/contacts", status=201, json={"id": 42})
    crm_api.post(API + "/contacts", status=201, json={"id": 43})
    SyncEngine(BrevoBackend()).run()

    sync = ContactSync.objects.get(contact=contact)
    assert (sync.processing_status, sync.warning) == (ProcessingStatus.COMPLETE, WARNING)
    assert ContactSync.objects.exclude(contact=contact).get().warning == ""
    sent = {body["email"]: body["attributes"] for body in map(sent_json, crm_api.calls)}
    assert "SMS" not in sent["ann@example.com"] and sent["bo@example.com"]["SMS"] == "+442079460001"

    shown = escape(WARNING)
    syncs = reverse("admin:contacts_contactsync_changelist")
    listed = admin_client.get(syncs).content.decode()
    assert 'class="crm-warning" title="%s"' % shown in listed
    only_warned = admin_client.get(syncs, {"has_warning": "yes"}).content.decode()
    assert "ann@example.com" in only_warned and "bo@example.com" not in only_warned
    assert "bo@example.com" in admin_client.get(syncs, {"has_warning": "no"}).content.decode()
    page = admin_client.get(reverse("admin:contacts_contact_change", args=[contact.pk])).content.decode()
    assert 'class="crm-warning" title="%s"' % shown in page
