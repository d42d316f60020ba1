import json

import pytest
import requests

from integrations.sandbox.hubspot import ACCESS_TOKEN

UPSERT = "/crm/v3/objects/contacts/batch/upsert"


@pytest.fixture
def hubspot(sandbox):
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + ACCESS_TOKEN

    def call(method, path, **kwargs):
        return session.request(method, sandbox.url + "/hubspot" + path, timeout=5, **kwargs)

    return call


def upsert_input(email, **properties):
    return {"id": email, "idProperty": "email", "properties": properties}


def test_bad_token_is_401_invalid_authentication(sandbox):
    response = requests.post(sandbox.url + "/hubspot" + UPSERT, json={"inputs": []}, headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.json()["category"] == "INVALID_AUTHENTICATION" and response.json()["status"] == "error"


def test_upsert_creates_then_updates_and_says_which(hubspot):
    first = hubspot("POST", UPSERT, json={"inputs": [upsert_input("Ann@Example.com", firstname="Ann")]}).json()
    assert first["status"] == "COMPLETE" and first["results"][0]["new"] is True
    again = hubspot("POST", UPSERT, json={"inputs": [upsert_input("ann@example.com", lastname="Lee")]}).json()
    assert again["results"][0]["new"] is False and again["results"][0]["id"] == first["results"][0]["id"]
    stored = hubspot("GET", "/crm/v3/objects/contacts/ann@example.com", params={"idProperty": "email"}).json()
    assert (stored["properties"]["firstname"], stored["properties"]["lastname"]) == ("Ann", "Lee")


def test_a_bad_record_rejects_the_whole_batch_with_the_property_error(hubspot):
    inputs = [upsert_input("good@example.com"), upsert_input("bad@", firstname="B")]
    response = hubspot("POST", UPSERT, json={"inputs": inputs})
    assert response.status_code == 400 and response.json()["category"] == "VALIDATION_ERROR"
    details = json.loads(response.json()["message"].split(": ", 1)[1])
    assert details == [{"isValid": False, "message": "Email address bad@ is invalid", "error": "INVALID_EMAIL", "name": "email"}]
    assert hubspot("GET", "/crm/v3/objects/contacts/good@example.com", params={"idProperty": "email"}).status_code == 404


def test_unknown_property_and_over_100_inputs_and_duplicates(hubspot):
    unknown = hubspot("POST", UPSERT, json={"inputs": [upsert_input("a@example.com", nope="x")]}).json()
    assert "PROPERTY_DOESNT_EXIST" in unknown["message"]
    too_many = hubspot("POST", UPSERT, json={"inputs": [upsert_input("p%d@example.com" % i) for i in range(101)]})
    assert too_many.status_code == 400
    twice = hubspot("POST", UPSERT, json={"inputs": [upsert_input("a@example.com"), upsert_input("A@example.com")]})
    assert "Duplicate IDs" in twice.json()["message"]


def test_results_do_not_keep_input_order(hubspot):
    inputs = [upsert_input("p%02d@example.com" % i) for i in range(30)]
    results = hubspot("POST", UPSERT, json={"inputs": inputs}).json()["results"]
    emails = [r["properties"]["email"] for r in results]
    assert sorted(emails) == [i["id"] for i in inputs] and emails != [i["id"] for i in inputs]


def test_create_conflict_names_the_existing_id_and_trace_ids_give_207(hubspot):
    created = hubspot("POST", "/crm/v3/objects/contacts", json={"properties": {"email": "a@example.com"}}).json()
    conflict = hubspot("POST", "/crm/v3/objects/contacts", json={"properties": {"email": "A@example.com"}})
    assert conflict.status_code == 409
    assert conflict.json()["message"] == "Contact already exists. Existing ID: %s" % created["id"]
    batch = [{"properties": {"email": "a@example.com"}, "objectWriteTraceId": "t1"}, {"properties": {"email": "n@example.com"}, "objectWriteTraceId": "t2"}]
    multi = hubspot("POST", "/crm/v3/objects/contacts/batch/create", json={"inputs": batch})
    assert multi.status_code == 207 and multi.json()["numErrors"] == 1
    assert multi.json()["errors"][0]["context"] == {"objectWriteTraceId": ["t1"]}


def test_batch_update_by_email_is_refused(hubspot):
    response = hubspot("POST", "/crm/v3/objects/contacts/batch/update", json={"inputs": [{"id": "a@example.com", "idProperty": "email", "properties": {}}]})
    assert "non-unique 0-1 property" in response.json()["message"]


def test_search_does_not_see_records_younger_than_the_index_lag(sandbox, hubspot):
    import time

    requests.post(sandbox.url + "/_sandbox/hubspot/settings", json={"search_index_lag_seconds": 0.3})
    hubspot("POST", UPSERT, json={"inputs": [upsert_input("s@example.com")]})
    query = {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": "s@example.com"}]}]}
    assert hubspot("POST", "/crm/v3/objects/contacts/search", json=query).json()["total"] == 0
    time.sleep(0.35)
    assert hubspot("POST", "/crm/v3/objects/contacts/search", json=query).json()["total"] == 1


def test_properties_are_created_once(hubspot):
    definition = {"name": "lead_source", "label": "Lead source", "type": "string", "fieldType": "text", "groupName": "contactinformation"}
    assert hubspot("POST", "/crm/v3/properties/contacts", json=definition).status_code == 201
    again = hubspot("POST", "/crm/v3/properties/contacts", json=definition)
    assert (again.status_code, again.json()["category"]) == (409, "OBJECT_ALREADY_EXISTS")
    assert "Property label is required." in hubspot("POST", "/crm/v3/properties/contacts", json={"name": "x"}).json()["message"]


def test_the_date_versioned_path_is_an_alias(hubspot):
    response = hubspot("POST", "/crm/objects/2026-03/contacts/batch/upsert", json={"inputs": [upsert_input("v@example.com")]})
    assert response.status_code == 200


def test_rolling_window_429_body_and_headers(sandbox, hubspot):
    requests.post(sandbox.url + "/_sandbox/hubspot/faults", json={"rate_limit": {"requests": 2, "seconds": 5}})
    answers = [hubspot("POST", UPSERT, json={"inputs": [upsert_input("w%d@example.com" % i)]}) for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    body = answers[2].json()
    assert (body["errorType"], body["policyName"]) == ("RATE_LIMIT", "TEN_SECONDLY_ROLLING")
    assert answers[2].headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "5000"
    assert answers[1].headers["X-HubSpot-RateLimit-Remaining"] == "0"
    assert "Retry-After" not in answers[2].headers
