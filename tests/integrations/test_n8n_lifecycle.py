"""n8n's part of a contact's life, mocked with `responses`: the previous email in
an upsert's body, and the delete and erase events sent to the same workflow."""

import pytest

from integrations.backends.base import ERASE, REMOVE, OutcomeKind, SyncItem
from integrations.backends.n8n import N8nBackend
from integrations.exceptions import CRMUnavailable

from .conftest import sent_json, unsaved_contact

HOOK = "https://n8n.example.com/webhook/crmsync-contacts"


@pytest.fixture
def n8n(settings):
    settings.N8N_WEBHOOK_URL = HOOK
    settings.N8N_WEBHOOK_SECRET = "n8n-webhook-secret-for-tests"
    settings.N8N_CONCURRENCY = 1
    return N8nBackend


def upsert(backend, contact, previous_email=""):
    return SyncItem(
        key=contact.pk,
        contact=contact,
        payload=backend.build_payload(contact),
        email=contact.email,
        previous_email=previous_email,
    )


def removal(operation, contact=None, email="gone@example.com"):
    return SyncItem(key=7, contact=contact, payload=None, operation=operation, email=email)


def test_an_upsert_says_so_and_carries_the_previous_email_when_it_changed(n8n, crm_api):
    crm_api.post(HOOK, json={"message": "Workflow was started"})
    backend = N8nBackend()
    renamed = unsaved_contact(email="new@example.com")
    same = unsaved_contact(email="same@example.com")

    backend.push([upsert(backend, renamed, "old@example.com"), upsert(backend, same)])

    bodies = {body["email"]: body for body in map(sent_json, crm_api.calls)}
    assert (bodies["new@example.com"]["event"], bodies["new@example.com"]["previous_email"]) == (
        "upsert",
        "old@example.com",
    )
    assert bodies["same@example.com"]["previous_email"] == ""


@pytest.mark.parametrize(("operation", "event"), [(ERASE, "erase"), (REMOVE, "delete")])
def test_a_removal_or_erasure_is_an_event_to_the_workflow(n8n, crm_api, operation, event):
    crm_api.post(HOOK, json={"message": "Workflow was started"})
    contact = unsaved_contact(email="gone@example.com")

    (outcome,) = N8nBackend().push([removal(operation, contact)])

    body = sent_json(crm_api.calls[0])
    assert (body["event"], body["email"], body["contact_id"]) == (event, "gone@example.com", contact.pk)
    assert "first_name" not in body
    assert (outcome.kind, outcome.found, outcome.http_status) == (OutcomeKind.ACCEPTED, True, 200)
    assert outcome.answer.startswith("HTTP 200")


def test_an_erasure_of_a_contact_gone_locally_still_names_the_address(n8n, crm_api):
    crm_api.post(HOOK, json={"message": "Workflow was started"})
    N8nBackend().push([removal(ERASE, None, "stranger@example.com")])
    body = sent_json(crm_api.calls[0])
    assert (body["contact_id"], body["email"]) == (None, "stranger@example.com")


def test_batched_webhooks_get_the_event_in_an_array(n8n, settings, crm_api):
    settings.N8N_WEBHOOK_BATCH = True
    crm_api.post(HOOK, json={"message": "Workflow was started"})
    N8nBackend().push([removal(ERASE)])
    assert [item["event"] for item in sent_json(crm_api.calls[0])] == ["erase"]


def test_an_inactive_workflow_is_not_taken_for_a_person_not_found(n8n, crm_api):
    crm_api.post(HOOK, status=404, json={"code": 404, "message": 'The requested webhook "POST x" is not registered.'})
    with pytest.raises(CRMUnavailable):
        N8nBackend().push([removal(ERASE)])


def test_a_refused_erase_event_is_not_done(n8n, crm_api):
    crm_api.post(HOOK, status=500, json={"code": 500, "message": "Workflow could not be started"})
    (outcome,) = N8nBackend().push([removal(ERASE)])
    assert outcome.kind is OutcomeKind.RETRY
