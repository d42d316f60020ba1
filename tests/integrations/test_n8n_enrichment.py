"""The inbound n8n enrichment callback, through the test client."""

import json
import logging

import pytest
from django.urls import reverse

from contacts.models import Contact
from integrations.models import Enrichment

URL = reverse("integrations:n8n-enrichment")
SECRET = "inbound-secret-for-tests-0123456789"

pytestmark = pytest.mark.django_db


@pytest.fixture
def inbound(settings, client):
    settings.N8N_INBOUND_SECRET = SECRET

    def post(body, token=SECRET, raw=None):
        headers = {"HTTP_AUTHORIZATION": "Bearer %s" % token} if token else {}
        data = raw if raw is not None else json.dumps(body)
        return client.post(URL, data=data, content_type="application/json", **headers)

    return post


@pytest.fixture
def ann(db):
    return Contact.objects.create(email="ann@example.com", first_name="Ann", company="Staff Entered Ltd")


def callback(contact, **changes):
    body = {
        "contact_id": contact.pk,
        "enrichment_id": "enr-1",
        "status": "complete",
        "timestamp": "2026-11-22T10:00:00Z",
        "enriched_data": {
            "phone": "+44 20 7946 0001",
            "address": {"street": "1 High St", "city": "London", "zip": "N1", "country": "GB"},
            "social_profiles": {"linkedin": "https://linkedin.com/in/ann"},
            "company": {"name": "Acme", "website": "https://acme.example.com", "industry": "Retail", "size": "51-200"},
            "additional_emails": ["Ann.Lee@Acme.example.com"],
            "confidence_score": 87,
            "sources": ["clearbit", "website"],
        },
        "metadata": {"workflow_id": "wf8", "duration_ms": 1200, "api_calls": 3, "cost": 0.02, "currency": "USD"},
    }
    body.update(changes)
    return body


def test_fills_empty_fields_keeps_staff_data_and_stores_the_rest(inbound, ann):
    response = inbound(callback(ann))

    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "contact_id": ann.pk,
        "enrichment_id": "enr-1",
        "message": "Enrichment complete recorded.",
        "updated_fields": ["phone", "website"],
    }
    ann.refresh_from_db()
    assert (ann.phone, ann.website) == ("+44 20 7946 0001", "https://acme.example.com")
    assert ann.company == "Staff Entered Ltd", "staff-entered data is never overwritten by default"
    assert ann.enrichment["company"]["name"] == "Acme"
    assert ann.enrichment["confidence_score"] == 87
    assert ann.enrichment["additional_emails"] == ["ann.lee@acme.example.com"]
    assert Enrichment.objects.get().metadata["api_calls"] == 3


def test_overwrite_can_be_switched_on(inbound, ann, settings):
    settings.N8N_ENRICHMENT_OVERWRITE = True
    assert inbound(callback(ann)).json()["updated_fields"] == ["phone", "company", "website"]
    ann.refresh_from_db()
    assert ann.company == "Acme"


def test_the_same_enrichment_twice_changes_nothing_the_second_time(inbound, ann):
    inbound(callback(ann))
    Contact.objects.filter(pk=ann.pk).update(phone="+1 555 0100")

    response = inbound(callback(ann, enriched_data={"phone": "+49 30 0000"}))

    assert response.status_code == 200
    assert response.json()["message"] == "Already received; nothing changed."
    ann.refresh_from_db()
    assert ann.phone == "+1 555 0100"
    assert Enrichment.objects.count() == 1


def test_an_older_result_arriving_late_does_not_replace_a_newer_one(inbound, ann):
    inbound(
        callback(
            ann, enrichment_id="new", timestamp="2026-11-22T12:00:00+02:00", enriched_data={"confidence_score": 90}
        )
    )
    inbound(
        callback(ann, enrichment_id="old", timestamp="2026-11-22T09:00:00Z", enriched_data={"confidence_score": 10})
    )
    ann.refresh_from_db()
    assert (ann.enrichment["confidence_score"], ann.enrichment["enrichment_id"]) == (90, "new")
    assert Enrichment.objects.count() == 2


