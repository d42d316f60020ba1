"""How the API answers bad input and its own failures (api/errors.py, api/parsers.py,
crmsync_project/middleware.py): a 400 naming the problem before any view applies
anything, DRF's field-level errors, and a logged 500 that quotes nothing."""

import base64
import json
import logging

import pytest

from api.errors import INTERNAL_ERROR
from api.parsers import KEY_MESSAGE
from tests.api.conftest import CHANGE_CONTACTS
from tests.api.probe import PROBE_URL, ProbeView

pytestmark = pytest.mark.urls("tests.api.probe")

VALID = {"name": "Ada", "email": "ada@example.com"}


@pytest.fixture
def client(client_with):
    ProbeView.applied.clear()
    yield client_with(CHANGE_CONTACTS)
    ProbeView.applied.clear()


def post_raw(client, body, content_type="application/json"):
    return client.generic("POST", PROBE_URL, body, content_type=content_type)


def test_a_valid_body_is_applied(client):
    response = client.post(PROBE_URL, VALID, format="json")
    assert response.status_code == 200
    assert ProbeView.applied == [VALID]


@pytest.mark.parametrize("body", ['{"name": "Ada",', "not json", "\xff\xfe", '{"name": NaN}'])
def test_malformed_json_is_a_400_that_says_so(client, body):
    response = post_raw(client, body.encode("latin-1"))
    assert response.status_code == 400
    assert response.json()["detail"].startswith("JSON parse error")
    assert ProbeView.applied == []


NUL = "Null characters are not allowed."


@pytest.mark.parametrize(
    "body, errors",
    [
        ({"name": "A\x00da", "email": "ada@example.com"}, {"name": [NUL]}),
        ({"name": "Ada", "email": "ada@example.com", "tags": [["x", "y\x00"]]}, {"tags": {"0": {"1": [NUL]}}}),
        ({"name": "Ada", "email": "ada@example.com", "nested": {"a\x00": "b"}}, {"nested": [KEY_MESSAGE]}),
        ([{"name": "\x00"}], {"0": {"name": [NUL]}}),
        ("\x00", {"non_field_errors": [NUL]}),
    ],
)
def test_a_nul_anywhere_in_the_body_is_a_field_level_400(client, body, errors):
    response = post_raw(client, json.dumps(body))  # sent as the escape \u0000
    assert response.status_code == 400
    assert response.json() == errors
    assert ProbeView.applied == []


def test_a_lone_surrogate_is_refused(client):
    response = post_raw(client, '{"name": "A\\ud800", "email": "ada@example.com"}')
    assert response.status_code == 400
    assert response.json() == {"name": ["Surrogate characters are not allowed: U+D800."]}
    assert ProbeView.applied == []


def test_the_text_backslash_u0000_is_not_a_nul(client):
    body = dict(VALID, name="\\u0000")  # a backslash and five characters: ordinary text
    response = client.post(PROBE_URL, body, format="json")
    assert response.status_code == 200
    assert ProbeView.applied[0]["name"] == "\\u0000"


def test_a_body_nested_too_deeply_is_a_400(client):
    response = post_raw(client, "[" * 100_000 + "]" * 100_000)
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


@pytest.mark.parametrize(
    "address, where",
    [(PROBE_URL + "?search=a%00b", "query string"), ("/api/pro%00be/", "path"), (PROBE_URL + "?q=%ff", "UTF-8")],
)
def test_a_malformed_api_address_is_a_json_400(client, address, where):
    response = client.get(address)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert where in response.json()["detail"]


def test_a_nul_in_the_authorization_header_is_a_400(anonymous):
    response = anonymous.get(PROBE_URL, HTTP_AUTHORIZATION="Token abc\x00def")
    assert response.status_code == 400
    assert "Authorization header" in response.json()["detail"]


