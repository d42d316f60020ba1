"""MauticBackend against Mautic's HTTP API, mocked with `responses`."""

import logging

import pytest
import responses

from contacts.models import Contact
from integrations.backends.base import OutcomeKind
from integrations.backends.mautic import MauticBackend
from integrations.checks import check_crm_configuration
from integrations.exceptions import CRMUnavailable, InvalidContact

from .conftest import make_item, sent_json, unsaved_contact

BASE = "https://mautic.example.com"
BATCH = BASE + "/api/contacts/batch/new"
TOKEN = BASE + "/oauth/v2/token"
PASSWORD = "mautic-password-for-tests"
CLIENT_SECRET = "mautic-client-secret-for-tests"


@pytest.fixture(autouse=True)
def forget_tokens():
    MauticBackend._tokens.clear()


@pytest.fixture
def basic(settings):
    settings.MAUTIC_BASE_URL = BASE
    settings.MAUTIC_USERNAME = "api-user"
    settings.MAUTIC_PASSWORD = PASSWORD
    return MauticBackend


@pytest.fixture
def oauth(settings):
    settings.MAUTIC_BASE_URL = BASE
    settings.MAUTIC_CLIENT_ID = "1_client"
    settings.MAUTIC_CLIENT_SECRET = CLIENT_SECRET
    return MauticBackend


def people(count):
    """Unsaved contacts: the backend only reads them, so no database is needed."""
    return [unsaved_contact(email="p%d@example.com" % i, first_name="P%d" % i, company="Acme") for i in range(count)]


def push(backend_class, contacts):
    backend = backend_class()
    return backend.push([make_item(c, backend) for c in contacts])


def batch_answer(*codes, errors=None, sparse=False):
    contacts = [{"id": 100 + i, "fields": {}} for i, code in enumerate(codes) if code in (200, 201)]
    if sparse:
        contacts = {str(i): {"id": 100 + i} for i, code in enumerate(codes) if code in (200, 201)}
    return {"contacts": contacts, "statusCodes": list(codes), "errors": errors or {}}


def test_payload_is_flat_field_aliases(basic):
    ann = unsaved_contact(email="ann@example.com", first_name="Ann", company="Acme")
    assert MauticBackend().build_payload(ann) == {"email": "ann@example.com", "firstname": "Ann", "company": "Acme"}
    with pytest.raises(InvalidContact):
        MauticBackend().build_payload(Contact(email="nope"))


def test_created_and_matched_contacts_get_their_mautic_ids(basic, crm_api):
    crm_api.post(BATCH, status=201, json=batch_answer(201, 200))
    outcomes = push(basic, people(2))
    assert [(o.kind, o.external_id, o.http_status) for o in outcomes] == [
        (OutcomeKind.ACCEPTED, "100", 201),
        (OutcomeKind.ACCEPTED, "101", 200),
    ]
    request = crm_api.calls[0].request
    assert request.headers["Authorization"].startswith("Basic ")
    assert [c["email"] for c in sent_json(crm_api.calls[0])] == ["p0@example.com", "p1@example.com"]


def test_a_validation_error_is_permanent_with_mauti_s_message_and_spares_the_rest(basic, crm_api):
    errors = {
        "1": {
            "code": 400,
            "message": "email: This value is not a valid email address.",
            "details": {"email": ["A valid email is required."]},
            "type": "api",
        }
    }
    crm_api.post(BATCH, status=201, json=batch_answer(201, 400, 201, errors=errors, sparse=True))
    outcomes = push(basic, people(3))
    assert [o.kind for o in outcomes] == [OutcomeKind.ACCEPTED, OutcomeKind.PERMANENT, OutcomeKind.ACCEPTED]
    assert outcomes[1].message == "Mautic refused it: email: A valid email is required."
    assert outcomes[2].external_id == "102"


