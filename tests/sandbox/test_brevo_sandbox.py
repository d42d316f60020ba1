import pytest
import requests

from integrations.sandbox.brevo import API_KEY


@pytest.fixture
def brevo(sandbox):
    session = requests.Session()
    session.headers["api-key"] = API_KEY
    base = sandbox.url + "/brevo/v3"

    def call(method, path, **kwargs):
        return session.request(method, base + path, timeout=5, **kwargs)

    return call


def test_wrong_or_missing_key_is_401_key_not_found(sandbox):
    for headers in ({}, {"api-key": "xkeysib-wrong"}):
        response = requests.post(sandbox.url + "/brevo/v3/contacts", json={"email": "a@example.com"}, headers=headers)
        assert (response.status_code, response.json()) == (401, {"code": "unauthorized", "message": "Key not found"})


def test_create_then_update_enabled_then_duplicate(brevo):
    created = brevo("POST", "/contacts", json={"email": "Ann@Example.com", "attributes": {"FIRSTNAME": "Ann"}})
    assert (created.status_code, created.json()) == (201, {"id": 1})
    updated = brevo("POST", "/contacts", json={"email": "ann@example.com", "attributes": {"LASTNAME": "Lee"}, "updateEnabled": True})
    assert (updated.status_code, updated.content) == (204, b"")
    refused = brevo("POST", "/contacts", json={"email": "ann@example.com"})
    assert refused.status_code == 400
    assert refused.json()["code"] == "duplicate_parameter"
    assert refused.json()["metadata"] == {"duplicate_identifiers": ["email"]}
    stored = brevo("GET", "/contacts/ann@example.com").json()
    assert stored["attributes"] == {"FIRSTNAME": "Ann", "LASTNAME": "Lee"}
    assert brevo("GET", "/contacts/1").json()["email"] == "ann@example.com"


@pytest.mark.parametrize(
    "body, code, message",
    [
        ({"email": "not-an-email"}, "invalid_parameter", "Invalid email address"),
        ({"attributes": {"FIRSTNAME": "x"}}, "missing_parameter", "Please provide Email or SMS attribute value to create user"),
        ({"email": "a@example.com", "attributes": {"SMS": "0207946"}}, "invalid_parameter", "Invalid phone number"),
    ],
)
def test_validation_errors(brevo, body, code, message):
    response = brevo("POST", "/contacts", json=body)
    assert (response.status_code, response.json()) == (400, {"code": code, "message": message})


def test_sms_taken_by_another_contact_is_refused_even_with_update_enabled(brevo):
    brevo("POST", "/contacts", json={"email": "a@example.com", "attributes": {"SMS": "+442079460000"}})
    response = brevo("POST", "/contacts", json={"email": "b@example.com", "attributes": {"SMS": "+44 20 7946 0000"}, "updateEnabled": True})
    assert response.json()["metadata"] == {"duplicate_identifiers": ["SMS"]}


def test_unknown_attributes_are_dropped_or_rejected(sandbox, brevo):
    brevo("POST", "/contacts", json={"email": "a@example.com", "attributes": {"COMPANY": "Acme"}})
    assert brevo("GET", "/contacts/a@example.com").json()["attributes"] == {}
    requests.post(sandbox.url + "/_sandbox/brevo/settings", json={"unknown_attributes": "reject"})
    response = brevo("POST", "/contacts", json={"email": "b@example.com", "attributes": {"COMPANY": "Acme"}})
    assert response.json() == {"code": "invalid_parameter", "message": "Attribute COMPANY does not exist"}
    assert brevo("POST", "/contacts/attributes/normal/COMPANY", json={"type": "text"}).status_code == 201
    assert brevo("POST", "/contacts", json={"email": "b@example.com", "attributes": {"COMPANY": "Acme"}}).status_code == 201


def test_attributes_are_listed_and_created_once(brevo):
    names = {a["name"] for a in brevo("GET", "/contacts/attributes").json()["attributes"]}
    assert {"FIRSTNAME", "LASTNAME", "SMS"} <= names
    assert brevo("POST", "/contacts/attributes/normal/WEBSITE", json={}).json()["code"] == "missing_parameter"
    assert brevo("POST", "/contacts/attributes/normal/WEBSITE", json={"type": "text"}).status_code == 201
    assert brevo("POST", "/contacts/attributes/normal/website", json={"type": "text"}).status_code == 400


def test_batch_update_fails_whole_when_one_contact_is_unknown(brevo):
    brevo("POST", "/contacts", json={"email": "a@example.com"})
    response = brevo("POST", "/contacts/batch", json={"contacts": [
        {"email": "a@example.com", "attributes": {"FIRSTNAME": "A"}}, {"email": "x@example.com"}, {"email": "y@example.com"}]})
    assert (response.status_code, response.json()["message"]) == (404, "No contact found for indexes 1,2")
    assert brevo("GET", "/contacts/a@example.com").json()["attributes"] == {}, "nothing applied"


def test_lists_and_unknown_list(brevo):
    list_id = brevo("POST", "/contacts/lists", json={"name": "Leads", "folderId": 1}).json()["id"]
    assert brevo("POST", "/contacts", json={"email": "a@example.com", "listIds": [list_id]}).status_code == 201
    assert brevo("GET", "/contacts/a@example.com").json()["listIds"] == [list_id]
    missing = brevo("POST", "/contacts", json={"email": "b@example.com", "listIds": [999]})
    assert (missing.status_code, missing.json()["message"]) == (404, "List ID does not exist")
    too_many = brevo("POST", "/contacts/lists/%d/contacts/add" % list_id, json={"emails": ["x%d@example.com" % i for i in range(151)]})
    assert too_many.json()["code"] == "out_of_range"


def test_import_is_accepted_then_applied_asynchronously(sandbox, brevo):
    import time

    requests.post(sandbox.url + "/_sandbox/brevo/settings", json={"import_delay_seconds": 0.2})
    response = brevo("POST", "/contacts/import", json={"jsonBody": [{"email": "i@example.com", "attributes": {"FIRSTNAME": "I", "NOPE": 1}}], "listIds": [2]})
    assert response.status_code == 202
    process = response.json()["processId"]
    assert brevo("GET", "/processes/%d" % process).json()["status"] in ("queued", "in_process")
    time.sleep(0.4)
    assert brevo("GET", "/processes/%d" % process).json()["status"] == "completed"
    assert brevo("GET", "/contacts/i@example.com").json()["attributes"] == {"FIRSTNAME": "I"}


def test_rate_limit_answers_429_with_reset_header_and_no_retry_after(sandbox, brevo):
    requests.post(sandbox.url + "/_sandbox/brevo/faults", json={"rate_limit": {"requests": 3, "seconds": 2}})
    statuses = [brevo("POST", "/contacts", json={"email": "r%d@example.com" % i}) for i in range(4)]
    assert [r.status_code for r in statuses] == [201, 201, 201, 429]
    limited = statuses[-1]
    assert limited.json() == {"code": "too_many_requests", "message": "The expected rate limit is exceeded."}
    assert limited.headers["x-sib-ratelimit-remaining"] == "0"
    assert int(limited.headers["x-sib-ratelimit-reset"]) >= 1
    assert "Retry-After" not in limited.headers
    assert statuses[0].headers["x-sib-ratelimit-limit"] == "3"
