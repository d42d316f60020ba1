import json
import time
import uuid

import pytest
import requests

from crm_sandbox.base import DailyQuota
from crm_sandbox.hubspot import ACCESS_TOKEN

CONTACTS = "/crm/v3/objects/contacts"
UPSERT = CONTACTS + "/batch/upsert"
SEARCH = CONTACTS + "/search"


def upsert_input(email, **properties):
    return {"id": email, "idProperty": "email", "properties": properties}


def property_errors(response):
    """The per-property details HubSpot puts as JSON text inside the message."""
    prefix = "Property values were not valid: "
    message = response.json()["message"]
    assert message.startswith(prefix), message
    return json.loads(message[len(prefix) :])


def by_email(email):
    return {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": email}]}]}


# Auth and errors


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": ACCESS_TOKEN}])
def test_a_missing_or_bad_token_is_401_invalid_authentication(sandbox, headers):
    response = requests.post(sandbox.url + "/hubspot" + UPSERT, json={"inputs": []}, headers=headers, timeout=5)
    body = response.json()
    assert response.status_code == 401
    assert (body["status"], body["category"]) == ("error", "INVALID_AUTHENTICATION")
    assert body["message"].startswith(
        "Authentication credentials not found. This API supports OAuth 2.0 authentication"
    )
    assert uuid.UUID(body["correlationId"])


# Single contact


def test_create_returns_a_simple_public_object_and_a_second_create_conflicts(hubspot):
    created = hubspot("POST", CONTACTS, json={"properties": {"email": "Ann@Example.com", "firstname": "Ann"}})
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"id", "properties", "createdAt", "updatedAt", "archived"} and body["archived"] is False
    assert (body["id"], body["properties"]["email"], body["properties"]["hs_object_id"]) == (
        "1",
        "ann@example.com",
        "1",
    )

    conflict = hubspot("POST", CONTACTS, json={"properties": {"email": "ANN@example.com"}})
    assert conflict.status_code == 409
    assert conflict.json()["message"] == "Contact already exists. Existing ID: 1"
    assert conflict.json()["category"] == "CONFLICT"


def test_get_and_patch_by_id_or_by_email(hubspot):
    hubspot("POST", CONTACTS, json={"properties": {"email": "a@example.com", "firstname": "A", "company": "Acme"}})
    default = hubspot("GET", CONTACTS + "/1").json()["properties"]
    assert set(default) == {"createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"}
    assert default["lastname"] is None
    asked = hubspot(
        "GET", CONTACTS + "/a@example.com", params={"idProperty": "email", "properties": "company,phone"}
    ).json()
    assert (asked["properties"]["company"], asked["properties"]["phone"]) == ("Acme", None)

    patched = hubspot(
        "PATCH", CONTACTS + "/A@example.com", params={"idProperty": "email"}, json={"properties": {"lastname": "Lee"}}
    )
    assert (patched.status_code, patched.json()["properties"]["lastname"]) == (200, "Lee")
    missing = hubspot("GET", CONTACTS + "/99")
    assert (missing.status_code, missing.json()["message"], missing.json()["category"]) == (
        404,
        "resource not found",
        "OBJECT_NOT_FOUND",
    )
    assert (
        hubspot(
            "PATCH", CONTACTS + "/x@example.com", params={"idProperty": "email"}, json={"properties": {}}
        ).status_code
        == 404
    )


def test_an_invalid_email_gives_the_property_values_wrapper(hubspot):
    response = hubspot("POST", CONTACTS, json={"properties": {"email": "foo"}})
    assert (response.status_code, response.json()["category"]) == (400, "VALIDATION_ERROR")
    assert response.json()["message"] == (
        'Property values were not valid: [{"isValid":false,"message":"Email address foo is invalid",'
        '"error":"INVALID_EMAIL","name":"email"}]'
    )


