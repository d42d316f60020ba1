"""POST /api/v3/contacts/bulk refuses an erased person's email, item by item."""

import pytest

from contacts.models import Contact, ContactSync, Suppression
from contacts.suppression import SUPPRESSED_REASON, email_hash, lift

from .conftest import CHANGE_CONTACTS

URL = "/api/v3/contacts/bulk"
KEY = "suppression-key-for-tests-0123456789"

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(client_with, settings):
    settings.CRMSYNC_SUPPRESSION_KEY = KEY
    Suppression.objects.create(email_hash=email_hash("erased@example.com"))
    return client_with(CHANGE_CONTACTS)


def upsert(client, contacts, **extra):
    response = client.post(URL, {"contacts": contacts, **extra}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_the_suppressed_item_is_rejected_under_email_and_the_others_are_created(client):
    body = upsert(
        client,
        [{"email": "ann@example.com"}, {"email": "Erased@Example.com", "first_name": "Gone"}, {"email": "x"}],
        crms=["brevo"],
    )

    assert body["results"][0]["result"] == "created"
    assert body["results"][1] == {
        "index": 1,
        "email": "erased@example.com",
        "result": "rejected",
        "id": None,
        "errors": {"email": [SUPPRESSED_REASON]},
    }
    # A malformed item is still its own rejection, beside the suppressed one.
    assert body["results"][2]["result"] == "rejected"
    assert body["totals"] == {"created": 1, "updated": 0, "unchanged": 0, "rejected": 2}
    assert body["queued_count"] == 1
    assert list(Contact.objects.values_list("email", flat=True)) == ["ann@example.com"]
    assert list(ContactSync.objects.values_list("contact__email", flat=True)) == ["ann@example.com"]


def test_a_request_of_suppressed_items_only_writes_and_queues_nothing(client):
    body = upsert(client, [{"email": "erased@example.com"}], crms=["brevo", "hubspot"])

    assert body["totals"]["rejected"] == 1
    assert body["queued_count"] == 0
    assert not Contact.objects.exists()


def test_a_lifted_suppression_lets_the_email_in(client):
    lift(["erased@example.com"])

    body = upsert(client, [{"email": "erased@example.com"}])

    assert body["results"][0]["result"] == "created"
    assert Contact.objects.filter(email="erased@example.com").exists()


def test_without_a_key_nothing_is_suppressed(client, settings):
    settings.CRMSYNC_SUPPRESSION_KEY = ""

    assert upsert(client, [{"email": "erased@example.com"}])["results"][0]["result"] == "created"