def test_field_errors_stay_as_drf_makes_them(client):
    response = client.post(PROBE_URL, {"name": 5, "email": "not-an-email"}, format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["email"]
    assert ProbeView.applied == []


def test_a_form_body_is_unsupported_media_type(client):
    response = post_raw(client, "name=Ada&email=ada%40example.com", "application/x-www-form-urlencoded")
    assert response.status_code == 415


def test_an_unsupported_method_is_a_405(client):
    assert client.delete(PROBE_URL).status_code == 405


def test_an_unexpected_exception_is_a_plain_500_logged_by_type_and_view(client, monkeypatch, caplog):
    def fail(self, request):
        raise KeyError(request.data["name"])  # an exception quoting the body

    monkeypatch.setattr(ProbeView, "post", fail)
    with caplog.at_level(logging.ERROR, logger="api"):
        response = client.post(PROBE_URL, dict(VALID, name="quoted-from-the-body"), format="json")
    assert response.status_code == 500
    assert response.json() == {"detail": INTERNAL_ERROR}
    [record] = [r for r in caplog.records if r.name == "api.errors"]
    message = record.getMessage()
    assert "KeyError" in message and "tests.api.probe.ProbeView" in message
    assert "quoted-from-the-body" not in message and record.exc_info is None


def test_a_500_names_the_chain_of_causes(client, monkeypatch, caplog):
    def fail(self, request):
        try:
            raise ValueError("inner")
        except ValueError as exc:
            raise RuntimeError("outer") from exc

    monkeypatch.setattr(ProbeView, "post", fail)
    with caplog.at_level(logging.ERROR, logger="api"):
        assert client.post(PROBE_URL, VALID, format="json").status_code == 500
    [record] = [r for r in caplog.records if r.name == "api.errors"]
    assert "RuntimeError <- ValueError" in record.getMessage()


def cursor(query):
    return base64.b64encode(query.encode()).decode()


BIG = 2**70
NESTED_TOO_DEEPLY = "[" * 100_000 + "]" * 100_000
# Requests to the real endpoints that once answered 500, or might: ids past any
# integer column, cursors DRF decodes but that hold no id, wrong shapes.
HOSTILE = [
    ("GET", "/api/v3/contacts?cursor=" + cursor("p=abc"), None),
    ("GET", "/api/v3/contacts?cursor=" + cursor("p=%d" % BIG), None),
    ("GET", "/api/v3/contacts?cursor=" + cursor("p=\x00"), None),
    ("GET", "/api/v3/contacts?cursor=" + cursor("p=-1&r=1"), None),
    ("GET", "/api/v3/contacts/%d" % BIG, None),
    ("GET", "/api/v3/contacts?page_size=%d" % BIG, None),
    ("PUT", "/api/v3/contacts/crm/select", {"contact_ids": [BIG], "crms": ["brevo"]}),
    ("PUT", "/api/v3/contacts/crm/select", {"contact_ids": [1.5, True], "crms": [None]}),
    ("PUT", "/api/v3/contacts/crm/select", ["a list"]),
    ("POST", "/api/v3/contacts/bulk", {"contacts": [None, 1, "x", []]}),
    ("POST", "/api/v3/contacts/bulk", {"contacts": [{"email": "a@example.com", "first_name": "x" * 100_000}]}),
    ("POST", "/api/v3/crms/%E2%98%83/pause", {}),
    ("PUT", "/api/v3/contacts/crm/select", NESTED_TOO_DEEPLY),
    ("POST", "/api/v3/contacts/bulk", NESTED_TOO_DEEPLY),
]


@pytest.mark.urls("crmsync_project.urls")
@pytest.mark.parametrize("method, address, body", HOSTILE)
def test_hostile_input_to_the_endpoints_is_never_a_500(staff_client, method, address, body):
    data = body if body is None or isinstance(body, str) else json.dumps(body)
    response = staff_client.generic(method, address, data or "", content_type="application/json")
    assert response.status_code < 500, response.content[:300]
