"""Settings of a contact's life: sync modes checked at start-up, webhook event ids
pruned with the attempt history, the suppression key's check."""

from datetime import timedelta

import pytest
from django.utils import timezone

from contacts.checks import check_suppression_key
from integrations.checks import check_crm_configuration
from integrations.models import WebhookEvent
from integrations.tasks import prune_sync_attempts


def ids(messages):
    return [message.id for message in messages]


@pytest.mark.parametrize("mode", ["upsert", "update_only", "CREATE_ONLY", ""])
def test_a_known_sync_mode_passes_the_checks(settings, mode):
    settings.HUBSPOT_SYNC_MODE = mode
    assert "integrations.E003" not in ids(check_crm_configuration())


def test_an_unknown_sync_mode_is_an_error_naming_the_setting(settings):
    settings.BREVO_SYNC_MODE = "update-only"
    (error,) = [m for m in check_crm_configuration() if m.id == "integrations.E003"]
    assert "BREVO_SYNC_MODE" in error.msg and "update_only" in error.msg


def test_n8n_has_no_sync_mode_to_check(settings):
    settings.N8N_SYNC_MODE = "nonsense"
    assert "integrations.E003" not in ids(check_crm_configuration())


def test_the_suppression_key_check_speaks_only_without_the_key(settings):
    settings.CRMSYNC_SUPPRESSION_KEY = ""
    assert ids(check_suppression_key()) == ["contacts.W001"]
    settings.CRMSYNC_SUPPRESSION_KEY = "a-key-of-its-own"
    assert check_suppression_key() == []


@pytest.mark.django_db
def test_old_webhook_event_ids_are_pruned_with_the_attempts(settings):
    settings.CRMSYNC_ATTEMPT_RETENTION_DAYS = 30
    old = WebhookEvent.objects.create(
        crm="hubspot", event_id="old", kind="deleted", received_at=timezone.now() - timedelta(days=31)
    )
    recent = WebhookEvent.objects.create(crm="hubspot", event_id="recent", kind="deleted")

    prune_sync_attempts()

    assert list(WebhookEvent.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not WebhookEvent.objects.filter(pk=old.pk).exists()


def test_a_field_map_never_writes_hubspots_opt_out(settings):
    from integrations.backends.hubspot import HubSpotBackend

    settings.HUBSPOT_API_KEY = "hubspot-test-token"
    settings.HUBSPOT_FIELD_MAP = "hs_email_optout=tier,HS_EMAIL_OPTOUT_1234=tier,jobtitle=role"

    assert set(HubSpotBackend().field_map()) >= {"jobtitle"}
    assert not any(name.lower().startswith("hs_email_optout") for name in HubSpotBackend().field_map())
    (warning,) = [m for m in check_crm_configuration() if m.id == "integrations.W004"]
    assert "hs_email_optout" in warning.msg and "HUBSPOT_FIELD_MAP" in warning.msg
