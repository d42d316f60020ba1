import time

import pytest
import requests

from crm_sandbox.brevo import API_KEY

DUPLICATE_EMAIL = {
    "code": "duplicate_parameter",
    "message": "Unable to create contact, email is already associated with another Contact",
    "metadata": {"duplicate_identifiers": ["email"]},
}


def wait_for(check, seconds=3.0):
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.05)


# Auth


@pytest.mark.parametrize(
    "headers", [{}, {"api-key": "xkeysib-wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}]
)
def test_a_missing_or_wrong_key_is_401_key_not_found(sandbox, headers):
    response = requests.post(
        sandbox.url + "/brevo/v3/contacts", json={"email": "a@example.com"}, headers=headers, timeout=5
    )
    assert (response.status_code, response.json()) == (401, {"code": "unauthorized", "message": "Key not found"})


def test_a_bearer_token_is_accepted_too(sandbox):
    headers = {"Authorization": "Bearer " + API_KEY}
    response = requests.post(
        sandbox.url + "/brevo/v3/contacts", json={"email": "a@example.com"}, headers=headers, timeout=5
    )
    assert response.status_code == 201


# Create, update, get, delete


def test_create_then_upsert_then_duplicate(brevo):
    created = brevo("POST", "/contacts", json={"email": "Ann@Example.com", "attributes": {"firstname": "Ann"}})
    assert (created.status_code, created.json()) == (201, {"id": 1})

    updated = brevo(
        "POST", "/contacts", json={"email": "ann@example.com", "attributes": {"LASTNAME": "Lee"}, "updateEnabled": True}
    )
    assert (updated.status_code, updated.content, updated.headers["Content-Length"]) == (204, b"", "0")

    refused = brevo("POST", "/contacts", json={"email": "ANN@example.com"})
    assert (refused.status_code, refused.json()) == (400, DUPLICATE_EMAIL)

    stored = brevo("GET", "/contacts/ann@example.com").json()
    assert stored["attributes"] == {"FIRSTNAME": "Ann", "LASTNAME": "Lee"}, "merged, names upper-cased"
    assert set(stored) >= {
        "id",
        "email",
        "attributes",
        "listIds",
        "emailBlacklisted",
        "smsBlacklisted",
        "createdAt",
        "modifiedAt",
    }
    assert (stored["id"], stored["email"], stored["emailBlacklisted"]) == (1, "ann@example.com", False)
    assert brevo("GET", "/contacts/1").json()["email"] == "ann@example.com"


# The keys brevo-python 5.1's models require: GetContactInfoResponse (GET one contact)
# and GetContactDetails (each item of GET /contacts); the older SDK's
# GetExtendedContactDetails also refused an answer without `statistics`.
CONTACT_DETAILS_KEYS = {
    "attributes",
    "createdAt",
    "emailBlacklisted",
    "id",
    "listIds",
    "modifiedAt",
    "smsBlacklisted",
    "whatsappBlacklisted",
}


def test_get_answers_every_key_the_sdk_requires(brevo):
    brevo("POST", "/contacts", json={"email": "ann@example.com"})
    one = brevo("GET", "/contacts/ann@example.com").json()
    assert set(one) >= CONTACT_DETAILS_KEYS | {"statistics"}
    assert isinstance(one["statistics"], dict) and one["whatsappBlacklisted"] is False
    [listed] = brevo("GET", "/contacts").json()["contacts"]
    assert set(listed) >= CONTACT_DETAILS_KEYS


@pytest.mark.parametrize(
    "body, code, message",
    [
        ({"email": "not-an-email"}, "invalid_parameter", "Invalid email address"),
        (
            {"attributes": {"FIRSTNAME": "x"}},
            "missing_parameter",
            "Please provide Email or SMS attribute value to create user",
        ),
        (
            {"email": "a@example.com", "attributes": {"SMS": "020 7946 0000"}},
            "invalid_parameter",
            "Invalid phone number",
        ),
        ({"email": "a@example.com", "attributes": {"SMS": "+44 20"}}, "invalid_parameter", "Invalid phone number"),
    ],
)
def test_validation_errors(brevo, body, code, message):
    response = brevo("POST", "/contacts", json=body)
    assert (response.status_code, response.json()) == (400, {"code": code, "message": message})


def test_an_attribute_over_5000_characters_is_refused(brevo):
    response = brevo("POST", "/contacts", json={"email": "a@example.com", "attributes": {"FIRSTNAME": "x" * 5001}})
    assert (response.status_code, response.json()["code"]) == (400, "invalid_parameter")
    assert (
        brevo("POST", "/contacts", json={"email": "a@example.com", "attributes": {"FIRSTNAME": "x" * 5000}}).status_code
        == 201
    )


def test_an_sms_only_contact_is_created_and_found_by_phone(brevo):
    created = brevo("POST", "/contacts", json={"attributes": {"SMS": "+44 (20) 7946-0000"}})
    assert created.status_code == 201
    stored = brevo("GET", "/contacts/+442079460000", params={"identifierType": "phone_id"}).json()
    assert stored["attributes"] == {"SMS": "442079460000"}, "kept as digits with the country code"
    assert brevo("GET", "/contacts/00442079460000", params={"identifierType": "phone_id"}).json()["id"] == stored["id"]


def test_an_sms_taken_by_another_contact_is_refused_even_with_update_enabled(brevo):
    brevo("POST", "/contacts", json={"email": "a@example.com", "attributes": {"SMS": "+442079460000"}})
    response = brevo(
        "POST",
        "/contacts",
        json={"email": "b@example.com", "attributes": {"SMS": "+44 20 7946 0000"}, "updateEnabled": True},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "duplicate_parameter"
    assert response.json()["metadata"] == {"duplicate_identifiers": ["SMS"]}
    assert brevo("GET", "/contacts/b@example.com").status_code == 404


def test_unknown_attributes_are_dropped_by_default_or_rejected(sandbox, brevo, control):
    assert (
        brevo("POST", "/contacts", json={"email": "a@example.com", "attributes": {"COMPANY": "Acme"}}).status_code
        == 201
    )
    assert brevo("GET", "/contacts/a@example.com").json()["attributes"] == {}

    assert control("POST", "/brevo/settings", json={"unknown_attributes": "reject"}).status_code == 200
    response = brevo("POST", "/contacts", json={"email": "b@example.com", "attributes": {"company": "Acme"}})
    assert (response.status_code, response.json()) == (
        400,
        {"code": "invalid_parameter", "message": "Attribute COMPANY does not exist"},
    )

    assert brevo("POST", "/contacts/attributes/normal/company", json={"type": "text"}).status_code == 201
    assert (
        brevo("POST", "/contacts", json={"email": "b@example.com", "attributes": {"Company": "Acme"}}).status_code
        == 201
    )
    assert brevo("GET", "/contacts/b@example.com").json()["attributes"] == {"COMPANY": "Acme"}


def test_put_updates_and_unknown_contacts_are_404(brevo):
    brevo("POST", "/contacts", json={"email": "a@example.com", "ext_id": "crm-7"})
    assert brevo("PUT", "/contacts/a@example.com", json={"attributes": {"FIRSTNAME": "A"}}).status_code == 204
    assert brevo("GET", "/contacts/crm-7", params={"identifierType": "ext_id"}).json()["attributes"] == {
        "EXT_ID": "crm-7",
        "FIRSTNAME": "A",
    }
    missing = brevo("PUT", "/contacts/x@example.com", json={"attributes": {"FIRSTNAME": "X"}})
    assert (missing.status_code, missing.json()) == (
        404,
        {"code": "document_not_found", "message": "Contact does not exist"},
    )


def test_put_can_change_the_email_but_not_to_a_taken_one(brevo):
    brevo("POST", "/contacts", json={"email": "a@example.com"})
    brevo("POST", "/contacts", json={"email": "b@example.com"})
    assert brevo("PUT", "/contacts/1", json={"attributes": {"EMAIL": "new@example.com"}}).status_code == 204
    assert brevo("GET", "/contacts/new@example.com").json()["id"] == 1
    taken = brevo("PUT", "/contacts/1", json={"attributes": {"EMAIL": "b@example.com"}})
    assert taken.json()["metadata"] == {"duplicate_identifiers": ["email"]}


def test_delete(brevo):
    brevo("POST", "/contacts", json={"email": "a@example.com"})
    assert brevo("DELETE", "/contacts/a@example.com").status_code == 204
    assert brevo("GET", "/contacts/a@example.com").status_code == 404
    assert brevo("DELETE", "/contacts/a@example.com").status_code == 404


# Batch update


def test_batch_update_applies_every_contact(brevo):
    brevo("POST", "/contacts", json={"email": "a@example.com"})
    brevo("POST", "/contacts", json={"email": "b@example.com"})
    body = {
        "contacts": [
            {"email": "a@example.com", "attributes": {"FIRSTNAME": "A"}},
            {"id": 2, "attributes": {"FIRSTNAME": "B"}},
        ]
    }
    response = brevo("POST", "/contacts/batch", json=body)
    assert (response.status_code, response.content) == (204, b"")
    assert [brevo("GET", "/contacts/%d" % i).json()["attributes"] for i in (1, 2)] == [
        {"FIRSTNAME": "A"},
        {"FIRSTNAME": "B"},
    ]


def test_batch_update_fails_whole_when_one_contact_is_unknown(brevo):
    brevo("POST", "/contacts", json={"email": "a@example.com"})
    body = {
        "contacts": [
            {"email": "a@example.com", "attributes": {"FIRSTNAME": "A"}},
            {"email": "x@example.com"},
            {"id": 99},
        ]
    }
    response = brevo("POST", "/contacts/batch", json=body)
    assert (response.status_code, response.json()) == (
        404,
        {"code": "document_not_found", "message": "No contact found for indexes 1,2"},
    )
    assert brevo("GET", "/contacts/a@example.com").json()["attributes"] == {}, "nothing applied"


# Lists


def test_lists_are_created_listed_and_joined(brevo):
    created = brevo("POST", "/contacts/lists", json={"name": "Leads", "folderId": 1})
    assert created.status_code == 201
    list_id = created.json()["id"]
    lists = brevo("GET", "/contacts/lists").json()
    assert lists["count"] == 2 and {"id": list_id, "name": "Leads"}.items() <= lists["lists"][0].items()

    assert brevo("POST", "/contacts", json={"email": "a@example.com", "listIds": [list_id]}).status_code == 201
    brevo("POST", "/contacts", json={"email": "b@example.com"})
    assert brevo("GET", "/contacts/a@example.com").json()["listIds"] == [list_id]
    added = brevo(
        "POST",
        "/contacts/lists/%d/contacts/add" % list_id,
        json={"emails": ["a@example.com", "b@example.com", "x@example.com"]},
    )
    assert (added.status_code, added.json()) == (
        201,
        {"contacts": {"success": ["b@example.com"], "failure": ["a@example.com", "x@example.com"]}},
    )


def test_unknown_lists_and_too_many_contacts_for_one_list_call(brevo):
    missing = brevo("POST", "/contacts", json={"email": "b@example.com", "listIds": [999]})
    assert (missing.status_code, missing.json()) == (
        404,
        {"code": "document_not_found", "message": "List ID does not exist"},
    )
    assert brevo("POST", "/contacts/lists/999/contacts/add", json={"emails": ["b@example.com"]}).status_code == 404
    too_many = brevo(
        "POST", "/contacts/lists/2/contacts/add", json={"emails": ["x%d@example.com" % i for i in range(151)]}
    )
    assert (too_many.status_code, too_many.json()["code"]) == (400, "out_of_range")


# Attributes


def test_attributes_are_listed_and_created_once(brevo):
    listed = brevo("GET", "/contacts/attributes").json()["attributes"]
    assert {"name": "FIRSTNAME", "category": "normal", "type": "text"} in listed
    assert {a["name"] for a in listed} >= {"EMAIL", "FIRSTNAME", "LASTNAME", "SMS"}

    empty = brevo("POST", "/contacts/attributes/normal/WEBSITE", json={})
    assert (empty.status_code, empty.json()) == (400, {"code": "missing_parameter", "message": "No inputs in the body"})
    created = brevo("POST", "/contacts/attributes/normal/WEBSITE", json={"type": "text"})
    assert (created.status_code, created.content) == (201, b"")
    again = brevo("POST", "/contacts/attributes/normal/website", json={"type": "text"})
    assert (again.status_code, again.json()) == (
        400,
        {"code": "invalid_parameter", "message": "Attribute name must be unique"},
    )
    assert brevo("POST", "/contacts/attributes/nonsense/OTHER", json={"type": "text"}).status_code == 400


# Import


def test_import_is_accepted_then_applied_after_the_delay(brevo, control):
    control("POST", "/brevo/settings", json={"import_delay_seconds": 0.3})
    brevo("POST", "/contacts", json={"email": "old@example.com", "attributes": {"FIRSTNAME": "Old"}})
    rows = [
        {"email": "new@example.com", "attributes": {"FIRSTNAME": "New", "NOPE": 1}},
        {"email": "old@example.com", "attributes": {"LASTNAME": "L"}},
    ]
    response = brevo("POST", "/contacts/import", json={"jsonBody": rows, "listIds": [2]})
    assert response.status_code == 202 and set(response.json()) == {"processId"}
    process = "/processes/%d" % response.json()["processId"]
    queued = brevo("GET", process).json()
    assert queued.pop("created_at")
    assert queued == {"id": response.json()["processId"], "name": "IMPORTUSER", "status": "queued"}
    assert brevo("GET", "/contacts/new@example.com").status_code == 404, "nothing applied yet"

    wait_for(lambda: brevo("GET", process).json()["status"] == "completed")
    assert brevo("GET", "/contacts/new@example.com").json()["attributes"] == {"FIRSTNAME": "New"}, (
        "unknown attribute ignored"
    )
    assert brevo("GET", "/contacts/old@example.com").json()["attributes"] == {"FIRSTNAME": "Old", "LASTNAME": "L"}
    assert brevo("GET", "/contacts/new@example.com").json()["listIds"] == [2]


def test_import_takes_a_semicolon_csv(brevo, control):
    control("POST", "/brevo/settings", json={"import_delay_seconds": 0})
    csv_body = "EMAIL;FIRSTNAME;LASTNAME\nc@example.com;Cat;Lee\nnot-an-email;X;Y\n"
    process = brevo("POST", "/contacts/import", json={"fileBody": csv_body, "listIds": [2]}).json()["processId"]
    wait_for(lambda: brevo("GET", "/processes/%d" % process).json()["status"] == "completed")
    assert brevo("GET", "/contacts/c@example.com").json()["attributes"] == {"FIRSTNAME": "Cat", "LASTNAME": "Lee"}
    assert brevo("GET", "/contacts").json()["count"] == 1, "the bad row is skipped"


def test_import_over_10_mb_is_refused(brevo):
    rows = [{"email": "p%d@example.com" % i, "attributes": {"FIRSTNAME": "x" * 1000}} for i in range(11_000)]
    response = brevo("POST", "/contacts/import", json={"jsonBody": rows, "listIds": [2]})
    assert (response.status_code, response.json()["code"]) == (400, "out_of_range")


# Rate limit


def test_rate_limit_answers_429_with_the_sib_headers_and_no_retry_after(brevo, control):
    control("POST", "/brevo/faults", json={"rate_limit": {"requests": 3, "seconds": 1}})
    answers = [brevo("POST", "/contacts", json={"email": "r%d@example.com" % i}) for i in range(4)]
    assert [a.status_code for a in answers] == [201, 201, 201, 429]
    limited = answers[-1]
    assert limited.json() == {"code": "too_many_requests", "message": "The expected rate limit is exceeded."}
    assert (limited.headers["x-sib-ratelimit-limit"], limited.headers["x-sib-ratelimit-remaining"]) == ("3", "0")
    assert limited.headers["x-sib-ratelimit-reset"] == "1", "seconds until a request is allowed, rounded up"
    assert "Retry-After" not in limited.headers
    assert [a.headers["x-sib-ratelimit-remaining"] for a in answers[:3]] == ["2", "1", "0"]

    assert brevo("GET", "/processes/1").status_code == 404, "only /v3/contacts* is limited"
    time.sleep(0.4)
    assert brevo("GET", "/contacts/r0@example.com").status_code == 200, "the bucket refills continuously"


def test_the_real_default_is_10_per_second(brevo):
    answers = [brevo("GET", "/contacts/attributes") for _ in range(12)]
    assert answers[0].headers["x-sib-ratelimit-limit"] == "10"
    assert 429 in [a.status_code for a in answers]
