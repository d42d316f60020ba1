"""GET /api/v3/contacts and /contacts/{id}: each CRM's operation, what the CRM
reported (event, opt-out) and the new states, and the crm_event / opted_out filters."""

from datetime import UTC, datetime

import pytest

from contacts.models import CRMEvent, Operation, ProcessingStatus, SyncStatus

from .conftest import VIEW_SYNCS

LIST = "/api/v3/contacts"
AT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer(client_with):
    return client_with(VIEW_SYNCS)


@pytest.fixture
def rows(make_contact, make_sync):
    """ann unsubscribed in Brevo; bob deleted in HubSpot (Not in the CRM); cy removed
    from Brevo; dan merged in Mautic."""
    ann, bob = make_contact(email="ann@example.com"), make_contact(email="bob@example.com")
    cy, dan = make_contact(email="cy@example.com"), make_contact(email="dan@example.com")
    make_sync(
        ann,
        "brevo",
        sync_status=SyncStatus.COMPLETE,
        synced_email="ann@example.com",
        crm_event=CRMEvent.UNSUBSCRIBED,
        crm_event_at=AT,
        opted_out_at=AT,
    )
    make_sync(ann, "hubspot", sync_status=SyncStatus.COMPLETE)
    make_sync(
        bob,
        "hubspot",
        processing_status=ProcessingStatus.NOT_IN_CRM,
        crm_event=CRMEvent.DELETED,
        crm_event_at=AT,
        last_error="HubSpot reports this contact deleted",
    )
    make_sync(cy, "brevo", operation=Operation.REMOVE, processing_status=ProcessingStatus.REMOVED, last_error="Deleted")
    make_sync(dan, "mautic", crm_event=CRMEvent.MERGED, crm_event_at=AT, external_id="77")
    return ann, bob, cy, dan


def listed(viewer, **params):
    response = viewer.get(LIST, params)
    assert response.status_code == 200, response.content
    return {contact["email"] for contact in response.json()["results"]}


def test_each_crm_entry_shows_the_operation_event_and_opt_out(viewer, rows):
    ann, bob, cy, _dan = rows

    syncs = {sync["crm"]: sync for sync in viewer.get("%s/%d" % (LIST, ann.pk)).json()["syncs"]}

    assert {name: syncs["brevo"][name] for name in ("operation", "synced_email", "crm_event")} == {
        "operation": "",
        "synced_email": "ann@example.com",
        "crm_event": "unsubscribed",
    }
    assert syncs["brevo"]["crm_event_at"] == syncs["brevo"]["opted_out_at"] == "2026-11-20T09:30:00Z"
    assert (syncs["hubspot"]["crm_event"], syncs["hubspot"]["opted_out_at"]) == ("", None)

    bob_hubspot = viewer.get("%s/%d" % (LIST, bob.pk)).json()["syncs"][0]
    assert (bob_hubspot["processing_status"], bob_hubspot["crm_event"], bob_hubspot["last_error"]) == (
        "not_in_crm",
        "deleted",
        "HubSpot reports this contact deleted",
    )
    cy_brevo = viewer.get("%s/%d" % (LIST, cy.pk)).json()["syncs"][0]
    assert (cy_brevo["operation"], cy_brevo["processing_status"]) == ("remove", "removed")


def test_the_list_shows_the_same_fields(viewer, rows):
    results = viewer.get(LIST, {"crm_event": "merged"}).json()["results"]

    assert [sync["crm_event"] for contact in results for sync in contact["syncs"]] == ["merged"]


def test_filters_by_crm_event_and_opt_out(viewer, rows):
    assert listed(viewer, crm_event="unsubscribed") == {"ann@example.com"}
    assert listed(viewer, crm_event="deleted") == {"bob@example.com"}
    # With a CRM, the event is tested for that CRM's row.
    assert listed(viewer, crm_event="deleted", crm="brevo") == set()
    assert listed(viewer, crm_event="merged", crm="mautic") == {"dan@example.com"}
    assert listed(viewer, opted_out="yes") == {"ann@example.com"}
    assert listed(viewer, opted_out="no") == {"bob@example.com", "cy@example.com", "dan@example.com"}
    assert listed(viewer, opted_out="yes", crm="hubspot") == set()
    assert listed(viewer, processing_status="not_in_crm") == {"bob@example.com"}
    assert listed(viewer, processing_status="removed") == {"cy@example.com"}


@pytest.mark.parametrize("name", ["crm_event", "opted_out"])
def test_an_unknown_value_is_a_400_listing_the_valid_ones(viewer, rows, name):
    response = viewer.get(LIST, {name: "maybe"})

    assert response.status_code == 400
    message = response.json()[name][0]
    assert '"maybe" is not a valid' in message
    assert ("unsubscribed" if name == "crm_event" else "yes, no") in message
