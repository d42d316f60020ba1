"""Reading crmsync's settings.

A CRM's settings are named `<CRM>_<NAME>` (BREVO_API_KEY, HUBSPOT_SYNC_MAX_RETRIES).
They are looked up in Django settings first (so tests can override them), then in
the environment (which `.env` feeds), so that a new CRM needs no edit of
settings.py. Settings are read when asked for, never at import.
"""

import math
import os
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings

from .exceptions import CRMConfigurationError

UNSET = object()
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def setting_name(crm, name):
    return "%s_%s" % (crm.upper(), name)


def get_setting(key, default=UNSET, *, cast=str):
    """A setting by its full name, converted with `cast` (str, int, float or bool)."""
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
    overrides = sandbox_settings(crm)
    if name in overrides:
        return _cast(setting_name(crm, name), overrides[name], cast)
    return get_setting(setting_name(crm, name), default, cast=cast)


# The local CRM sandbox (the separate crm_sandbox app) registers, for each CRM it
# emulates, the settings that point the CRM at it: its API root and placeholder
# credentials. They replace the CRM's own settings while CRMSYNC_SANDBOX_URL is set.
_sandbox_settings = {}


def register_sandbox(crm, settings_for):
    """`settings_for(sandbox_url)` returns {setting name without the CRM prefix: value}."""
    _sandbox_settings[crm] = settings_for


def sandbox_url():
    """The local CRM sandbox every emulated CRM talks to instead, or "" (see README)."""
    return get_setting("CRMSYNC_SANDBOX_URL", "").rstrip("/")


def sandbox_settings(crm):
    """The settings the sandbox puts in place of `crm`'s own, or {} when it does not."""
    settings_for = _sandbox_settings.get(crm)
    url = sandbox_url() if settings_for else ""
    return settings_for(url) if url else {}


def in_sandbox(crm):
    return bool(sandbox_settings(crm))


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
            raise CRMConfigurationError("%s must be a whole number; it is %r." % (key, raw)) from None
    if cast is float:
        try:
            value = float(str(raw).strip())
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise CRMConfigurationError("%s must be a number (decimals allowed); it is %r." % (key, raw))
        return value
    return cast(raw)


@dataclass(frozen=True)
class BreakerPolicy:
    """When a CRM counts as down for everyone, and how it is probed (engine.Breaker).

    After `failures` batches in a row fail with CRM-wide errors (5xx, timeouts,
    connection errors: no contact accepted), the CRM stops claiming. One worker at
    a time then probes it with a batch of at most `probe_contacts`, first after
    `probe_seconds`, each failed probe doubling the wait up to `probe_max_seconds`.
    An accepted contact closes it.
    """

    failures: int = 3
    probe_seconds: float = 30.0
    probe_max_seconds: float = 300.0
    probe_contacts: int = 10

    @classmethod
    def from_settings(cls):
        breaker = cls(
            failures=get_setting("CRMSYNC_BREAKER_FAILURES", cls.failures, cast=int),
            probe_seconds=get_setting("CRMSYNC_BREAKER_PROBE_SECONDS", cls.probe_seconds, cast=float),
            probe_max_seconds=get_setting("CRMSYNC_BREAKER_PROBE_MAX_SECONDS", cls.probe_max_seconds, cast=float),
            probe_contacts=get_setting("CRMSYNC_BREAKER_PROBE_CONTACTS", cls.probe_contacts, cast=int),
        )
        _at_least("CRMSYNC_BREAKER_FAILURES", breaker.failures, 1)
        _at_least("CRMSYNC_BREAKER_PROBE_SECONDS", breaker.probe_seconds, 0.1)
        _at_least("CRMSYNC_BREAKER_PROBE_MAX_SECONDS", breaker.probe_max_seconds, breaker.probe_seconds)
        _at_least("CRMSYNC_BREAKER_PROBE_CONTACTS", breaker.probe_contacts, 1)
        return breaker

    def next_interval(self, current):
        """The wait before the next probe, after a probe that waited `current` failed."""
        if not current:
            return self.probe_seconds
        return min(current * 2, self.probe_max_seconds)


# RudderStack gives up on an event only when it has failed enough times AND its
# first failure is older than a window (3 hours there). A day here: a CRM problem
# noticed in the morning and fixed that day costs no contact its sync.
DEFAULT_GIVE_UP_AFTER_HOURS = 24.0
# With full jitter, a retry waits half of this on average once the back-off has
# grown to it: about every half hour through the day before giving up.
DEFAULT_RETRY_MAX_DELAY_MINUTES = 60.0