def test_errors_written_as_a_list_still_reach_their_contacts(basic, crm_api):
    # PHP's json_encode writes {0: ..., 1: ...} as a list: so `errors` when only the
    # first items failed, and `contacts` when only the last ones did.
    error = {
        "code": 400,
        "message": "email: p0@example.com is invalid.",
        "details": {"email": ["p0@example.com is invalid."]},
        "type": None,
    }
    crm_api.post(BATCH, status=201, json={"contacts": {"1": {"id": 101}}, "statusCodes": [400, 201], "errors": [error]})
    outcomes = push(basic, people(2))
    assert [(o.kind, o.message, o.external_id) for o in outcomes] == [
        (OutcomeKind.PERMANENT, "Mautic refused it: email: p0@example.com is invalid.", ""),
        (OutcomeKind.ACCEPTED, "", "101"),
    ]


def test_more_than_200_go_in_several_requests(basic, crm_api):
    def answer(request):
        import json

        count = len(json.loads(request.body))
        return 201, {}, json.dumps(batch_answer(*[201] * count))

    crm_api.add_callback(responses.POST, BATCH, callback=answer)
    outcomes = push(basic, people(250))
    assert [len(sent_json(c)) for c in crm_api.calls] == [200, 50]
    assert {o.kind for o in outcomes} == {OutcomeKind.ACCEPTED}


def test_synced_contacts_join_the_segment(basic, crm_api, settings):
    settings.MAUTIC_SEGMENT_ID = "7"
    crm_api.post(BATCH, status=201, json=batch_answer(201, 201))
    crm_api.post(BASE + "/api/segments/7/contacts/add", json={"success": 1, "details": {"100": {"success": True}}})
    push(basic, people(2))
    assert sent_json(crm_api.calls[1]) == {"ids": [100, 101]}


def test_a_missing_segment_pauses_mautic(basic, crm_api, settings):
    settings.MAUTIC_SEGMENT_ID = "7"
    crm_api.post(BATCH, status=201, json=batch_answer(201))
    crm_api.post(
        BASE + "/api/segments/7/contacts/add",
        status=404,
        json={"errors": [{"code": 404, "message": "Item was not found."}]},
    )
    with pytest.raises(CRMUnavailable, match="Fix MAUTIC_SEGMENT_ID"):
        push(basic, people(1))


@pytest.mark.parametrize(
    "status, error_type, expected",
    [
        (403, "api_disabled", "Mautic's API is disabled"),
        (403, "access_denied", "enable it in Mautic's API settings, or set MAUTIC_CLIENT_ID"),
    ],
)
def test_instance_settings_that_block_everything_pause_without_failing_contacts(
    basic, crm_api, status, error_type, expected
):
    crm_api.post(BATCH, status=status, json={"errors": [{"code": status, "message": "no", "type": error_type}]})
    with pytest.raises(CRMUnavailable, match=expected) as excinfo:
        push(basic, people(1))
    assert not excinfo.value.fail_contacts


def test_bad_basic_credentials_fail_the_batch_naming_the_settings_and_no_secret(basic, crm_api, caplog):
    caplog.set_level(logging.DEBUG)
    crm_api.post(
        BATCH, status=401, json={"errors": [{"code": 401, "message": "Authorization denied, invalid credentials."}]}
    )
    with pytest.raises(CRMUnavailable) as excinfo:
        push(basic, people(1))
    assert excinfo.value.fail_contacts
    assert "Check MAUTIC_USERNAME and MAUTIC_PASSWORD" in str(excinfo.value)
    assert PASSWORD not in str(excinfo.value) and PASSWORD not in caplog.text


def test_server_errors_are_retried(basic, crm_api):
    crm_api.post(BATCH, status=502, body="Bad Gateway")
    assert {o.kind for o in push(basic, people(2))} == {OutcomeKind.RETRY}


