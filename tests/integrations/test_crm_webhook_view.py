"""The generic inbound webhook view, with a CRM double that signs its calls with an
HMAC of the body: what the view does around any CRM's verify and parse hooks."""

import hashlib
import hmac
import json

import pytest
from django.urls import reverse

from contacts.models import Contact, ContactSync, CRMEvent
from contacts.models import ProcessingStatus as P
from integrations.backends.inbound import CRMNotice, WebhookRejected, same_secret

from .doubles import ScriptedBackend

SECRET = "signed-crm-webhook-secret"


class SignedCRM(ScriptedBackend):
    name = "signed"
    verbose_name = "Signed CRM"
    receives_webhooks = True

    @classmethod
    def verify_webhook(cls, call, secret):
        expected = hmac.new(secret.encode(), call.body, hashlib.sha256).hexdigest()
        if not same_secret(call.headers.get("X-Signature", ""), expected):
            raise WebhookRejected("The signature does not match.")

    @classmethod
    def parse_webhook(cls, call):
        try:
            events = json.loads(call.body)
            return [CRMNotice(event_id=e["id"], kind=e["kind"], external_id=e["record"]) for e in events]
        except (ValueError, KeyError, TypeError):
            raise WebhookRejected("Not a Signed CRM event list.", status=400) from None


@pytest.fixture
def signed(settings, db):
    settings.CRMSYNC_EXTRA_BACKENDS = ["tests.integrations.test_crm_webhook_view.SignedCRM"]
    settings.SIGNED_API_KEY = "signed-api-key"
    settings.SIGNED_WEBHOOK_SECRET = SECRET
    contact = Contact.objects.create(email="ann@example.com")
    return ContactSync.objects.create(contact=contact, crm="signed", external_id="r1", synced_email=contact.email)


def call(client, body, crm="signed", signature=None):
    raw = json.dumps(body).encode()
    signature = signature if signature is not None else hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    return client.post(
        reverse("integrations:crm-webhook", args=[crm]),
        raw,
        content_type="application/json",
        HTTP_X_SIGNATURE=signature,
    )


def test_a_signed_event_is_applied_once(client, signed):
    events = [{"id": "ev-1", "kind": CRMEvent.DELETED, "record": "r1"}]

    first, again = call(client, events), call(client, events)

    assert (first.status_code, first.json()) == (200, {"events": 1, "applied": 1})
    assert (again.status_code, again.json()) == (200, {"events": 1, "applied": 0})
    signed.refresh_from_db()
    assert (signed.processing_status, signed.crm_event, signed.external_id) == (P.NOT_IN_CRM, CRMEvent.DELETED, "")


def test_a_bad_signature_is_refused_and_changes_nothing(client, signed, caplog):
    response = call(client, [{"id": "ev-1", "kind": CRMEvent.DELETED, "record": "r1"}], signature="0" * 64)

    assert (response.status_code, response.json()) == (401, {"message": "The signature does not match."})
    signed.refresh_from_db()
    assert (signed.crm_event, signed.external_id) == ("", "r1")
    assert SECRET not in caplog.text


def test_a_body_that_is_not_the_crms_is_a_400(client, signed):
    assert call(client, {"not": "a list"}).status_code == 400


def test_the_webhook_is_off_until_its_secret_is_set(client, signed, settings):
    settings.SIGNED_WEBHOOK_SECRET = ""
    response = call(client, [])
    assert response.status_code == 404
    assert "SIGNED_WEBHOOK_SECRET" in response.json()["message"]


@pytest.mark.parametrize("crm", ["nosuchcrm", "n8n"])
def test_a_crm_without_webhooks_has_none(client, signed, crm):
    assert call(client, [], crm=crm).status_code == 404


def test_only_post(client, signed):
    assert client.get(reverse("integrations:crm-webhook", args=["signed"])).status_code == 405
