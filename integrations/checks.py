"""System checks for CRM configuration mistakes (run by `manage.py check`,
`runserver`, `migrate` and every command that asks for checks)."""

import importlib.util

from django.core.checks import Error, Warning

from .conf import SyncPolicy, check_global_settings, get_crm_setting, is_set, lease_seconds
from .exceptions import CRMConfigurationError


def check_crm_configuration(app_configs=None, **kwargs):
    from .registry import backend_classes

    try:
        classes = backend_classes()
    except CRMConfigurationError as exc:
        return [Error(str(exc), hint="Fix or remove the entry.", id="integrations.E001")]
    try:
        check_global_settings()
    except CRMConfigurationError as exc:
        # Every CRM would fail on it too; one message says it.
        return [Warning(str(exc), hint="Fix the value in the environment or .env.", id="integrations.W002")]
    messages = _sandbox_mode()
    for backend_class in classes:
        messages += _half_configured(backend_class)
        messages += _invalid_numbers(backend_class)
        messages += _lease_too_short(backend_class)
        messages += _unknown_sync_mode(backend_class)
        messages += _consent_in_field_map(backend_class)
    return messages


def _consent_in_field_map(backend_class):
    from .backends.base import parse_field_map

    try:
        mapped = parse_field_map(get_crm_setting(backend_class.name, "FIELD_MAP", ""), "")
    except CRMConfigurationError:
        return []
    consent = [name for name in mapped if backend_class.is_consent_field(name)]
    if not consent:
        return []
    name = "%s_FIELD_MAP" % backend_class.name.upper()
    return [
        Warning(
            "%s maps %s, which holds a person's consent in %s: crmsync leaves it out, so that no sync "
            "can undo an opt-out." % (name, ", ".join(consent), backend_class.verbose_name),
            hint="Remove %s from %s." % (", ".join(consent), name),
            id="integrations.W004",
        )
    ]


def _unknown_sync_mode(backend_class):
    from .backends.base import SYNC_MODES, UPSERT

    if not getattr(backend_class, "supports_sync_modes", False):
        return []
    mode = str(get_crm_setting(backend_class.name, "SYNC_MODE", UPSERT) or UPSERT).strip().lower()
    if mode in SYNC_MODES:
        return []
    name = "%s_SYNC_MODE" % backend_class.name.upper()
    return [
        Error(
            "%s is %r; it must be one of %s." % (name, mode, ", ".join(SYNC_MODES)),
            hint="Fix %s; until then every push to %s fails." % (name, backend_class.verbose_name),
            id="integrations.E003",
        )
    ]


def _lease_too_short(backend_class):
    """The engine renews a batch's lease every third of it (engine.LeaseRenewal). If
    a worker stops renewing (it lost its database), the request it has in flight
    must still end, by its deadline, before the lease does: otherwise another
    worker could push the same contacts while the first is still sending them."""
    from .leases import LEASE_RENEWALS_PER_LEASE

    default = getattr(backend_class, "default_timeout_seconds", None)
    if default is None or not backend_class.is_enabled():
        return []
    try:
        timeout = get_crm_setting(backend_class.name, "TIMEOUT_SECONDS", default, cast=float)
        lease = lease_seconds()
    except CRMConfigurationError:
        return []  # reported by _invalid_numbers
    unrenewed = lease - lease / LEASE_RENEWALS_PER_LEASE
    if unrenewed > timeout:
        return []
    needed = int(timeout * LEASE_RENEWALS_PER_LEASE / (LEASE_RENEWALS_PER_LEASE - 1)) + 1
    timeout_name = "%s_TIMEOUT_SECONDS" % backend_class.name.upper()
    return [
        Error(
            "CRMSYNC_LEASE_SECONDS (%d) is too short for %s (%g): a request to %s may outlive the lease, "
            "and another worker would push the same contacts again."
            % (lease, timeout_name, timeout, backend_class.verbose_name),
            hint="Set CRMSYNC_LEASE_SECONDS to at least %d, or lower %s." % (needed, timeout_name),
            id="integrations.E002",
        )
    ]


def _sandbox_mode():
    from .conf import sandbox_url

    if not sandbox_url():
        return []
    return [
        Warning(
            "Sandbox mode: CRMSYNC_SANDBOX_URL is set, so every CRM is the local sandbox at %s "
            "and no contact reaches a real CRM." % sandbox_url(),
            hint="Unset CRMSYNC_SANDBOX_URL and set each CRM's credentials to use real CRMs.",
            id="integrations.W003",
        )
    ]


def _half_configured(backend_class):
    present, missing = backend_class.present_settings(), backend_class.missing_settings()
    if not present or not missing or not backend_class.required_settings:
        return []
    return [
        Warning(
            "%s is half-configured: %s set but %s missing, so it will not sync."
            % (backend_class.verbose_name, ", ".join(present), ", ".join(missing)),
            hint="Set %s, or unset %s." % (" and ".join(missing), ", ".join(present)),
            id="integrations.W001",
        )
    ]


def _invalid_numbers(backend_class):
    try:
        SyncPolicy.for_backend(backend_class)
    except CRMConfigurationError as exc:
        return [
            Warning(
                "%s: %s" % (backend_class.verbose_name, exc),
                hint="Fix the value in the environment or .env; until then %s will not sync."
                % backend_class.verbose_name,
                id="integrations.W002",
            )
        ]
    return []


def check_error_reporting(app_configs=None, **kwargs):
    """A DSN without sentry-sdk reports nothing; say so. Never show the DSN: it holds a key."""
    if not is_set("SENTRY_DSN") or importlib.util.find_spec("sentry_sdk") is not None:
        return []
    return [
        Warning(
            "SENTRY_DSN is set but sentry-sdk is not installed, so errors are not reported to Sentry.",
            hint="pip install sentry-sdk, or unset SENTRY_DSN.",
            id="integrations.W005",
        )
    ]


def check_alert_settings(app_configs=None, **kwargs):
    """The alert settings (integrations.alerts). Never show the webhook URL: it holds a token."""
    from .conf import alert_error_rate, alert_webhook_url

    messages = []
    try:
        alert_error_rate()
    except CRMConfigurationError as exc:
        messages.append(
            Error(
                str(exc),
                hint="Until it is fixed no alert about failed contacts is sent. Fix it in the environment or .env.",
                id="integrations.E004",
            )
        )
    url = alert_webhook_url()
    if url and not url.lower().startswith(("https://", "http://")):
        messages.append(
            Error(
                "CRMSYNC_ALERT_WEBHOOK_URL is not a web address (http:// or https://), so no alert reaches it.",
                hint="Set it to the incoming webhook URL your chat tool gives, or unset it.",
                id="integrations.E005",
            )
        )
    return messages
