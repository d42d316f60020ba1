"""Optional error reporting to Sentry, started from settings.py when SENTRY_DSN is
set and sentry-sdk is installed. Without either, nothing here runs."""

from .secrets import configured_secrets, scrub


def init_sentry(dsn, environment="production", release=None, traces_sample_rate=0.0, transport=None):
    """Report errors to Sentry; return whether it started. Without sentry-sdk it
    does nothing (the system check integrations.W005 says so). `transport` is for tests."""
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
    return _replace(event, configured_secrets())


def _replace(value, secrets):
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {key: _replace(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_replace(item, secrets) for item in value]
    return value
