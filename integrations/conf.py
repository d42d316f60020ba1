"""Reading crmsync's settings.

A CRM's settings are named `<CRM>_<NAME>` (BREVO_API_KEY, HUBSPOT_SYNC_MAX_RETRIES).
They are looked up in Django settings first (so tests can override them), then in
the environment (which `.env` feeds), so that a new CRM needs no edit of
settings.py. Settings are read when asked for, never at import.
"""

import os
from dataclasses import dataclass

from django.conf import settings

from .exceptions import CRMConfigurationError

UNSET = object()
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def setting_name(crm, name):
    return "%s_%s" % (crm.upper(), name)


def get_setting(key, default=UNSET, *, cast=str):
    """A setting by its full name, converted with `cast` (str, int or bool)."""
    if hasattr(settings, key):
        raw = getattr(settings, key)
    elif key in os.environ:
        raw = os.environ[key]
    elif default is UNSET:
        raise CRMConfigurationError("%s is not set. Set it in the environment or .env." % key)
    else:
        return default
    return _cast(key, raw, cast)


def get_crm_setting(crm, name, default=UNSET, *, cast=str):
    return get_setting(setting_name(crm, name), default, cast=cast)


def is_set(key):
    value = getattr(settings, key, None)
    if value in (None, ""):
        value = os.environ.get(key, "")
    return value not in (None, "")


def _cast(key, raw, cast):
    if cast is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise CRMConfigurationError("%s must be true or false; it is %r." % (key, raw))
    if cast is int:
        try:
            return int(str(raw).strip())
        except ValueError:
            raise CRMConfigurationError("%s must be a whole number; it is %r." % (key, raw))
    return cast(raw)


@dataclass(frozen=True)
class SyncPolicy:
    """How often, how much and how persistently one CRM is synced."""

    crm: str
    interval_minutes: int
    batch_size: int
    max_instances: int
    max_retries: int
    retry_delay_minutes: int
    retry_exponential: bool
    retry_max_delay_minutes: int
    lease_seconds: int

    @property
    def max_attempts(self):
        return self.max_retries + 1

    @classmethod
    def for_backend(cls, backend_class):
        crm = backend_class.name
        policy = cls(
            crm=crm,
            interval_minutes=get_crm_setting(crm, "SYNC_SCHEDULER_INTERVAL_MINUTES", 5, cast=int),
            batch_size=get_crm_setting(
                crm, "SYNC_SCHEDULER_BATCH_SIZE", backend_class.default_batch_size, cast=int
            ),
            max_instances=get_crm_setting(crm, "SYNC_SCHEDULER_MAX_INSTANCES", 1, cast=int),
            max_retries=get_crm_setting(crm, "SYNC_MAX_RETRIES", 3, cast=int),
            retry_delay_minutes=get_crm_setting(crm, "SYNC_RETRY_DELAY_MINUTES", 5, cast=int),
            retry_exponential=get_crm_setting(crm, "SYNC_RETRY_EXPONENTIAL", True, cast=bool),
            retry_max_delay_minutes=get_setting(
                "CRMSYNC_RETRY_MAX_DELAY_MINUTES", 24 * 60, cast=int
            ),
            lease_seconds=get_setting("CRMSYNC_LEASE_SECONDS", 300, cast=int),
        )
        policy.validate()
        return policy

    def validate(self):
        minimums = {
            "SYNC_SCHEDULER_INTERVAL_MINUTES": (self.interval_minutes, 1),
            "SYNC_SCHEDULER_BATCH_SIZE": (self.batch_size, 1),
            "SYNC_SCHEDULER_MAX_INSTANCES": (self.max_instances, 1),
            "SYNC_MAX_RETRIES": (self.max_retries, 0),
            "SYNC_RETRY_DELAY_MINUTES": (self.retry_delay_minutes, 0),
        }
        for name, (value, minimum) in minimums.items():
            if value < minimum:
                raise CRMConfigurationError(
                    "%s must be at least %d; it is %d."
                    % (setting_name(self.crm, name), minimum, value)
                )
        _at_least("CRMSYNC_LEASE_SECONDS", self.lease_seconds, 10)
        _at_least("CRMSYNC_RETRY_MAX_DELAY_MINUTES", self.retry_max_delay_minutes, 1)


def _at_least(key, value, minimum):
    if value < minimum:
        raise CRMConfigurationError("%s must be at least %d; it is %d." % (key, minimum, value))


def check_global_settings():
    """Raise CRMConfigurationError for the first invalid setting shared by all CRMs."""
    _at_least("CRMSYNC_LEASE_SECONDS", get_setting("CRMSYNC_LEASE_SECONDS", 300, cast=int), 10)
    _at_least(
        "CRMSYNC_RETRY_MAX_DELAY_MINUTES",
        get_setting("CRMSYNC_RETRY_MAX_DELAY_MINUTES", 24 * 60, cast=int),
        1,
    )
    attempt_retention_days()
    drift_check_interval_minutes()


def attempt_retention_days():
    days = get_setting("CRMSYNC_ATTEMPT_RETENTION_DAYS", 30, cast=int)
    _at_least("CRMSYNC_ATTEMPT_RETENTION_DAYS", days, 1)
    return days


def drift_check_interval_minutes():
    """How often the sweep for contacts changed without signals runs."""
    minutes = get_setting("CRMSYNC_DRIFT_CHECK_INTERVAL_MINUTES", 60, cast=int)
    _at_least("CRMSYNC_DRIFT_CHECK_INTERVAL_MINUTES", minutes, 1)
    return minutes
