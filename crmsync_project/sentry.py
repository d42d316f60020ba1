"""Optional error reporting to Sentry, started from settings.py when SENTRY_DSN is
set and sentry-sdk is installed. Without either, nothing here runs."""

import os
import re
from urllib.parse import urlsplit

FILTERED = "[Filtered]"
# Settings and environment variables whose values are secrets (BREVO_API_KEY,
# MAUTIC_PASSWORD, N8N_WEBHOOK_SECRET, SECRET_KEY, SENTRY_DSN...).
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|DSN")
# Shorter values ("1", "true") would be scrubbed from every message.
MIN_SECRET_LENGTH = 8


def init_sentry(dsn, environment="production", release=None, traces_sample_rate=0.0, transport=None):
    """Report errors to Sentry; return whether it started. Without sentry-sdk it
    does nothing (the system check integrations.W004 says so). `transport` is for tests."""
    if not dsn:
        return False
    try:
        import sentry_sdk
        from sentry_sdk.integrations.django import DjangoIntegration
    except ImportError:
        return False
    sentry_sdk.init(
        dsn=dsn,
        integrations=[DjangoIntegration()],
        send_default_pii=False,
        # Request bodies and local variables hold contacts' personal data (a
        # Contact's repr is its email) and the CRMs' credentials.
        max_request_body_size="never",
        include_local_variables=False,
        before_send=scrub_secrets,
        before_send_transaction=scrub_secrets,
        environment=environment,
        release=release,
        traces_sample_rate=traces_sample_rate,
        transport=transport,
    )
    return True


def scrub_secrets(event, hint):
    """Replace every configured secret wherever it appears in the event: an
    exception message, a log line, a URL."""
    return _replace(event, _secret_values())


def _secret_values():
    values = set()
    for name, value in _named_values():
        if isinstance(value, str):
            values.add(value if SECRET_NAME.search(name) else _url_password(value))
    # Longest first, so that a secret containing another is replaced whole.
    return sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def _named_values():
    from django.conf import settings

    # CRM settings may come from the environment alone (integrations.conf.get_setting).
    yield from os.environ.items()
    if settings.configured:
        yield from ((name, getattr(settings, name, None)) for name in dir(settings) if name.isupper())
        yield from (("PASSWORD", db.get("PASSWORD")) for db in settings.DATABASES.values())


def _url_password(value):
    """The password in a URL such as DATABASE_URL or REDIS_URL, else ""."""
    try:
        return urlsplit(value).password or ""
    except ValueError:
        return ""


def _replace(value, secrets):
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, FILTERED)
        return value
    if isinstance(value, dict):
        return {key: _replace(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_replace(item, secrets) for item in value]
    return value