@dataclass(frozen=True)
class SyncPolicy:
    """How often, how much and how persistently one CRM is synced."""

    crm: str
    interval_minutes: int
    batch_size: int
    max_instances: int
    max_retries: int
    retry_delay_minutes: float
    retry_exponential: bool
    retry_max_delay_minutes: float
    lease_seconds: int
    give_up_after_hours: float = DEFAULT_GIVE_UP_AFTER_HOURS
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    # Queue a row again when its contact's payload changes (<CRM>_SYNC_ON_CHANGE).
    sync_on_change: bool = True

    @property
    def max_attempts(self):
        return self.max_retries + 1

    @classmethod
    def for_backend(cls, backend_class):
        crm = backend_class.name
        policy = cls(
            crm=crm,
            interval_minutes=get_crm_setting(crm, "SYNC_SCHEDULER_INTERVAL_MINUTES", 5, cast=int),
            batch_size=get_crm_setting(crm, "SYNC_SCHEDULER_BATCH_SIZE", backend_class.default_batch_size, cast=int),
            max_instances=get_crm_setting(crm, "SYNC_SCHEDULER_MAX_INSTANCES", 1, cast=int),
            max_retries=get_crm_setting(crm, "SYNC_MAX_RETRIES", 3, cast=int),
            retry_delay_minutes=get_crm_setting(crm, "SYNC_RETRY_DELAY_MINUTES", 5.0, cast=float),
            retry_exponential=get_crm_setting(crm, "SYNC_RETRY_EXPONENTIAL", True, cast=bool),
            retry_max_delay_minutes=retry_max_delay_minutes(),
            lease_seconds=lease_seconds(),
            give_up_after_hours=give_up_after_hours(),
            breaker=BreakerPolicy.from_settings(),
            sync_on_change=get_crm_setting(crm, "SYNC_ON_CHANGE", True, cast=bool),
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
                    "%s must be at least %s; it is %s."
                    % (setting_name(self.crm, name), _number(minimum), _number(value))
                )

    def gives_up(self, attempts, first_failed_at, now):
        """Whether a contact that failed again now ends in Error: only when it has
        used its attempts AND it has been failing for long enough."""
        if attempts < self.max_attempts:
            return False
        if first_failed_at is None:
            return True
        return now - first_failed_at >= timedelta(hours=self.give_up_after_hours)


def _at_least(key, value, minimum):
    if value < minimum:
        raise CRMConfigurationError("%s must be at least %s; it is %s." % (key, _number(minimum), _number(value)))


def _number(value):
    return "%g" % value if isinstance(value, float) else str(value)


def lease_seconds():
    seconds = get_setting("CRMSYNC_LEASE_SECONDS", 300, cast=int)
    _at_least("CRMSYNC_LEASE_SECONDS", seconds, 10)
    return seconds


def retry_max_delay_minutes():
    minutes = get_setting("CRMSYNC_RETRY_MAX_DELAY_MINUTES", DEFAULT_RETRY_MAX_DELAY_MINUTES, cast=float)
    _at_least("CRMSYNC_RETRY_MAX_DELAY_MINUTES", minutes, 0.01)
    return minutes


def give_up_after_hours():
    hours = get_setting("CRMSYNC_GIVE_UP_AFTER_HOURS", DEFAULT_GIVE_UP_AFTER_HOURS, cast=float)
    _at_least("CRMSYNC_GIVE_UP_AFTER_HOURS", hours, 0)
    return hours


DEFAULT_ALERT_ERROR_RATE = 0.2


def alert_error_rate():
    """CRMSYNC_ALERT_ERROR_RATE: the share of failed contacts over the alert window
    above which staff are alerted (integrations.alerts), a fraction from 0 to 1."""
    rate = get_setting("CRMSYNC_ALERT_ERROR_RATE", DEFAULT_ALERT_ERROR_RATE, cast=float)
    if not 0 <= rate <= 1:
        raise CRMConfigurationError(
            "CRMSYNC_ALERT_ERROR_RATE must be a fraction from 0 to 1 (0.2 is 20%%); it is %s." % _number(rate)
        )
    return rate


def alert_webhook_url():
    """CRMSYNC_ALERT_WEBHOOK_URL, a Slack-compatible incoming webhook, or "". It
    holds a token: never log it or show it."""
    return str(get_setting("CRMSYNC_ALERT_WEBHOOK_URL", "") or "").strip()


def check_global_settings():
    """Raise CRMConfigurationError for the first invalid setting shared by all CRMs."""
    lease_seconds()
    retry_max_delay_minutes()
    give_up_after_hours()
    BreakerPolicy.from_settings()
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


def metrics_token():
    """CRMSYNC_METRICS_TOKEN, the bearer token /metrics asks for; "" turns /metrics off."""
    return str(get_setting("CRMSYNC_METRICS_TOKEN", "") or "")
