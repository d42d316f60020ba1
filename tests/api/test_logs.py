"""Tokens and request bodies never appear in logs: not in the API's own records,
nor in Django's (django.request for every 4xx and 5xx, django.server for the
development server's request lines), at any level."""

import json
import logging
import threading
import urllib.error
import urllib.request

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.servers.basehttp import WSGIRequestHandler, WSGIServer

from tests.api.conftest import CHANGE_CONTACTS
from tests.api.probe import PROBE_URL, ProbeView

pytestmark = pytest.mark.urls("tests.api.probe")

CANARY = "canary-7f3a9c"


class Keep(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def every_record():
    """Every log record at DEBUG from every logger, including those that do not
    propagate to the root (django, django_q)."""
    keep = Keep()
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    levels = {logger: logger.level for logger in loggers}
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        if logger is loggers[0] or not logger.propagate:
            logger.addHandler(keep)
    yield keep.records
    for logger, level in levels.items():
        logger.setLevel(level)
        if keep in logger.handlers:
            logger.removeHandler(keep)


def record_text(record):
    """All a handler could write of the record: the message, the traceback, and
    every attribute (a handler's formatter may use any)."""
    return logging.Formatter("%(name)s %(message)s").format(record) + repr(vars(record))


def assert_nothing_logged(records, *secrets):
    for record in records:
        text = record_text(record)
        for secret in secrets:
            assert secret not in text, "%s logged %r" % (record.name, text[:500])


@pytest.fixture
def client(client_with):
    ProbeView.applied.clear()
    yield client_with(CHANGE_CONTACTS)
    ProbeView.applied.clear()


def token_of(client):
    return client._credentials["HTTP_AUTHORIZATION"].split()[1]


BODIES = {
    "valid": ({"name": CANARY, "email": "ada@example.com"}, 200),
    "invalid field": ({"name": "Ada", "email": CANARY + "@"}, 400),
    "nul": ({"name": CANARY + "\x00", "email": "ada@example.com"}, 400),
}


@pytest.mark.parametrize("body, status", BODIES.values(), ids=BODIES.keys())
def test_neither_token_nor_body_is_logged(client, every_record, body, status):
    response = client.generic("POST", PROBE_URL, json.dumps(body), content_type="application/json")
    assert response.status_code == status
    if status >= 400:
        assert any(record.name == "django.request" for record in every_record)
    assert_nothing_logged(every_record, token_of(client), CANARY)


def test_malformed_json_is_not_logged(client, every_record):
    response = client.generic("POST", PROBE_URL, '{"name": "%s",' % CANARY, content_type="application/json")
    assert response.status_code == 400
    assert_nothing_logged(every_record, token_of(client), CANARY)


def test_a_500_logs_neither(client, every_record, monkeypatch):
    def fail(self, request):
        raise ValueError("bad %s" % request.data["name"])  # an exception quoting the body

    monkeypatch.setattr(ProbeView, "post", fail)
    response = client.post(PROBE_URL, {"name": CANARY, "email": "ada@example.com"}, format="json")
    assert response.status_code == 500
    assert any(record.name == "api.errors" for record in every_record)
    assert_nothing_logged(every_record, token_of(client), CANARY)


@pytest.mark.parametrize("header", ["Token %s" % CANARY, "Token %s extra" % CANARY])
def test_a_refused_token_is_not_logged(anonymous, every_record, header, db):
    assert anonymous.get(PROBE_URL, HTTP_AUTHORIZATION=header).status_code == 401
    assert_nothing_logged(every_record, CANARY)


@pytest.fixture
def development_server(transactional_db, settings):
    """The development server's request handler (it logs to django.server), serving
    the whole site in a thread: (its address, a function that stops it)."""
    settings.ROOT_URLCONF = "tests.api.probe"
    server = WSGIServer(("127.0.0.1", 0), WSGIRequestHandler)
    # Not get_wsgi_application(): its django.setup() would configure logging afresh.
    server.set_app(WSGIHandler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop():
        # serve_forever handles one request at a time: once it has returned, the
        # last request's line is logged.
        if thread.is_alive():
            server.shutdown()
            thread.join(timeout=30)
        server.server_close()

    yield "http://127.0.0.1:%d" % server.server_port, stop
    stop()


@pytest.mark.slow
@pytest.mark.parametrize("body, status", BODIES.values(), ids=BODIES.keys())
def test_the_development_server_logs_neither(client, every_record, development_server, body, status):
    address, stop = development_server
    request = urllib.request.Request(
        address + PROBE_URL,
        data=json.dumps(body).encode(),
        headers={"Authorization": "Token %s" % token_of(client), "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            code = response.status
    except urllib.error.HTTPError as error:
        code = error.code
    stop()
    assert code == status
    assert any(record.name == "django.server" for record in every_record)
    assert_nothing_logged(every_record, token_of(client), CANARY)