class TestOAuth2:
    def test_fetches_a_token_once_and_reuses_it(self, oauth, crm_api):
        crm_api.post(TOKEN, json={"access_token": "tok-1", "expires_in": 3600, "token_type": "bearer", "scope": None})
        crm_api.post(BATCH, status=201, json=batch_answer(201))
        push(oauth, people(1))
        push(oauth, [unsaved_contact(email="again@example.com")])
        token_calls = [c for c in crm_api.calls if c.request.url == TOKEN]
        assert len(token_calls) == 1
        assert "grant_type=client_credentials" in token_calls[0].request.body
        assert [c.request.headers["Authorization"] for c in crm_api.calls if c.request.url == BATCH] == [
            "Bearer tok-1"
        ] * 2

    def test_a_token_close_to_expiry_is_replaced(self, oauth, crm_api):
        crm_api.post(TOKEN, json={"access_token": "short", "expires_in": 30})
        crm_api.post(TOKEN, json={"access_token": "next", "expires_in": 3600})
        crm_api.post(BATCH, status=201, json=batch_answer(201))
        push(oauth, people(1))
        push(oauth, [unsaved_contact(email="again@example.com")])
        assert [c.request.headers["Authorization"] for c in crm_api.calls if c.request.url == BATCH] == [
            "Bearer short",
            "Bearer next",
        ]

    def test_a_401_refreshes_the_token_once(self, oauth, crm_api):
        crm_api.post(TOKEN, json={"access_token": "stale", "expires_in": 3600})
        crm_api.post(TOKEN, json={"access_token": "fresh", "expires_in": 3600})
        crm_api.post(
            BATCH,
            status=401,
            json={
                "errors": [{"code": 401, "message": "The access token provided is invalid.", "type": "invalid_grant"}]
            },
        )
        crm_api.post(BATCH, status=201, json=batch_answer(201))
        [outcome] = push(oauth, people(1))
        assert outcome.kind is OutcomeKind.ACCEPTED
        assert [c.request.headers.get("Authorization") for c in crm_api.calls if c.request.url == BATCH] == [
            "Bearer stale",
            "Bearer fresh",
        ]

    def test_a_token_refused_because_the_api_is_disabled_pauses_mautic_saying_so(self, oauth, crm_api):
        crm_api.post(
            TOKEN,
            status=403,
            json={
                "errors": [
                    {
                        "message": "API disabled. You need to enable the API in "
                        "the API settings of Mautic's Configuration.",
                        "code": 403,
                        "type": "api_disabled",
                    }
                ]
            },
        )
        with pytest.raises(CRMUnavailable, match="Mautic's API is disabled: enable it") as excinfo:
            push(oauth, people(1))
        assert not excinfo.value.fail_contacts, "the contacts keep their attempts"
        assert [c.request.url for c in crm_api.calls] == [TOKEN]

    def test_a_rejected_client_fails_the_batch_naming_the_settings(self, oauth, crm_api):
        crm_api.post(
            TOKEN,
            status=400,
            json={"errors": [{"message": "The client credentials are invalid", "code": 400, "type": "invalid_client"}]},
        )
        with pytest.raises(CRMUnavailable, match="Check MAUTIC_CLIENT_ID and MAUTIC_CLIENT_SECRET") as excinfo:
            push(oauth, people(1))
        assert excinfo.value.fail_contacts and CLIENT_SECRET not in str(excinfo.value)


def test_needs_a_url_and_one_pair_of_credentials(settings):
    assert not MauticBackend.is_enabled()
    settings.MAUTIC_BASE_URL = BASE
    assert MauticBackend.missing_settings() == [
        "MAUTIC_USERNAME and MAUTIC_PASSWORD, or MAUTIC_CLIENT_ID and MAUTIC_CLIENT_SECRET"
    ]
    assert [m.id for m in check_crm_configuration()] == ["integrations.W001"]
    settings.MAUTIC_CLIENT_ID, settings.MAUTIC_CLIENT_SECRET = "1_x", "y"
    assert MauticBackend.is_enabled()


def test_mautic_is_sent_the_punycode_domain(basic, crm_api):
    # Mautic's filter_var(FILTER_VALIDATE_EMAIL) refuses a Unicode domain (docs/crm-api.md, section 3).
    crm_api.post(BATCH, status=201, json=batch_answer(201))
    # Unsaved, the contact keeps the NFD spelling (the ORM would store the canonical one).
    push(basic, [unsaved_contact(email="zoe@exa\u0308mple.com")])
    assert sent_json(crm_api.calls[0])[0]["email"] == "zoe@xn--exmple-cua.com"


def test_a_domain_with_no_ascii_form_is_refused_before_sending(basic):
    # Django's validator takes a zero-width joiner in a domain; IDNA has no ASCII form for it.
    with pytest.raises(InvalidContact, match="not an email address Mautic can take"):
        MauticBackend().build_payload(Contact(email="zoe@ex\u200dample.com"))
