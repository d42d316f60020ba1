"""POST /api/v3/contacts/erase and GET /api/v3/erasures/{id}: erasure through the API,
with the proof and never the email."""

import pytest

from contacts import erasure
from contacts.models import Contact, ContactSync, Erasure, Operation, Suppression
from contacts.suppression import email_hash

from .conftest import CHANGE_CONTACTS

ERASE = "/api/v3/contacts/erase"
ERASE_CONTACTS = "contacts.erase_contact"
SUPPRESSION_KEY = "suppression-key-for-erase-api-tests"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def brevo_and_key(settings):
    """Brevo has its key, the other CRMs none (no sandbox); the suppression key is set."""
    settings.CRMSYNC_SANDBOX_URL = ""
    settings.BREVO_API_KEY = "brevo-key-for-erase-api-tests"
    for name in ("HUBSPOT_API_KEY", "MAUTIC_BASE_URL", "N8N_WEBHOOK_URL"):
        if hasattr(settings, name):
            delattr(settings, name)
    settings.CRMSYNC_SUPPRESSION_KEY = SUPPRESSION_KEY


@pytest.fixture
def eraser(client_with):
    return client_with(ERASE_CONTACTS)


def erase(client, emails):
    return client.post(ERASE, {"emails": emails}, format="json")


def proof_url(pk):
    return "/api/v3/erasures/%d" % pk


def test_starts_an_erasure_per_address_and_answers_202(eraser, make_contact):
    make_contact(email="ann@example.com")

    response = erase(eraser, ["Ann@Example.com", "bob@example.com", "ann@example.com"])

    assert response.status_code == 202, response.content
    erasures = response.json()["erasures"]
    stored = list(Erasure.objects.order_by("pk"))
    assert [e["id"] for e in erasures] == [e.pk for e in stored]
    assert [e.email_hash for e in stored] == [email_hash("ann@example.com"), email_hash("bob@example.com")]
    assert {(e.requested_by, e.requested_via) for e in stored} == {("api-user-0", "api")}
    assert erasures[0] == {
        "id": stored[0].pk,
        "status": "pending",
        "results": {
            "brevo": "pending",
            "hubspot": "not_configured",
            "mautic": "not_configured",
            "n8n": "not_configured",
        },
    }
    assert Suppression.objects.count() == 2
    assert ContactSync.objects.filter(crm="brevo", operation=Operation.ERASE).count() == 2


def test_with_no_crm_configured_the_erasure_is_complete_at_once(eraser, make_contact, settings):
    del settings.BREVO_API_KEY
    make_contact(email="ann@example.com")

    erasures = erase(eraser, ["ann@example.com"]).json()["erasures"]

    assert erasures[0]["status"] == "complete"
    assert not Contact.objects.filter(email="ann@example.com").exists()


def test_the_proof_has_each_crms_answer_and_never_the_email(eraser):
    started = erasure.start(["ann@example.com"], requested_by="dpo", via="command")[0]

    response = eraser.get(proof_url(started.pk))

    assert response.status_code == 200
    proof = response.json()
    assert "ann@example.com" not in response.content.decode()
    assert "email" not in proof
    assert proof["email_hash"] == email_hash("ann@example.com")
    assert (proof["status"], proof["requested_by"], proof["requested_via"]) == ("pending", "dpo", "command")
    assert [(r["crm"], r["outcome"]) for r in proof["results"]] == [
        ("brevo", "pending"),
        ("hubspot", "not_configured"),
        ("mautic", "not_configured"),
        ("n8n", "not_configured"),
    ]


def test_an_unknown_erasure_is_404(eraser):
    assert eraser.get(proof_url(999999)).status_code == 404


@pytest.mark.parametrize(
    "body, errors",
    [
        ({"emails": ["ann@example.com", "not-an-email"]}, {"emails": {"1": ["Enter a valid email address."]}}),
        ({"emails": []}, {"emails": ["Ensure this field has at least 1 elements."]}),
        ({}, {"emails": ["This field is required."]}),
        ({"emails": ["x@example.com"] * 1001}, {"emails": ["Ensure this field has no more than 1000 elements."]}),
    ],
)
def test_a_bad_request_is_400_with_field_errors_and_starts_nothing(eraser, body, errors):
    response = eraser.post(ERASE, body, format="json")
    assert response.status_code == 400
    assert response.json() == errors
    assert not Erasure.objects.exists()


def test_1000_addresses_are_accepted(eraser):
    response = erase(eraser, ["p%d@example.com" % i for i in range(1000)])
    assert response.status_code == 202
    assert Erasure.objects.count() == 1000


def test_without_the_key_it_is_503_saying_to_set_it(eraser, settings):
    settings.CRMSYNC_SUPPRESSION_KEY = ""
    response = erase(eraser, ["ann@example.com"])
    assert response.status_code == 503
    assert "CRMSYNC_SUPPRESSION_KEY is not set" in response.json()["detail"]
    assert not Erasure.objects.exists()


def test_changing_contacts_is_not_enough(client_with):
    started = erasure.start(["ann@example.com"], requested_by="dpo", via="command")[0]
    client = client_with(CHANGE_CONTACTS)
    assert erase(client, ["bob@example.com"]).status_code == 403
    assert client.get(proof_url(started.pk)).status_code == 403
    assert Erasure.objects.count() == 1