def test_a_failed_enrichment_is_recorded_without_data(inbound, ann):
    response = inbound({"contact_id": ann.pk, "enrichment_id": "f1", "status": "failed", "error": "no data found"})
    assert response.status_code == 200
    ann.refresh_from_db()
    assert ann.enrichment == {"last_status": "failed"}


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"status": "done"}, "status", "status must be one of complete, partial, failed"),
        ({"contact_id": "12"}, "contact_id", "contact_id must be a whole number of at least 1"),
        ({"enrichment_id": None}, "enrichment_id", "enrichment_id is required"),
        ({"timestamp": "yesterday"}, "timestamp", "timestamp must be an ISO 8601 date and time with a time zone"),
        ({"surprise": 1}, "surprise", "surprise is not a known field"),
        (
            {"enriched_data": {"confidence_score": 101}},
            "enriched_data.confidence_score",
            "must be a whole number from 0 to 100",
        ),
        (
            {"enriched_data": {"additional_emails": ["ok@example.com", "nope"]}},
            "enriched_data.additional_emails[1]",
            "is not a valid email address",
        ),
        (
            {"enriched_data": {"company": {"website": "ftp://x"}}},
            "enriched_data.company.website",
            "is not a valid http(s) address",
        ),
        ({"metadata": {"cost": -1}}, "metadata.cost", "must be a number of at least 0"),
        ({"enriched_data": {"phone": "1" * 51}}, "enriched_data.phone", "is 51 characters long; the limit is 50"),
    ],
)
def test_a_bad_field_is_named(inbound, ann, change, field, message):
    body = callback(ann)
    body.update(change)
    if change.get("enrichment_id", 0) is None:
        del body["enrichment_id"]
    response = inbound(body)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert message in response.json()["error"]
    assert not Enrichment.objects.exists()


def test_enriched_data_is_required_unless_failed(inbound, ann):
    body = callback(ann)
    del body["enriched_data"]
    assert inbound(body).json()["field"] == "enriched_data"


def test_malformed_json_is_400(inbound, ann):
    response = inbound(None, raw="{not json")
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]


def test_unknown_contact_is_404(inbound, ann):
    response = inbound(callback(ann, contact_id=ann.pk + 1000))
    assert response.status_code == 404 and response.json()["field"] == "contact_id"
    assert not Enrichment.objects.exists()


def test_a_body_over_1_mb_is_413(inbound, ann):
    body = callback(ann)
    body["metadata"]["workflow_id"] = "x" * (1024 * 1024)
    assert inbound(body).status_code == 413


@pytest.mark.parametrize("token", [None, "wrong-secret", SECRET + "x"])
def test_missing_or_wrong_secret_is_401(inbound, ann, token):
    response = inbound(callback(ann), token=token)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not Enrichment.objects.exists()


def test_off_until_a_secret_is_configured(client, ann, settings):
    response = client.post(URL, data="{}", content_type="application/json", HTTP_AUTHORIZATION="Bearer x")
    assert response.status_code == 503 and "N8N_INBOUND_SECRET" in response.json()["error"]


def test_only_post(inbound, client):
    assert client.get(URL).status_code == 405


def test_the_secret_never_reaches_the_logs(inbound, ann, caplog):
    caplog.set_level(logging.DEBUG)
    inbound(callback(ann))
    inbound(callback(ann), token="wrong")
    inbound({"bad": 1})
    assert SECRET not in caplog.text
    assert "enr-1" in caplog.text


def test_staff_see_the_enrichment_on_the_contact_page(inbound, ann, admin_client):
    inbound(callback(ann))
    html = admin_client.get(reverse("admin:contacts_contact_change", args=[ann.pk])).content.decode()
    assert "&quot;confidence_score&quot;: 87" in html
    assert admin_client.get(reverse("admin:integrations_enrichment_changelist")).status_code == 200