@pytest.mark.parametrize(
    "properties, expected",
    [
        (
            {"foo": "x"},
            {
                "isValid": False,
                "message": 'Property "foo" does not exist',
                "error": "PROPERTY_DOESNT_EXIST",
                "name": "foo",
            },
        ),
        ({"firstname": "x" * 65_537}, "INVALID_LONG_STRING"),
        ({"hs_object_id": "5"}, "READ_ONLY_VALUE"),
        ({"lifecyclestage": "royalty"}, "INVALID_OPTION"),
    ],
)
def test_bad_property_values(hubspot, properties, expected):
    response = hubspot("POST", CONTACTS, json={"properties": {"email": "a@example.com", **properties}})
    assert response.status_code == 400
    [error] = property_errors(response)
    assert error == expected if isinstance(expected, dict) else error["error"] == expected


def test_a_contact_without_email_is_allowed(hubspot):
    assert hubspot("POST", CONTACTS, json={"properties": {"firstname": "NoMail"}}).status_code == 201


# Batch upsert


def test_upsert_creates_then_updates_and_says_which(hubspot):
    first = hubspot("POST", UPSERT, json={"inputs": [upsert_input("Ann@Example.com", firstname="Ann")]})
    assert first.status_code == 200
    body = first.json()
    assert (body["status"], body["results"][0]["new"]) == ("COMPLETE", True)
    assert {"startedAt", "completedAt"} <= set(body)
    again = hubspot("POST", UPSERT, json={"inputs": [upsert_input("ann@example.com", lastname="Lee")]}).json()
    assert (again["results"][0]["new"], again["results"][0]["id"]) == (False, body["results"][0]["id"])
    stored = hubspot("GET", CONTACTS + "/ann@example.com", params={"idProperty": "email"}).json()
    assert (stored["properties"]["firstname"], stored["properties"]["lastname"]) == ("Ann", "Lee")


def test_results_come_back_shuffled_so_clients_match_on_email(hubspot):
    inputs = [upsert_input("p%02d@example.com" % i, firstname="P%d" % i) for i in range(30)]
    results = hubspot("POST", UPSERT, json={"inputs": inputs}).json()["results"]
    emails = [r["properties"]["email"] for r in results]
    assert sorted(emails) == [i["id"] for i in inputs] and emails != [i["id"] for i in inputs]
    assert all(r["properties"]["firstname"] == "P%d" % int(r["properties"]["email"][1:3]) for r in results)


def test_one_bad_record_rejects_the_whole_batch_naming_the_first(hubspot):
    inputs = [
        upsert_input("good@example.com"),
        upsert_input("bad@", firstname="B"),
        upsert_input("also@", firstname="C"),
    ]
    response = hubspot("POST", UPSERT, json={"inputs": inputs})
    assert (response.status_code, response.json()["category"]) == (400, "VALIDATION_ERROR")
    assert property_errors(response) == [
        {"isValid": False, "message": "Email address bad@ is invalid", "error": "INVALID_EMAIL", "name": "email"}
    ]
    assert hubspot("GET", CONTACTS + "/good@example.com", params={"idProperty": "email"}).status_code == 404, (
        "nothing applied"
    )


@pytest.mark.parametrize("count", [0, 101])
def test_inputs_must_number_1_to_100(hubspot, count):
    response = hubspot("POST", UPSERT, json={"inputs": [upsert_input("p%d@example.com" % i) for i in range(count)]})
    assert (response.status_code, response.json()["category"]) == (400, "VALIDATION_ERROR")
    assert response.json()["message"].startswith("Invalid input JSON on line 1, column ")
    assert response.json()["message"].endswith("inputs: size must be between 1 and 100")
    assert (
        hubspot("POST", UPSERT, json={"inputs": [upsert_input("p%d@example.com" % i) for i in range(100)]}).status_code
        == 200
    )


def test_two_inputs_for_one_contact_are_refused(hubspot):
    twice = hubspot(
        "POST",
        UPSERT,
        json={"inputs": [upsert_input("a@example.com"), upsert_input("b@example.com"), upsert_input("A@example.com")]},
    )
    assert (twice.status_code, twice.json()["message"]) == (400, "Duplicate IDs found in batch input: [a@example.com]")


