import importlib.util
import os
import sys
from io import BytesIO
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import pytest
import sentry_sdk
from django.conf import settings as django_settings
from django.core.checks import Warning, run_checks
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_started
from django.db import close_old_connections
from django.test import Client
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from sentry_sdk.transport import Transport

from crmsync_project.sentry import init_sentry
from integrations.checks import check_error_reporting

DSN = "https://sentrypublickey0123@o0.ingest.sentry.invalid/42"
API_KEY = "xkeysib-brevo-secret-4711"
CALLER_TOKEN = "caller-bearer-token-0815"
EMAIL = "jane.roe@example.com"


@csrf_exempt
def failing_view(request):
    # What a failure deep in a backend has at hand: a contact and the credentials.
    contact_email = EMAIL
    headers = {"api-key": django_settings.BREVO_API_KEY, "Authorization": "Bearer %s" % API_KEY}
    raise RuntimeError("Brevo refused %s with %s" % (contact_email.split("@")[1], headers["api-key"]))


urlpatterns = [path("boom", failing_view)]


class CapturingTransport(Transport):
    """Keeps what would have been sent to Sentry, in its wire format."""

    def __init__(self):
        super().__init__()
        self.envelopes = []

    def capture_envelope(self, envelope):
        self.envelopes.append(envelope)

    @property
    def events(self):
        return [envelope.get_event() for envelope in self.envelopes if envelope.get_event()]

    @property
    def sent(self):
        return b"".join(envelope.serialize() for envelope in self.envelopes).decode()


@pytest.fixture(autouse=True)
def reset_sentry():
    yield
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)


@pytest.fixture
def sentry(settings):
    settings.BREVO_API_KEY = API_KEY
    transport = CapturingTransport()
    assert init_sentry(DSN, environment="test", transport=transport) is True
    return transport


