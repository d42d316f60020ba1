"""The n8n enrichment callback refuses to store anything about an erased person."""

import json

import pytest
from django.urls import reverse

from contacts.models import Contact, Suppression
from contacts.suppression import SUPPRESSED_REASON, email_hash, lift
from integrations.models import Enrichment

URL = reverse("integrations:n8n-enrichment")
SECRET = "inbound-secret-for-tests-0123456789"
KEY = "suppression-key-for-tests-0123456789"

pytestmark = pytest.mark.django_db


@pytest.fixture
def post(settings, client):
    settings.N8N_INBOUND_SECRET = SECRET
    settings.CRMSYNC_SUPPRESSION_KEY = KEY

    def send(body):
        return client.post(
            URL, data=json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION="Bearer %s" % SECRET
        )

    return send


@pytest.fixture
def ann(db):
    return Contact.objects.create(email="ann@example.com", first_name="Ann")


def suppress(email):
    Suppression.objects.create(email_hash=email_hash(email))


def callback(contact, **data):
    return {
        "contact_id": contact.pk,
        "enrichment_id": "enr-1",
        "status": "complete",
        "enriched_data": {"phone": "+44 20 7946 0001", "company": {"name": "Acme"}, **data},
    }


def assert_nothing_stored(contact):
    contact.refresh_from_db()
    assert (contact.phone, contact.company, contact.enrichment) == ("", "", {})
    assert not Enrichment.objects.exists()


def test_an_enrichment_for_a_suppressed_contact_is_refused_with_409(post, ann):
    # An erasure under way: the contact is still here, its email already suppressed.
    suppress("ann@example.com")

    response = post(callback(ann))

    assert response.status_code == 409
    assert response.json() == {
        "success": False,
        "error": "Nothing was stored: %s." % SUPPRESSED_REASON,
        "field": "contact_id",
    }
    assert_nothing_stored(ann)


def test_an_enrichment_that_found_a_suppressed_address_is_refused(post, ann):
    suppress("erased@example.com")

    response = post(callback(ann, additional_emails=["Erased@Example.com"]))

    assert response.status_code == 409
    assert response.json()["field"] == "enriched_data.additional_emails"
    assert_nothing_stored(ann)


def test_a_lifted_suppression_lets_the_enrichment_through(post, ann):
    suppress("ann@example.com")
    assert post(callback(ann)).status_code == 409

    lift(["ann@example.com"])
    response = post(callback(ann))

    assert response.status_code == 200, response.content
    ann.refresh_from_db()
    assert (ann.phone, ann.company) == ("+44 20 7946 0001", "Acme")
    assert Enrichment.objects.filter(contact=ann, enrichment_id="enr-1").exists()


def test_without_a_key_nothing_is_suppressed(post, ann, settings):
    suppress("ann@example.com")
    settings.CRMSYNC_SUPPRESSION_KEY = ""

    assert post(callback(ann)).status_code == 200
