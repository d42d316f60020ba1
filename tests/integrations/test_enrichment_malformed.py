"""The enrichment callback fed malformed bodies: a clear 4xx that names the
problem, and nothing stored; a failure while storing leaves nothing half-done."""

import json

import pytest
from django.db import DatabaseError
from django.test import Client

from contacts.models import Contact
from integrations.models import Enrichment

from .test_n8n_enrichment import SECRET, URL, callback

pytestmark = pytest.mark.django_db


@pytest.fixture
def post(settings, client):
    settings.N8N_INBOUND_SECRET = SECRET

    def send(body=None, raw=None, content_type="application/json", client=client):
        data = raw if raw is not None else json.dumps(body)
        return client.post(URL, data=data, content_type=content_type, HTTP_AUTHORIZATION="Bearer %s" % SECRET)

    return send


@pytest.fixture
def ann(db):
    return Contact.objects.create(email="ann@example.com", first_name="Ann")


def unchanged(contact):
    """Nothing reached the database: no Enrichment, the contact as it was."""
    fresh = Contact.objects.get(pk=contact.pk)
    return not Enrichment.objects.exists() and (fresh.phone, fresh.website, fresh.enrichment) == (
        contact.phone,
        contact.website,
        contact.enrichment,
    )


def bad_request(response):
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["success"] is False
    return body


@pytest.mark.parametrize(
    "raw, detail",
    [
        ("{not json", "Expecting property name"),
        ("  ", "Expecting value"),
        ('{"contact_id": 1,', "Expecting"),
        (b"\xff\xfe\x00garbage", ""),
        ('{"contact_id": 1} trailing', "Extra data"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
    ids=["broken", "empty", "truncated", "binary", "trailing-text", "deeply-nested"],
)
def test_a_body_that_is_not_json_is_400(post, ann, raw, detail):
    body = bad_request(post(raw=raw))
    assert body["error"].startswith("The body is not valid JSON")
    assert detail in body["error"]
    assert unchanged(ann)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(post, ann, constant):
    raw = json.dumps(callback(ann)).replace('"cost": 0.02', '"cost": %s' % constant)
    assert constant in raw
    body = bad_request(post(raw=raw))
    assert body["error"] == "The body is not valid JSON: %s is not a JSON number." % constant
    assert unchanged(ann)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml", ""],
)
def test_a_body_that_is_not_sent_as_json_is_415(post, ann, content_type):
    response = post(callback(ann), content_type=content_type)
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["error"]
    assert unchanged(ann)


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/vnd.n8n+json"])
def test_json_content_types_with_parameters_or_a_suffix_are_json(post, ann, content_type):
    assert post(callback(ann), content_type=content_type).status_code == 200


@pytest.mark.parametrize("body", [[], ["contact_id"], "complete", 42, None, True])
def test_json_that_is_not_an_object_is_400(post, ann, body):
    assert bad_request(post(body)) == {"success": False, "error": "body must be a JSON object", "field": "body"}


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("contact_id", "1", "must be a whole number of at least 1"),
        ("contact_id", 1.0, "must be a whole number of at least 1"),
        ("contact_id", True, "must be a whole number of at least 1"),
        ("contact_id", 0, "must be a whole number of at least 1"),
        ("contact_id", None, "is required"),
        ("enrichment_id", 7, "must be a string"),
        ("enrichment_id", "", "must not be empty"),
        ("enrichment_id", "   ", "must not be empty"),
        ("enrichment_id", "x" * 101, "is 101 characters long; the limit is 100"),
        ("enrichment_id", None, "is required"),
        ("status", "COMPLETE", "must be one of complete, partial, failed"),
        ("status", ["complete"], "must be one of complete, partial, failed"),
        ("status", None, "is required"),
        ("timestamp", 1764000000, "must be an ISO 8601 date and time with a time zone"),
        ("timestamp", "2026-11-22T10:00:00", "must be an ISO 8601 date and time with a time zone"),
        ("timestamp", "2026-11-22", "must be an ISO 8601 date and time with a time zone"),
        ("enriched_data", "lots", "must be a JSON object"),
        ("enriched_data", [], "must be a JSON object"),
        ("metadata", 3, "must be a JSON object"),
        ("error", {"message": "x"}, "must be a string"),
    ],
)
def test_a_top_level_field_of_the_wrong_type_is_named(post, ann, field, value, message):
    body = bad_request(post(callback(ann, **{field: value})))
    assert (body["field"], body["error"]) == (field, "%s %s" % (field, message))
    assert unchanged(ann)


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("enriched_data", "phone"), 4420794600, "must be a string"),
        (("enriched_data", "address"), "1 High St, London", "must be a JSON object"),
        (("enriched_data", "address", "city"), ["London"], "must be a string"),
        (("enriched_data", "address", "planet"), "Earth", "is not a known field"),
        (("enriched_data", "social_profiles", "linkedin"), {"url": "x"}, "must be a string"),
        (("enriched_data", "company", "name"), 42, "must be a string"),
        (("enriched_data", "company", "website"), "acme dot com", "is not a valid http(s) address"),
        (("enriched_data", "company", "description"), "x" * 5001, "is 5001 characters long; the limit is 5000"),
        (("enriched_data", "additional_emails"), "ann@acme.example.com", "must be a list of at most 50 items"),
        (
            ("enriched_data", "additional_emails"),
            ["a%d@example.com" % i for i in range(51)],
            "must be a list of at most 50 items",
        ),
        (("enriched_data", "confidence_score"), -1, "must be a whole number from 0 to 100"),
        (("enriched_data", "confidence_score"), 87.5, "must be a whole number from 0 to 100"),
        (("enriched_data", "confidence_score"), "87", "must be a whole number from 0 to 100"),
        (("enriched_data", "confidence_score"), False, "must be a whole number from 0 to 100"),
        (("enriched_data", "sources"), [1], "must be a string"),
        (("metadata", "duration_ms"), -1, "must be a whole number of at least 0"),
        (("metadata", "api_calls"), "3", "must be a whole number of at least 0"),
        (("metadata", "cost"), "0.02", "must be a number of at least 0"),
        (("metadata", "cost"), True, "must be a number of at least 0"),
        (("metadata", "currency"), "EURO", "is 4 characters long; the limit is 3"),
        (("metadata", "workflow_id"), 8, "must be a string"),
    ],
)
def test_a_nested_field_of_the_wrong_type_is_named_by_its_path(post, ann, path, value, message):
    data = callback(ann)
    target = data
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    body = bad_request(post(data))
    field = ".".join(path)
    if path[-1] == "sources":
        field += "[0]"
    assert body["field"] == field
    assert body["error"] == "%s %s" % (field, message)
    assert unchanged(ann)