def test_upsert_needs_id_and_properties_and_a_unique_id_property(hubspot):
    response = hubspot("POST", UPSERT, json={"inputs": [{"idProperty": "email", "id": "a@example.com"}]})
    assert response.status_code == 400 and "properties" in response.json()["message"]
    by_name = hubspot("POST", UPSERT, json={"inputs": [{"id": "Ann", "idProperty": "firstname", "properties": {}}]})
    assert by_name.json()["message"] == "Unable to perform update/upsert by non-unique 0-1 property"


def test_upsert_without_id_property_takes_the_id_for_a_record_id(hubspot):
    record_id = hubspot("POST", UPSERT, json={"inputs": [upsert_input("ann@example.com")]}).json()["results"][0]["id"]

    by_record = hubspot("POST", UPSERT, json={"inputs": [{"id": record_id, "properties": {"lastname": "Lee"}}]})

    assert by_record.status_code == 200
    [result] = by_record.json()["results"]
    assert (result["id"], result["new"], result["properties"]["lastname"]) == (record_id, False, "Lee")
    unknown = hubspot("POST", UPSERT, json={"inputs": [{"id": "999999", "properties": {"lastname": "X"}}]})
    assert unknown.status_code == 207 and unknown.json()["errors"][0]["context"] == {"ids": ["999999"]}
    assert unknown.json()["results"] == [], "a record ID is HubSpot's to give: nothing is created"


# Batch create, update, read


def test_batch_create_without_trace_ids_fails_whole_on_an_existing_email(hubspot):
    hubspot("POST", CONTACTS, json={"properties": {"email": "a@example.com"}})
    inputs = [{"properties": {"email": "n@example.com"}}, {"properties": {"email": "A@example.com"}}]
    response = hubspot("POST", CONTACTS + "/batch/create", json={"inputs": inputs})
    assert (response.status_code, response.json()["message"]) == (409, "Contact already exists. Existing ID: 1")
    assert hubspot("GET", CONTACTS + "/n@example.com", params={"idProperty": "email"}).status_code == 404


def test_batch_create_with_trace_ids_answers_207_per_record(hubspot):
    hubspot("POST", CONTACTS, json={"properties": {"email": "a@example.com"}})
    inputs = [
        {"properties": {"email": "a@example.com"}, "objectWriteTraceId": "t1"},
        {"properties": {"email": "n@example.com"}, "objectWriteTraceId": "t2"},
    ]
    response = hubspot("POST", CONTACTS + "/batch/create", json={"inputs": inputs})
    body = response.json()
    assert (response.status_code, body["status"], body["numErrors"]) == (207, "COMPLETE", 1)
    assert [r["properties"]["email"] for r in body["results"]] == ["n@example.com"]
    error = body["errors"][0]
    assert (error["category"], error["message"], error["context"]) == (
        "CONFLICT",
        "Contact already exists. Existing ID: 1",
        {"objectWriteTraceId": ["t1"]},
    )
    all_new = [{"properties": {"email": "z@example.com"}}]
    assert hubspot("POST", CONTACTS + "/batch/create", json={"inputs": all_new}).status_code == 201


def test_batch_update_by_email_is_refused_and_by_id_works(hubspot):
    hubspot("POST", CONTACTS, json={"properties": {"email": "a@example.com"}})
    by_email_input = {"inputs": [{"id": "a@example.com", "idProperty": "email", "properties": {"firstname": "A"}}]}
    refused = hubspot("POST", CONTACTS + "/batch/update", json=by_email_input)
    assert (refused.status_code, refused.json()["message"]) == (
        400,
        "Unable to perform update/upsert by non-unique 0-1 property",
    )
    updated = hubspot(
        "POST", CONTACTS + "/batch/update", json={"inputs": [{"id": "1", "properties": {"firstname": "A"}}]}
    )
    assert (updated.status_code, updated.json()["results"][0]["properties"]["firstname"]) == (200, "A")
    partly = hubspot(
        "POST",
        CONTACTS + "/batch/update",
        json={"inputs": [{"id": "1", "properties": {}}, {"id": "99", "properties": {}}]},
    )
    assert (partly.status_code, partly.json()["errors"][0]["context"]) == (207, {"ids": ["99"]})


