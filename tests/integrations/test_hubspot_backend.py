"""HubSpotBackend against HubSpot's HTTP API, mocked with `responses`."""

import json
import logging
import random
import time

import pytest
import responses

from contacts.models import Contact
from integrations.backends.base import RATE_LIMIT_RETRIES, OutcomeKind
from integrations.backends.hubspot import HubSpotBackend
from integrations.exceptions import CRMUnavailable, InvalidContact
from integrations.ratelimit import share_pace

from .conftest import make_item, sent_json, unsaved_contact

API = "https://api.hubapi.com"
UPSERT = API + "/crm/v3/objects/contacts/batch/upsert"
TOKEN = "pat-na1-00000000-0000-0000-0000-000000000000"


@pytest.fixture
def hubspot(settings):
    settings.HUBSPOT_API_KEY = TOKEN
    settings.HUBSPOT_REQUESTS_PER_SECOND = 1000
    return HubSpotBackend


def contacts(count, bad=()):
    """Unsaved contacts p0@, p1@, ...; those at the `bad` indexes hold bad<i>@
    instead, an address this HubSpot double refuses, as a raw import could store."""
    return [
        unsaved_contact(email=("bad%d@example.com" if i in bad else "p%d@example.com") % i, first_name="P%d" % i)
        for i in range(count)
    ]


def push(backend_class, people):
    backend = backend_class()
    return backend.push([make_item(person, backend) for person in people])


def hubspot_like_upsert(bad_emails=(), rng=random.Random(4)):  # noqa: B008 (one seeded sequence for the module)
    """A callback answering as batch/upsert does: the whole batch fails with 400 if
    any input is invalid; otherwise results in no particular order."""

    def answer(request):
        inputs = json.loads(request.body)["inputs"]
        bad = [i for i in inputs if i["id"] in bad_emails]
        if bad:
            detail = [
                {
                    "isValid": False,
                    "message": "Email address %s is invalid" % bad[0]["id"],
                    "error": "INVALID_EMAIL",
                    "name": "email",
                }
            ]
            body = {
                "status": "error",
                "message": "Property values were not valid: %s" % json.dumps(detail),
                "correlationId": "c",
                "category": "VALIDATION_ERROR",
            }
            return 400, {}, json.dumps(body)
        results = [
            {"id": str(1000 + int(i["id"][1:].split("@")[0])), "properties": i["properties"], "new": True}
            for i in inputs
        ]
        rng.shuffle(results)
        return 200, {}, json.dumps({"status": "COMPLETE", "results": results})

    return answer


class TestPayload:
    def test_upsert_input_keyed_by_email(self, hubspot):
        ann = unsaved_contact(
            email="ann@example.com",
            first_name="Ann",
            last_name="Lee",
            phone="+44 20",
            company="Acme",
            website="https://acme.test",
        )
        assert HubSpotBackend().build_payload(ann) == {
            "id": "ann@example.com",
            "idProperty": "email",
            "properties": {
                "email": "ann@example.com",
                "firstname": "Ann",
                "lastname": "Lee",
                "phone": "+44 20",
                "company": "Acme",
                "website": "https://acme.test",
            },
        }

    def test_sparse_contact_and_field_map_extension(self, hubspot, settings):
        settings.HUBSPOT_FIELD_MAP = "lead_source=source,jobtitle=job_title"
        ann = unsaved_contact(email="ann@example.com", attributes={"source": "fair"})
        assert HubSpotBackend().build_payload(ann)["properties"] == {"email": "ann@example.com", "lead_source": "fair"}

    def test_list_and_dict_attributes_are_sent_as_json(self, hubspot, settings):
        settings.HUBSPOT_FIELD_MAP = "tags=tags,profile=profile"
        ann = unsaved_contact(
            email="ann@example.com", attributes={"tags": ["vip", "émigré"], "profile": {"b": 2, "a": [1]}}
        )
        properties = HubSpotBackend().build_payload(ann)["properties"]
        assert properties["tags"] == '["vip", "émigré"]'
        assert properties["profile"] == '{"a": [1], "b": 2}'

    def test_invalid_email_is_refused_before_sending(self, hubspot):
        with pytest.raises(InvalidContact, match="HubSpot can take"):
            HubSpotBackend().build_payload(Contact(email="nope"))