@pytest.mark.parametrize("score", [0, 100])
def test_confidence_at_its_bounds_is_accepted(post, ann, score):
    data = callback(ann)
    data["enriched_data"]["confidence_score"] = score
    assert post(data).status_code == 200
    assert Contact.objects.get(pk=ann.pk).enrichment["confidence_score"] == score


@pytest.mark.parametrize(
    "text, problem",
    [("+44\x00 20", "must not contain NUL characters"), ("+44 \ud800", "must be valid Unicode text")],
    ids=["nul", "lone-surrogate"],
)
def test_text_a_database_cannot_store_is_400(post, ann, text, problem):
    data = callback(ann)
    data["enriched_data"]["phone"] = text
    body = bad_request(post(data))
    assert (body["field"], body["error"]) == ("enriched_data.phone", "enriched_data.phone %s" % problem)
    assert unchanged(ann)


@pytest.mark.parametrize("contact_id", [2**31, 2**63, 10**30])
def test_a_contact_id_beyond_any_database_id_is_404(post, ann, contact_id):
    response = post(callback(ann, contact_id=contact_id))
    assert response.status_code == 404
    assert response.json() == {"success": False, "error": "No contact has id %d." % contact_id, "field": "contact_id"}
    assert unchanged(ann)


def test_a_resent_enrichment_naming_another_contact_changes_neither(post, ann):
    bob = Contact.objects.create(email="bob@example.com")
    assert post(callback(ann)).status_code == 200
    ann_after_first = Contact.objects.get(pk=ann.pk)

    response = post(callback(bob, enriched_data={"phone": "+1 555 0100"}))

    assert response.status_code == 200
    assert response.json()["message"] == "Already received; nothing changed."
    assert response.json()["contact_id"] == ann.pk
    assert Contact.objects.get(pk=bob.pk).phone == ""
    assert Contact.objects.get(pk=ann.pk).enrichment == ann_after_first.enrichment
    assert Enrichment.objects.count() == 1


@pytest.mark.parametrize("failing", ["enrichment", "contact"])
def test_a_failure_while_storing_leaves_neither_the_enrichment_nor_the_contact_change(
    post, ann, monkeypatch, failing, caplog
):
    """The contact is written first and the Enrichment second; either failing
    rolls back both, and the caller is told to send it again."""
    if failing == "enrichment":
        monkeypatch.setattr(Enrichment.objects, "create", fail_write)
    else:
        monkeypatch.setattr(Contact, "save", fail_write)

    response = post(callback(ann), client=Client(raise_request_exception=False))

    assert response.status_code == 503
    assert response.json() == {
        "success": False,
        "error": "The enrichment could not be stored; nothing was changed. Send it again later.",
    }
    assert unchanged(ann)
    assert "could not store n8n enrichment enr-1" in caplog.text


def fail_write(*args, **kwargs):
    raise DatabaseError("disk full")


def test_after_a_failure_the_same_callback_sent_again_is_applied(post, ann, monkeypatch):
    monkeypatch.setattr(Enrichment.objects, "create", fail_write)
    assert post(callback(ann), client=Client(raise_request_exception=False)).status_code == 503
    monkeypatch.undo()

    response = post(callback(ann))

    assert response.status_code == 200
    assert response.json()["updated_fields"] == ["phone", "company", "website"]
    assert Enrichment.objects.get().contact_id == ann.pk
