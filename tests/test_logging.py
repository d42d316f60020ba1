"""What the logs may hold: never a configured secret."""

import io
import logging

import pytest

from crmsync_project.logging import ScrubSecrets

SECRET = "xkeysib-logged-by-mistake-0815"


@pytest.fixture
def written():
    """What the configured stdout handler writes, while the test runs."""
    handler = next(h for h in logging.getLogger().handlers if any(isinstance(f, ScrubSecrets) for f in h.filters))
    stream = io.StringIO()
    previous = handler.setStream(stream)
    yield stream
    handler.setStream(previous)


def test_a_configured_secret_is_blanked_in_messages_and_tracebacks(settings, written):
    settings.BREVO_API_KEY = SECRET
    logger = logging.getLogger("integrations.engine")
    try:
        raise RuntimeError("the CRM answered: invalid key %s" % SECRET)
    except RuntimeError:
        logger.exception("crm=brevo push failed with key %s", SECRET)

    out = written.getvalue()
    assert "crm=brevo push failed with key [Filtered]" in out
    assert "RuntimeError: the CRM answered: invalid key [Filtered]" in out
    assert SECRET not in out


def test_a_value_that_is_not_configured_as_a_secret_is_left_alone(settings, written):
    settings.BREVO_LIST_ID = "list-12345678"
    logging.getLogger("integrations.engine").warning("joined list-12345678")
    assert "joined list-12345678" in written.getvalue()


def test_a_webhook_address_is_blanked_where_urllib3_logs_its_path(settings, written):
    """A Slack-compatible webhook's token is its path; urllib3 logs the path at DEBUG."""
    settings.CRMSYNC_ALERT_WEBHOOK_URL = "https://hooks.example.com/services/T000/B000/XXXXsecretXXXX"
    logging.getLogger("integrations.alerts").warning(
        'https://hooks.example.com:443 "POST /services/T000/B000/XXXXsecretXXXX HTTP/1.1" 200 2'
    )
    out = written.getvalue()
    assert "XXXXsecretXXXX" not in out
    assert '"POST [Filtered] HTTP/1.1" 200 2' in out