def test_batch_read_returns_what_it_found(hubspot):
    hubspot("POST", UPSERT, json={"inputs": [upsert_input("a@example.com", company="Acme")]})
    body = {
        "inputs": [{"id": "a@example.com"}, {"id": "x@example.com"}],
        "idProperty": "email",
        "properties": ["company"],
    }
    response = hubspot("POST", CONTACTS + "/batch/read", json=body)
    assert response.status_code == 207
    assert [r["properties"]["company"] for r in response.json()["results"]] == ["Acme"]
    assert response.json()["errors"][0]["category"] == "OBJECT_NOT_FOUND"


# Search


def test_search_does_not_see_writes_younger_than_the_index_lag(hubspot, control):
    control("POST", "/hubspot/settings", json={"search_index_lag_seconds": 0.3})
    hubspot("POST", UPSERT, json={"inputs": [upsert_input("s@example.com", firstname="Old")]})
    assert hubspot("POST", SEARCH, json=by_email("S@example.com")).json() == {"total": 0, "results": []}
    time.sleep(0.35)
    found = hubspot("POST", SEARCH, json=by_email("S@example.com")).json()
    assert (found["total"], found["results"][0]["properties"]["firstname"]) == (1, "Old")

    hubspot("POST", UPSERT, json={"inputs": [upsert_input("s@example.com", firstname="New")]})
    stale = hubspot("POST", SEARCH, json={**by_email("s@example.com"), "properties": ["firstname"]}).json()
    assert stale["results"][0]["properties"]["firstname"] == "Old", "the index still has the earlier version"


def test_search_pages_with_after_and_caps_limit_at_200(hubspot, control):
    control("POST", "/hubspot/settings", json={"search_index_lag_seconds": 0})
    hubspot("POST", UPSERT, json={"inputs": [upsert_input("p%d@example.com" % i, company="Acme") for i in range(5)]})
    query = {
        "filterGroups": [{"filters": [{"propertyName": "company", "operator": "EQ", "value": "acme"}]}],
        "limit": 2,
    }
    first = hubspot("POST", SEARCH, json=query).json()
    assert (first["total"], len(first["results"]), first["paging"]["next"]["after"]) == (5, 2, "2")
    last = hubspot("POST", SEARCH, json={**query, "after": "4"}).json()
    assert len(last["results"]) == 1 and "paging" not in last
    too_big = hubspot("POST", SEARCH, json={**query, "limit": 201})
    assert (too_big.status_code, too_big.json()["category"]) == (400, "VALIDATION_ERROR")


def test_search_has_its_own_limit_of_4_per_second(hubspot):
    answers = [hubspot("POST", SEARCH, json=by_email("x@example.com")) for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 429]
    body = answers[-1].json()
    assert (body["errorType"], body["policyName"], body["message"]) == (
        "RATE_LIMIT",
        "SECONDLY",
        "You have reached your secondly limit.",
    )
    assert "X-HubSpot-RateLimit-Remaining" not in answers[0].headers
    assert hubspot("GET", CONTACTS + "/1").headers["X-HubSpot-RateLimit-Remaining"] == "99", (
        "searches are not in the window"
    )


# Properties and lists


def test_properties_are_listed_created_once_and_need_their_fields(hubspot):
    names = {p["name"] for p in hubspot("GET", "/crm/v3/properties/contacts").json()["results"]}
    assert {"email", "firstname", "lastname", "phone", "company", "website", "lifecyclestage", "hs_object_id"} <= names
    definition = {
        "name": "lead_source",
        "label": "Lead source",
        "type": "string",
        "fieldType": "text",
        "groupName": "contactinformation",
    }
    created = hubspot("POST", "/crm/v3/properties/contacts", json=definition)
    assert (created.status_code, created.json()["name"], created.json()["hubspotDefined"]) == (
        201,
        "lead_source",
        False,
    )
    again = hubspot("POST", "/crm/v3/properties/contacts", json=definition)
    assert again.status_code == 409
    assert (again.json()["message"], again.json()["category"]) == (
        "Property named 'lead_source' already exists.",
        "OBJECT_ALREADY_EXISTS",
    )
    incomplete = hubspot("POST", "/crm/v3/properties/contacts", json={"name": "x", "label": "X"})
    assert (incomplete.status_code, incomplete.json()["category"]) == (400, "VALIDATION_ERROR")
    assert incomplete.json()["message"].endswith("some of required attributes are not set [type, fieldType, groupName]")
    assert (
        hubspot("POST", UPSERT, json={"inputs": [upsert_input("a@example.com", lead_source="web")]}).status_code == 200
    )


