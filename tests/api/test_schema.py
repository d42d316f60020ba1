"""The OpenAPI schema (drf-spectacular, api/urls.py): served with its UI, valid
without a warning, and complete: every endpoint under /api/v3/ in the URLconf is
in it with an example and its 401 and 403."""

import io
import re

import pytest
from django.core.management import call_command
from django.urls import URLPattern, URLResolver
from rest_framework.test import APIClient

from api import v3_urls

V3_PREFIX = "/api/v3/"
HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def v3_endpoints(patterns=v3_urls.urlpatterns, prefix=V3_PREFIX):
    """(OpenAPI path, method) for every view method routed under /api/v3/."""
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from v3_endpoints(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            path = re.sub(r"<(?:\w+:)?(\w+)>", openapi_parameter, route)
            for method in view_methods(pattern.callback):
                yield path, method


def openapi_parameter(match):
    # drf-spectacular names a "pk" parameter "id" (SCHEMA_COERCE_PATH_PK).
    name = match.group(1)
    return "{id}" if name == "pk" else "{%s}" % name


def view_methods(callback):
    actions = getattr(callback, "actions", None)  # a ViewSet's routed actions
    if actions:
        return sorted(actions)
    view_class = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    return [method for method in HTTP_METHODS if hasattr(view_class, method)]


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    with django_db_blocker.unblock():  # the throttle counts the schema's request too
        response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_the_schema_is_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "crmsync API"


@pytest.mark.django_db
@pytest.mark.parametrize("address", ["/api/schema/", "/api/schema/ui/"])
def test_the_schema_and_its_ui_answer_anyone(address):
    assert APIClient().get(address).status_code == 200


def test_the_urlconf_has_v3_endpoints():
    assert list(v3_endpoints()), "no endpoint under /api/v3/: the checks below would prove nothing"


@pytest.mark.parametrize("path, method", sorted(set(v3_endpoints())))
def test_each_endpoint_is_documented_with_an_example_and_its_401_and_403(schema, path, method):
    assert path in schema["paths"], "%s is routed but not in the schema" % path
    assert method in schema["paths"][path], "%s %s is routed but not in the schema" % (method.upper(), path)
    operation = schema["paths"][path][method]
    assert {"401", "403"} <= set(operation["responses"])
    assert operation.get("summary") and operation.get("description")
    assert examples_of(operation), "%s %s has no example" % (method.upper(), path)


def examples_of(operation):
    bodies = [operation.get("requestBody", {}), *operation["responses"].values()]
    return [name for body in bodies for media in body.get("content", {}).values() for name in media.get("examples", {})]


def test_every_operation_documents_the_shared_400_and_429(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if method in HTTP_METHODS:
                assert {"400", "429"} <= set(operation["responses"]), (method, path)


@pytest.mark.django_db
def test_spectacular_validates_the_schema_without_a_warning(tmp_path):
    # --fail-on-warn raises if drf-spectacular warned; --validate if the schema is
    # not valid OpenAPI.
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"), stderr=io.StringIO()
    )
    assert (tmp_path / "schema.yml").read_text().startswith("openapi: 3.")
