"""The secrets this deployment is configured with, and scrubbing them out of text
that leaves the process: log lines and Sentry events."""

import os
import re
from urllib.parse import urlsplit

FILTERED = "[Filtered]"
# Settings and environment variables whose values are secrets (BREVO_API_KEY,
# MAUTIC_PASSWORD, N8N_WEBHOOK_SECRET, SECRET_KEY, SENTRY_DSN...).
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|DSN")
# Webhook addresses (CRMSYNC_ALERT_WEBHOOK_URL, N8N_WEBHOOK_URL) hold their token in
# the path (Slack's /services/T.../B.../...), which urllib3 logs at DEBUG.
WEBHOOK_NAME = re.compile(r"WEBHOOK_URL$")
# Shorter values ("1", "true") would be scrubbed from every message.
MIN_SECRET_LENGTH = 8


def configured_secrets():
    """Every configured secret value, longest first so that a secret containing
    another is replaced whole."""
    values = set()
    for name, value in _named_values():
        if isinstance(value, str):
            values.add(value if SECRET_NAME.search(name) else _url_password(value))
            if WEBHOOK_NAME.search(name):
                values.update(_url_path(value))
    return sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def scrub(text, secrets):
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, FILTERED)
    return text


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


def _url_path(value):
    """A URL's path, with and without its query: where a webhook keeps its token."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return []
    return [parts.path, "%s?%s" % (parts.path, parts.query) if parts.query else parts.path]