def post_through_wsgi(path, form, **environ):
    """A request the way a WSGI server (gunicorn) hands it to Django; the test
    client bypasses the WSGI layer, where Sentry reads the URL and headers."""
    body = urlencode(form).encode()
    environ.update(
        REQUEST_METHOD="POST",
        PATH_INFO=path,
        CONTENT_TYPE="application/x-www-form-urlencoded",
        CONTENT_LENGTH=str(len(body)),
        **{"wsgi.input": BytesIO(body)},
    )
    setup_testing_defaults(environ)
    statuses = []
    # As the test client does: the test's database connection is not the request's to close.
    request_started.disconnect(close_old_connections)
    try:
        b"".join(WSGIHandler()(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    finally:
        request_started.connect(close_old_connections)
    return statuses[0]


def exception_values(events):
    return [value for event in events for value in event.get("exception", {}).get("values", [])]


class TestReporting:
    @pytest.mark.urls(__name__)
    def test_an_error_in_a_view_is_reported(self, sentry, db):
        response = Client(raise_request_exception=False).get("/boom")
        assert response.status_code == 500
        reported = exception_values(sentry.events)
        assert reported and {value["type"] for value in reported} == {"RuntimeError"}
        assert reported[0]["value"] == "Brevo refused example.com with [Filtered]"
        assert {event["environment"] for event in sentry.events} == {"test"}

    @pytest.mark.urls(__name__)
    def test_no_credentials_or_contact_data_are_sent(self, sentry):
        status = post_through_wsgi("/boom", {"email": EMAIL}, HTTP_AUTHORIZATION="Bearer %s" % CALLER_TOKEN)
        assert status.startswith("500")
        (event,) = [event for event in sentry.events if event.get("exception")]
        # The request was reported, without its credentials or its body.
        assert event["request"]["url"].endswith("/boom")
        assert "Authorization" in event["request"]["headers"]
        assert [secret for secret in (API_KEY, CALLER_TOKEN, EMAIL) if secret in sentry.sent] == []

    def test_a_secret_from_the_environment_is_scrubbed_too(self, sentry, monkeypatch):
        monkeypatch.setenv("HUBSPOT_API_KEY", "pat-eu1-environment-secret")
        sentry_sdk.capture_message("HubSpot said no to pat-eu1-environment-secret")
        assert sentry.events and "pat-eu1-environment-secret" not in sentry.sent

    def test_a_password_in_a_url_setting_is_scrubbed(self, sentry, monkeypatch):
        monkeypatch.setenv("REDIS_URL", "redis://:redis-pass-0451@cache.internal:6379/0")
        sentry_sdk.capture_message("Broker refused redis-pass-0451")
        assert sentry.events and "redis-pass-0451" not in sentry.sent

    def test_nothing_is_started_without_a_dsn(self):
        assert init_sentry("") is False
        assert not sentry_sdk.get_client().is_active()

    def test_nothing_is_started_without_sentry_sdk(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "sentry_sdk", None)
        assert init_sentry(DSN) is False
        monkeypatch.undo()
        assert not sentry_sdk.get_client().is_active()


class TestSettings:
    def load_settings(self, monkeypatch, **env):
        monkeypatch.setenv("ENV_FILE", os.devnull)
        monkeypatch.setenv("DEBUG", "true")
        for name in ("SENTRY_DSN", "SENTRY_ENVIRONMENT", "SENTRY_RELEASE", "SENTRY_TRACES_SAMPLE_RATE"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        # A fresh copy of settings.py, run as at startup; Django's own stays as it is.
        spec = importlib.util.find_spec("crmsync_project.settings")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return vars(module)

    def test_without_sentry_dsn_nothing_is_started(self, monkeypatch):
        assert self.load_settings(monkeypatch)["SENTRY_DSN"] == ""
        assert not sentry_sdk.get_client().is_active()

    def test_sentry_dsn_starts_reporting_with_the_environments_options(self, monkeypatch):
        self.load_settings(
            monkeypatch,
            SENTRY_DSN=DSN,
            SENTRY_ENVIRONMENT="staging",
            SENTRY_RELEASE="crmsync@1.2.3",
            SENTRY_TRACES_SAMPLE_RATE="0.25",
        )
        client = sentry_sdk.get_client()
        assert client.is_active()
        options = client.options
        assert (options["dsn"], options["environment"], options["release"]) == (DSN, "staging", "crmsync@1.2.3")
        assert (options["traces_sample_rate"], options["send_default_pii"]) == (0.25, False)

    def test_defaults(self, monkeypatch):
        self.load_settings(monkeypatch, SENTRY_DSN=DSN)
        options = sentry_sdk.get_client().options
        assert (options["environment"], options["traces_sample_rate"]) == ("production", 0.0)


class TestCheck:
    WARNING = Warning(
        "SENTRY_DSN is set but sentry-sdk is not installed, so errors are not reported to Sentry.",
        hint="pip install sentry-sdk, or unset SENTRY_DSN.",
        id="integrations.W005",
    )

    def test_warns_when_the_dsn_is_set_but_sentry_sdk_is_missing(self, settings, monkeypatch):
        settings.SENTRY_DSN = DSN
        monkeypatch.setitem(sys.modules, "sentry_sdk", None)
        assert check_error_reporting() == [self.WARNING]
        assert self.WARNING in run_checks()

    def test_the_warning_never_shows_the_dsn(self, settings, monkeypatch):
        settings.SENTRY_DSN = DSN
        monkeypatch.setitem(sys.modules, "sentry_sdk", None)
        (message,) = check_error_reporting()
        assert "sentrypublickey0123" not in message.msg + message.hint

    def test_quiet_when_sentry_sdk_is_installed(self, settings):
        settings.SENTRY_DSN = DSN
        assert check_error_reporting() == []

    def test_quiet_without_a_dsn(self, settings, monkeypatch):
        settings.SENTRY_DSN = ""
        monkeypatch.delenv("SENTRY_DSN", raising=False)
        monkeypatch.setitem(sys.modules, "sentry_sdk", None)
        assert check_error_reporting() == []
