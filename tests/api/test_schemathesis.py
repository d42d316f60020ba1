"""Schemathesis over every operation of the OpenAPI schema, in process: examples
made from the schema (valid and invalid), sent through Django's WSGI handler with
a staff token. No answer may be a 5xx, and every answer must be one the schema
documents, in status code, content type and body. PostgreSQL only (CI's first run),
a bounded number of examples per operation, the same examples every run in CI."""

import os

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from rest_framework.throttling import UserRateThrottle
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from contacts.models import SyncStatus

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MAX_EXAMPLES = 25
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def wsgi_app():
    """Django's WSGI handler, kept from closing the test's connection at each request
    (it holds the test's transaction), as Django's test client does."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield WSGIHandler()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(on_postgres, wsgi_app, staff_client, some_contacts, monkeypatch, settings):
    # The erase endpoints answer 503 without it; with it they start erasures.
    settings.CRMSYNC_SUPPRESSION_KEY = "schemathesis-suppression-key"
    # Hundreds of requests from one token: the throttle would answer 429 to most.
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"user": "1000000/min"})
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)
    schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=IN_CI)
    schema.config.headers = {"Authorization": staff_client._credentials["HTTP_AUTHORIZATION"]}
    return schema


@pytest.fixture
def some_contacts(make_contact, make_sync):
    """Contacts in each sync state, so the reads answer with full bodies."""
    for index, status in enumerate(SyncStatus):
        make_sync(make_contact(email="schema-%d@example.com" % index), crm="brevo", sync_status=status)


@pytest.fixture(autouse=True)
def node_id_for_schemathesis(request):
    # Schemathesis 4.32 reads and rewrites the test's `_nodeid` to name each
    # operation in reports; pytest 9 keeps the node id elsewhere.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_every_operation_answers_as_documented_and_never_5xx(case, staff_client):
    case.call_and_validate(
        headers={"Authorization": staff_client._credentials["HTTP_AUTHORIZATION"]},
        checks=CHECKS,
    )