class TestPush:
    def test_results_are_matched_on_email_not_order(self, hubspot, crm_api):
        crm_api.add_callback(responses.POST, UPSERT, callback=hubspot_like_upsert())
        people = contacts(20)
        outcomes = push(hubspot, people)
        assert [o.external_id for o in outcomes] == [str(1000 + i) for i in range(20)]
        call = crm_api.calls[0]
        assert call.request.headers["Authorization"] == "Bearer " + TOKEN
        assert [i["idProperty"] for i in sent_json(call)["inputs"]] == ["email"] * 20

    def test_more_than_100_go_in_requests_of_at_most_100(self, hubspot, crm_api):
        crm_api.add_callback(responses.POST, UPSERT, callback=hubspot_like_upsert())
        outcomes = push(hubspot, contacts(150))
        assert [len(sent_json(c)["inputs"]) for c in crm_api.calls] == [100, 50]
        assert {o.kind for o in outcomes} == {OutcomeKind.ACCEPTED}

    def test_a_batch_rejected_for_some_records_is_split_until_they_stand_alone(self, hubspot, crm_api):
        crm_api.add_callback(
            responses.POST, UPSERT, callback=hubspot_like_upsert({"bad3@example.com", "bad60@example.com"})
        )
        outcomes = push(hubspot, contacts(100, bad=(3, 60)))

        failed = {o.key: o for o in outcomes if o.kind is OutcomeKind.PERMANENT}
        assert len(failed) == 2
        assert sorted(o.message for o in failed.values()) == [
            "HubSpot refused it: Email address bad3@example.com is invalid (INVALID_EMAIL)",
            "HubSpot refused it: Email address bad60@example.com is invalid (INVALID_EMAIL)",
        ]
        assert sum(o.kind is OutcomeKind.ACCEPTED for o in outcomes) == 98
        assert len(crm_api.calls) <= 2 * 2 * 7 + 1, "halving, not one request per contact"

    def test_an_unknown_property_pauses_instead_of_splitting(self, hubspot, crm_api):
        detail = [
            {
                "isValid": False,
                "message": 'Property "lead_source" does not exist',
                "error": "PROPERTY_DOESNT_EXIST",
                "name": "lead_source",
            }
        ]
        crm_api.post(
            UPSERT,
            status=400,
            json={
                "status": "error",
                "message": "Property values were not valid: " + json.dumps(detail),
                "category": "VALIDATION_ERROR",
            },
        )
        with pytest.raises(CRMUnavailable, match=r"no contact property 'lead_source'\. Run 'manage\.py crm_setup"):
            push(hubspot, contacts(10))
        assert len(crm_api.calls) == 1

    def test_multi_status_answers_give_each_contact_its_own_outcome(self, hubspot, crm_api):
        people = contacts(2)
        crm_api.post(
            UPSERT,
            status=207,
            json={
                "status": "COMPLETE",
                "results": [{"id": "11", "properties": {"email": "p0@example.com"}}],
                "numErrors": 1,
                "errors": [{"status": "error", "category": "VALIDATION_ERROR", "message": "Property value too long"}],
            },
        )
        outcomes = push(hubspot, people)
        assert [(o.kind, o.external_id) for o in outcomes] == [
            (OutcomeKind.ACCEPTED, "11"),
            (OutcomeKind.PERMANENT, ""),
        ]
        assert outcomes[1].message == "HubSpot refused it: Property value too long"

    def test_ten_secondly_rate_limit_waits_the_window(self, hubspot, crm_api, no_pacing_sleep):
        crm_api.post(
            UPSERT,
            status=429,
            headers={"X-HubSpot-RateLimit-Interval-Milliseconds": "10000"},
            json={
                "status": "error",
                "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT",
                "policyName": "TEN_SECONDLY_ROLLING",
            },
        )
        outcomes = push(hubspot, contacts(3))
        assert {(o.kind, o.retry_after) for o in outcomes} == {(OutcomeKind.WAIT, 10.0)}
        assert "ten_secondly_rolling" in outcomes[0].message

    def test_retry_after_wins_and_daily_limit_waits_for_the_next_day(self, hubspot, crm_api, no_pacing_sleep):
        crm_api.post(UPSERT, status=429, headers={"Retry-After": "3"}, json={"policyName": "TEN_SECONDLY_ROLLING"})
        person = contacts(1)
        assert push(hubspot, person)[0].retry_after == 3.0
        crm_api.replace(
            responses.POST,
            UPSERT,
            status=429,
            json={"policyName": "DAILY", "message": "You have reached your daily limit."},
        )
        wait = HubSpotBackend().push([make_item(person[0], HubSpotBackend())])[0].retry_after
        assert 0 < wait <= 24 * 3600

    def test_rate_limit_holds_back_the_later_chunks(self, hubspot, crm_api, no_pacing_sleep):
        crm_api.post(UPSERT, status=429, json={"policyName": "TEN_SECONDLY_ROLLING"})
        outcomes = push(hubspot, contacts(150))
        # The first chunk's request is sent again after each hold; the second is not sent.
        assert len(crm_api.calls) == 1 + RATE_LIMIT_RETRIES
        assert {o.kind for o in outcomes} == {OutcomeKind.WAIT}

    @pytest.mark.parametrize("status", [500, 502, 504])
    def test_server_errors_are_retried(self, hubspot, crm_api, status):
        crm_api.post(
            UPSERT, status=status, json={"status": "error", "message": "internal error", "category": "INTERNAL_ERROR"}
        )
        assert {o.kind for o in push(hubspot, contacts(2))} == {OutcomeKind.RETRY}

    def test_bad_token_fails_the_batch_with_an_actionable_message_and_no_secret(self, hubspot, crm_api, caplog):
        caplog.set_level(logging.DEBUG)
        crm_api.post(
            UPSERT,
            status=401,
            json={
                "status": "error",
                "message": "Authentication credentials not found.",
                "category": "INVALID_AUTHENTICATION",
            },
        )
        with pytest.raises(CRMUnavailable) as excinfo:
            push(hubspot, contacts(1))
        assert excinfo.value.fail_contacts
        assert "Set a valid HUBSPOT_API_KEY" in str(excinfo.value)
        assert TOKEN not in str(excinfo.value) and TOKEN not in caplog.text

    def test_missing_scope_pauses_without_failing_contacts(self, hubspot, crm_api):
        crm_api.post(
            UPSERT,
            status=403,
            json={
                "status": "error",
                "message": "This app hasn't been granted all required scopes",
                "category": "MISSING_SCOPES",
            },
        )
        with pytest.raises(CRMUnavailable, match=r"crm\.objects\.contacts\.write") as excinfo:
            push(hubspot, contacts(1))
        assert not excinfo.value.fail_contacts


