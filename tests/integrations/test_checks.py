from django.core.checks import Warning

from integrations.checks import check_crm_configuration


def test_a_configured_crm_raises_nothing(scripted_crm):
    assert check_crm_configuration() == []


def test_warns_about_a_half_configured_crm(scripted_crm, settings):
    del settings.SCRIPTED_API_KEY
    settings.SCRIPTED_REGION = "eu"
    assert check_crm_configuration() == [
        Warning(
            "Scripted CRM is half-configured: SCRIPTED_REGION set but SCRIPTED_API_KEY missing, so it will not sync.",
            hint="Set SCRIPTED_API_KEY, or unset SCRIPTED_REGION.",
            id="integrations.W001",
        )
    ]


def test_each_invalid_setting_is_named(scripted_crm, settings):
    settings.SCRIPTED_SYNC_MAX_RETRIES = "three"
    assert (
        check_crm_configuration()[0].msg
        == "Scripted CRM: SCRIPTED_SYNC_MAX_RETRIES must be a whole number; it is 'three'."
    )
    del settings.SCRIPTED_SYNC_MAX_RETRIES
    settings.CRMSYNC_LEASE_SECONDS = 1
    assert [m.msg for m in check_crm_configuration()] == ["CRMSYNC_LEASE_SECONDS must be at least 10; it is 1."]
    del settings.CRMSYNC_LEASE_SECONDS
    settings.CRMSYNC_ATTEMPT_RETENTION_DAYS = 0
    assert [m.msg for m in check_crm_configuration()] == ["CRMSYNC_ATTEMPT_RETENTION_DAYS must be at least 1; it is 0."]
    del settings.CRMSYNC_ATTEMPT_RETENTION_DAYS
    settings.CRMSYNC_DRIFT_CHECK_INTERVAL_MINUTES = 0
    assert [m.msg for m in check_crm_configuration()] == [
        "CRMSYNC_DRIFT_CHECK_INTERVAL_MINUTES must be at least 1; it is 0."
    ]


def test_settings_come_from_the_environment_too(scripted_crm, settings, monkeypatch):
    monkeypatch.setenv("SCRIPTED_SYNC_RETRY_EXPONENTIAL", "maybe")
    assert (
        check_crm_configuration()[0].msg
        == "Scripted CRM: SCRIPTED_SYNC_RETRY_EXPONENTIAL must be true or false; it is 'maybe'."
    )
