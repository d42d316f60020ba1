"""N8nBackend against an n8n Webhook trigger, mocked with `responses`."""

import logging

import pytest

from integrations.backends.base import OutcomeKind
from integrations.backends.n8n import N8nBackend
from integrations.exceptions import CRMUnavailable

from .conftest import make_item, sent_json, unsaved_contact

HOOK = "https://n8n.example.com/webhook/crmsync-contacts"
SECRET = "n8n-webhook-secret-for-tests"


@pytest.fixture
def n8n(settings):
    settings.N8N_WEBHOOK_URL = HOOK
    settings.N8N_WEBHOOK_SECRET = SECRET
    settings.N8N_CONCURRENCY = 1
    return N8nBackend


def people(count):
    """Unsaved contacts: the backend only reads them, so no database is needed."""
    return [
        unsaved_contact(email="p%d@example.com" % i, first_name="P%d" % i, attributes={"tier": "gold"})
        for i in range(count)
    ]


def push(contacts):
    backend = N8nBackend()
    return backend.push([make_item(c, backend) for c in contacts])


def test_one_request_per_contact_carrying_what_a_workflow_needs_to_call_back(n8n, crm_api):
    crm_api.post(HOOK, json={"message": "Workflow was started"})
    people_ = people(2)
    outcomes = push(people_)
    assert [o.kind for o in outcomes] == [OutcomeKind.ACCEPTED] * 2
    body = sent_json(crm_api.calls[0])
    assert body["contact_id"] == people_[0].pk
    assert (body["email"], body["first_name"], body["attributes"]) == ("p0@example.com", "P0", {"tier": "gold"})
    assert set(body) >= {"last_name", "phone", "company", "website", "timestamp"}
    assert crm_api.calls[0].request.headers["Authorization"] == "Bearer " + SECRET


def test_header_auth_with_another_header_sends_the_secret_as_is(n8n, crm_api, settings):
    settings.N8N_WEBHOOK_AUTH_HEADER = "X-Crmsync-Token"
    crm_api.post(HOOK, json={"message": "Workflow was started"})
    push(people(1))
    headers = crm_api.calls[0].request.headers
    assert headers["X-Crmsync-Token"] == SECRET and "Authorization" not in headers


def test_batch_mode_sends_one_array(n8n, crm_api, settings):
    settings.N8N_WEBHOOK_BATCH = "true"
    crm_api.post(HOOK, json={"message": "Workflow was started"})
    outcomes = push(people(3))
    assert len(crm_api.calls) == 1
    assert [c["email"] for c in sent_json(crm_api.calls[0])] == ["p0@example.com", "p1@example.com", "p2@example.com"]
    assert {o.kind for o in outcomes} == {OutcomeKind.ACCEPTED}


def test_a_too_large_array_is_halved(n8n, crm_api, settings):
    settings.N8N_WEBHOOK_BATCH = "true"
    crm_api.post(HOOK, status=413, body="request entity too large")
    crm_api.post(HOOK, json={"message": "Workflow was started"})
    crm_api.post(HOOK, json={"message": "Workflow was started"})
    outcomes = push(people(4))
    assert [len(sent_json(c)) for c in crm_api.calls] == [4, 2, 2]
    assert {o.kind for o in outcomes} == {OutcomeKind.ACCEPTED}


def test_an_inactive_workflow_pauses_n8n_with_a_clear_message(n8n, crm_api):
    crm_api.post(
        HOOK,
        status=404,
        json={
            "code": 404,
            "message": 'The requested webhook "POST crmsync-contacts" is not registered.',
            "hint": "The workflow must be active for a production URL to run successfully.",
        },
    )
    with pytest.raises(CRMUnavailable, match="The n8n workflow is not active") as excinfo:
        push(people(3))
    assert not excinfo.value.fail_contacts
    assert len(crm_api.calls) == 1, "no request after the first 404"


@pytest.mark.parametrize("status, body", [(403, "Authorization data is wrong!"), (401, "Authorization is required!")])
def test_wrong_credentials_pause_n8n_and_never_show_the_secret(n8n, crm_api, caplog, status, body):
    caplog.set_level(logging.DEBUG)
    crm_api.post(HOOK, status=status, body=body, headers={"WWW-Authenticate": 'Basic realm="Webhook"'})
    with pytest.raises(CRMUnavailable, match="n8n rejected the credentials") as excinfo:
        push(people(1))
    assert body in str(excinfo.value)
    assert SECRET not in str(excinfo.value) and SECRET not in caplog.text


def test_server_errors_are_retried(n8n, crm_api):
    crm_api.post(HOOK, status=503, body="Service Unavailable")
    assert [o.kind for o in push(people(1))] == [OutcomeKind.RETRY]


def test_an_empty_200_still_counts_as_accepted(n8n, crm_api):
    # n8n's responseNode bug answers 200 with no body even when the workflow failed.
    crm_api.post(HOOK, status=200, body="")
    assert [o.kind for o in push(people(1))] == [OutcomeKind.ACCEPTED]


@pytest.mark.parametrize("spelling", ["zoe@exa\u0308mple.com", "zoe@xn--exmple-cua.com"])
def test_the_workflow_gets_the_canonical_unicode_form(n8n, crm_api, spelling):
    crm_api.post(HOOK, json={"message": "Workflow was started"})
    # Unsaved, the contact keeps the spelling as given (the ORM would store the canonical one).
    push([unsaved_contact(email=spelling)])
    assert sent_json(crm_api.calls[0])["email"] == "zoe@ex\u00e4mple.com"