def test_lists_take_members_by_record_id(hubspot):
    hubspot("POST", UPSERT, json={"inputs": [upsert_input("a@example.com")]})
    created = hubspot(
        "POST", "/crm/v3/lists", json={"name": "Leads", "objectTypeId": "0-1", "processingType": "MANUAL"}
    )
    assert created.status_code == 200
    listed = created.json()["list"]
    assert (listed["name"], listed["processingType"], listed["size"]) == ("Leads", "MANUAL", 0)
    added = hubspot("PUT", "/crm/v3/lists/%s/memberships/add" % listed["listId"], json=["1", "77"])
    assert (added.status_code, added.json()["recordIdsAdded"], added.json()["recordIdsMissing"]) == (200, ["1"], ["77"])
    assert hubspot("GET", "/crm/v3/lists/%s" % listed["listId"]).json()["list"]["size"] == 1
    assert hubspot("PUT", "/crm/v3/lists/999/memberships/add", json=["1"]).status_code == 404


# Paths and rate limits


def test_the_date_versioned_paths_are_aliases(hubspot):
    response = hubspot(
        "POST", "/crm/objects/2026-03/contacts/batch/upsert", json={"inputs": [upsert_input("v@example.com")]}
    )
    assert response.status_code == 200
    record_id = response.json()["results"][0]["id"]
    assert (
        hubspot("GET", "/crm/objects/2026-03/contacts/%s" % record_id).json()["properties"]["email"] == "v@example.com"
    )
    assert hubspot("GET", CONTACTS + "/%s" % record_id).status_code == 200


def test_the_rolling_window_answers_429_with_its_body_and_headers(hubspot, control):
    control("POST", "/hubspot/faults", json={"rate_limit": {"requests": 2, "seconds": 1}})
    answers = [hubspot("POST", UPSERT, json={"inputs": [upsert_input("w%d@example.com" % i)]}) for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    body = answers[2].json()
    assert (body["status"], body["errorType"], body["policyName"]) == ("error", "RATE_LIMIT", "TEN_SECONDLY_ROLLING")
    assert body["message"] == "You have reached your ten_secondly_rolling limit."
    assert {"correlationId", "groupName"} <= set(body)
    headers = answers[2].headers
    assert (headers["X-HubSpot-RateLimit-Max"], headers["X-HubSpot-RateLimit-Remaining"]) == ("2", "0")
    assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "1000"
    assert (headers["X-HubSpot-RateLimit-Daily"], headers["X-HubSpot-RateLimit-Daily-Remaining"]) == (
        "250000",
        "249998",
    )
    assert "Retry-After" not in headers
    assert answers[0].headers["X-HubSpot-RateLimit-Remaining"] == "1"


def test_retry_after_can_be_switched_on(hubspot, control):
    control("POST", "/hubspot/settings", json={"send_retry_after": True})
    control("POST", "/hubspot/faults", json={"rate_limit": {"requests": 1, "seconds": 10}})
    hubspot("GET", CONTACTS + "/1")
    assert hubspot("GET", CONTACTS + "/1").headers["Retry-After"] == "10"


def test_the_daily_cap(sandbox, hubspot):
    emulator = sandbox.emulator("hubspot")
    with emulator.lock:
        emulator.limits["daily"] = DailyQuota(1)
    assert hubspot("GET", CONTACTS + "/1").status_code == 404
    capped = hubspot("GET", CONTACTS + "/1")
    assert (capped.status_code, capped.json()["policyName"], capped.json()["message"]) == (
        429,
        "DAILY",
        "You have reached your daily limit.",
    )
    assert capped.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"