@pytest.mark.django_db
class TestSharedPace:
    """The engine's pacer keeps the next free slot in the database (CRMState)."""

    @pytest.mark.parametrize("remaining, held_seconds", [("0", 10), ("7", 0)])
    def test_a_spent_quota_holds_every_worker_until_the_window_rolls(self, hubspot, crm_api, remaining, held_seconds):
        crm_api.post(
            UPSERT,
            json={"status": "COMPLETE", "results": [{"id": "1", "properties": {"email": "p0@example.com"}}]},
            headers={"X-HubSpot-RateLimit-Remaining": remaining, "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"},
        )
        # Each worker's backend paces with the pacer the engine shares (share_pace).
        worker = share_pace(HubSpotBackend())
        outcomes = worker.push([make_item(person, worker) for person in contacts(1)])
        assert outcomes[0].kind is OutcomeKind.ACCEPTED
        next_slot = share_pace(HubSpotBackend()).pacer.reserve(1)[0] - time.monotonic()
        assert next_slot == pytest.approx(held_seconds, abs=0.5)


def test_record_link_needs_the_portal_id(hubspot, settings):
    assert HubSpotBackend.external_url("123") is None
    settings.HUBSPOT_PORTAL_ID = "987"
    assert HubSpotBackend.external_url("123") == "https://app.hubspot.com/contacts/987/record/0-1/123"


@pytest.mark.django_db
class TestSetup:
    """crm_setup paces its requests with the shared pacer, which lives in the database."""

    def test_setup_creates_missing_custom_properties(self, hubspot, settings, crm_api):
        from io import StringIO

        from django.core.management import call_command

        settings.HUBSPOT_FIELD_MAP = "lead_source=source,crm_score=score"
        crm_api.get(API + "/crm/v3/properties/contacts", json={"results": [{"name": "email"}, {"name": "crm_score"}]})
        crm_api.post(API + "/crm/v3/properties/contacts", status=201, json={"name": "lead_source"})
        out = StringIO()
        call_command("crm_setup", "--crm", "hubspot", stdout=out)
        assert out.getvalue().strip() == "HubSpot: created lead_source; already there: crm_score."
        created = sent_json(crm_api.calls[1])
        assert (created["name"], created["type"], created["fieldType"], created["groupName"]) == (
            "lead_source",
            "string",
            "text",
            "contactinformation",
        )


class TestEmailForm:
    """HubSpot is sent the punycode form (docs/crm-api.md, section 2, "Email
    addresses") and its results are matched in that form, whatever it echoes."""

    def test_every_spelling_is_sent_with_the_punycode_domain(self, hubspot):
        # Unsaved, the contact keeps the NFD spelling (the ORM would store the canonical one).
        payload = HubSpotBackend().build_payload(unsaved_contact(email="zoe@exa\u0308mple.com"))
        assert payload["id"] == payload["properties"]["email"] == "zoe@xn--exmple-cua.com"

    @pytest.mark.parametrize("echoed", ["zoe@xn--exmple-cua.com", "Zoe@Ex\u00e4mple.com", "ZOE@XN--EXMPLE-CUA.COM"])
    def test_results_are_matched_whatever_form_hubspot_echoes(self, hubspot, crm_api, echoed):
        crm_api.post(UPSERT, json={"status": "COMPLETE", "results": [{"id": "901", "properties": {"email": echoed}}]})
        [outcome] = push(hubspot, [unsaved_contact(email="zoe@exa\u0308mple.com")])
        assert (outcome.kind, outcome.external_id) == (OutcomeKind.ACCEPTED, "901")
