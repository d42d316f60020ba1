import importlib
import itertools
import logging
import os
import pkgutil
import re

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test.signals import setting_changed
from hypothesis import settings as hypothesis_settings

from contacts.models import Contact, ContactSync

_serial = itertools.count()

# In CI the property tests try the same examples every run, so a red build is never
# a roll of the dice; on a developer's machine they explore new ones each time.
hypothesis_settings.register_profile("ci", derandomize=True)
if os.environ.get("CI", "").lower() not in ("", "0", "false"):
    hypothesis_settings.load_profile("ci")


@pytest.fixture
def make_contact(db):
    def make(email=None, **fields):
        return Contact.objects.create(email=email or "person%d@example.com" % next(_serial), **fields)

    return make


@pytest.fixture
def make_contacts(db):
    def make(count, prefix="bulk"):
        start = next(_serial)
        Contact.objects.bulk_create(
            Contact(email="%s%d-%d@example.com" % (prefix, start, i), first_name="F%d" % i) for i in range(count)
        )
        return Contact.objects.filter(email__startswith="%s%d-" % (prefix, start))

    return make


@pytest.fixture
def make_sync(db):
    def make(contact, crm="brevo", **fields):
        return ContactSync.objects.create(contact=contact, crm=crm, **fields)

    return make


def _staff_user(username, *codenames):
    user = User.objects.create_user(username=username, password="pw-for-tests", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def staff_client(client, db):
    """A logged-in staff user who may view and change contacts."""
    client.force_login(
        _staff_user(
            "staff", "view_contact", "change_contact", "view_contactsync", "change_contactsync", "view_syncattempt"
        )
    )
    return client


@pytest.fixture
def viewer_client(client, db):
    """A logged-in staff user who may only view contacts."""
    client.force_login(_staff_user("viewer", "view_contact", "view_contactsync"))
    return client


@pytest.fixture
def on_postgres():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL; set DATABASE_URL to run it")


# The session guard: no secret the tests configure may appear in any log record
# of the run, formatted as a handler would write it (traceback included).

SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN")
# Shorter values ("x", "1_x") are placeholders that occur in ordinary text.
MIN_SECRET_LENGTH = 8
# Credentials the tests use without putting them in settings.
TEST_CREDENTIALS = ("pw-for-tests", "browser-test-password")
# Tests that log a secret on purpose, with the values they may log: they raise an
# exception carrying it, to prove that what leaves the process (Sentry events,
# stored errors) is scrubbed.
LOGS_SECRETS_ON_PURPOSE = {
    "tests/test_sentry.py::": ("xkeysib-brevo-secret-4711",),
}


class SecretLogGuard(logging.Handler):
    """Keeps every log record of the run with the test that emitted it, and the
    secrets configured meanwhile (settings and environment variables named like
    *KEY, *SECRET, *PASSWORD, *TOKEN; sandbox placeholders are not secrets)."""

    def __init__(self):
        super().__init__(level=logging.NOTSET)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.secrets = set(TEST_CREDENTIALS)
        self.placeholders = set()
        self.records = []
        self.test, self.allowed = None, frozenset()
        self.started = False

    def emit(self, record):
        try:
            text = self.format(record)
        except Exception:
            text = "%s %r" % (record.msg, record.args)
        self.records.append((self.test, self.allowed, text))

    def attach(self):
        """On the root logger and on every logger that does not propagate to it
        (django, django_q); again at each test, in case logging was reconfigured."""
        loggers = [logging.getLogger()] + [
            logger
            for logger in list(logging.Logger.manager.loggerDict.values())
            if isinstance(logger, logging.Logger) and not logger.propagate
        ]
        for logger in loggers:
            if self not in logger.handlers:
                logger.addHandler(self)

    def collect(self, name, value):
        if (
            isinstance(value, str)
            and SECRET_NAME.search(name)
            and len(value) >= MIN_SECRET_LENGTH
            and value not in self.placeholders
        ):
            self.secrets.add(value)

    def collect_configured(self):
        from django.conf import settings

        for name, value in os.environ.items():
            self.collect(name, value)
        for name in dir(settings):
            if name.isupper():
                self.collect(name, getattr(settings, name, None))

    def leaks(self, secret=None):
        """[(test, secret, record text)] for every record holding a secret."""
        secrets = [secret] if secret else sorted(self.secrets)
        return [
            (test, value, text)
            for test, allowed, text in self.records
            for value in secrets
            if value in text and value not in allowed
        ]

    def forget(self, secret):
        self.secrets.discard(secret)


def _sandbox_placeholders():
    import crm_sandbox

    values = set()
    for module in pkgutil.iter_modules(crm_sandbox.__path__):
        names = vars(importlib.import_module("crm_sandbox.%s" % module.name))
        values.update(v for k, v in names.items() if k.isupper() and SECRET_NAME.search(k) and isinstance(v, str))
    return values


_guard = SecretLogGuard()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "logs_secrets_on_purpose(*values): the test logs these secret values deliberately"
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        # A test that asks for on_postgres needs PostgreSQL: `-m postgres` picks it.
        if "on_postgres" in item.fixturenames:
            item.add_marker(pytest.mark.postgres)
        for prefix, values in LOGS_SECRETS_ON_PURPOSE.items():
            if item.nodeid.startswith(prefix):
                item.add_marker(pytest.mark.logs_secrets_on_purpose(*values))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _guard.started:
        _guard.started = True
        _guard.placeholders = _sandbox_placeholders()
        _guard.collect_configured()
        setting_changed.connect(_collect_changed_setting, weak=False, dispatch_uid="secret-log-guard")
    _guard.attach()
    _collect_environment()
    _guard.test = item.nodeid
    _guard.allowed = frozenset(
        value for marker in item.iter_markers("logs_secrets_on_purpose") for value in marker.args
    )
    yield
    _collect_environment()
    _guard.test, _guard.allowed = None, frozenset()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    _collect_environment()  # after the fixtures, which may set environment variables
    yield


def _collect_environment():
    for name, value in os.environ.items():
        _guard.collect(name, value)


def _collect_changed_setting(setting, value, enter, **kwargs):
    if enter:
        _guard.collect(setting, value)


@pytest.fixture
def secret_log_guard():
    """The session's guard, for tests that check it."""
    return _guard


def pytest_sessionfinish(session, exitstatus):
    leaks = _guard.leaks()
    if not leaks:
        return
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    reporter.line("")
    reporter.section("secrets in log records", sep="=", red=True, bold=True)
    for test, secret, text in leaks:
        masked = text.replace(secret, "<%s...>" % secret[:4])
        reporter.line(
            "%s: a configured secret (%s...) was logged:" % (test or "outside any test", secret[:4]), red=True
        )
        reporter.line("    " + masked[:2000].replace("\n", "\n    "))
