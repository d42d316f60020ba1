"""What the CRMs reported, as staff see it in the admin: event badges with their
time, the Not in the CRM and Removed states with their reason, and the filters."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from contacts.models import ContactSync, CRMEvent, Operation, ProcessingStatus, SyncStatus

CHANGELIST = reverse("admin:contacts_contact_changelist")
SYNC_CHANGELIST = reverse("admin:contacts_contactsync_changelist")
AT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
E = CRMEvent

pytestmark = pytest.mark.django_db


def listed_emails(response):
    assert response.status_code == 200
    return {contact.email for contact in response.context["cl"].result_list}


def listed_syncs(response):
    assert response.status_code == 200
    return {(sync.contact.email, sync.crm) for sync in response.context["cl"].result_list}


@pytest.fixture
def rows(make_contact, make_sync):
    """ann unsubscribed in Brevo; bob deleted in HubSpot (Not in the CRM), merged in
    Mautic; cy removed from Brevo; dan has no event."""
    ann, bob = make_contact(email="ann@example.com"), make_contact(email="bob@example.com")
    cy, dan = make_contact(email="cy@example.com"), make_contact(email="dan@example.com")
    make_sync(ann, "brevo", sync_status=SyncStatus.COMPLETE, crm_event=E.UNSUBSCRIBED, crm_event_at=AT, opted_out_at=AT)
    make_sync(ann, "hubspot", sync_status=SyncStatus.COMPLETE)
    make_sync(
        bob,
        "hubspot",
        processing_status=ProcessingStatus.NOT_IN_CRM,
        crm_event=E.DELETED,
        crm_event_at=AT,
        last_error="HubSpot reports this contact deleted on 2026-11-20 09:30 UTC",
    )
    make_sync(bob, "mautic", crm_event=E.MERGED, crm_event_at=AT, external_id="77")
    make_sync(
        cy,
        "brevo",
        operation=Operation.REMOVE,
        processing_status=ProcessingStatus.REMOVED,
        last_error="Deleted in Brevo because the contact was skipped",
    )
    make_sync(dan, "brevo", sync_status=SyncStatus.COMPLETE)
    return ann, bob, cy, dan


class TestSyncChangelist:
    def test_shows_the_event_with_its_time_and_the_gone_states_with_their_reason(self, staff_client, rows):
        html = staff_client.get(SYNC_CHANGELIST).content.decode()

        assert '<span class="crm-event crm-event--opted-out" title="Brevo reported: Unsubscribed' in html
        assert "Opted out since 11/20/2026 9:30 a.m." in html
        assert '<span class="crm-event-at">11/20/2026 9:30 a.m.</span>' in html
        assert 'class="crm-event crm-event--gone" title="HubSpot reported: Deleted in the CRM"' in html
        assert 'class="crm-event crm-event--merged" title="Mautic reported: Merged in the CRM"' in html
        assert (
            '<span class="crm-state crm-state--not_in_crm" title="HubSpot reports this contact deleted on '
            '2026-11-20 09:30 UTC">Not in the CRM</span>' in html
        )
        assert (
            '<span class="crm-state crm-state--removed" title="Deleted in Brevo because the contact was skipped">'
            "Removed from the CRM (Remove from the CRM)</span>" in html
        )

    def test_filters_by_crm_event(self, staff_client, rows):
        def listed(**params):
            return listed_syncs(staff_client.get(SYNC_CHANGELIST, params))

        assert listed(crm_event="unsubscribed") == {("ann@example.com", "brevo")}
        assert listed(crm_event="deleted") == {("bob@example.com", "hubspot")}
        assert listed(crm_event="merged", crm="hubspot") == set()
        assert listed(opted_out="yes") == {("ann@example.com", "brevo")}
        assert ("ann@example.com", "brevo") not in listed(opted_out="no")
        assert len(listed(opted_out="no")) == 5

    def test_an_event_it_does_not_offer_is_refused_not_ignored(self, staff_client, rows):
        response = staff_client.get(SYNC_CHANGELIST, {"crm_event": "exploded"})
        # Django's answer to a bad lookup: the unfiltered list's address with ?e=1.
        assert response.status_code == 302
        assert response.url.endswith("?e=1")

    def test_a_row_whose_contact_was_deleted_is_listed(self, staff_client, rows):
        ContactSync.objects.create(contact=None, crm="hubspot", operation=Operation.ERASE, external_id="9")

        html = staff_client.get(SYNC_CHANGELIST).content.decode()

        assert "(deleted contact)" in html

    def test_query_count_does_not_grow_with_the_rows(self, staff_client, make_contacts, django_assert_max_num_queries):
        def add_rows(count):
            ContactSync.objects.bulk_create(
                ContactSync(
                    contact=contact,
                    crm="brevo",
                    crm_event=E.HARD_BOUNCE,
                    crm_event_at=AT,
                    opted_out_at=AT,
                    processing_status=ProcessingStatus.NOT_IN_CRM,
                    last_error="gone",
                )
                for contact in make_contacts(count)
            )

        def queries_for_page():
            with CaptureQueriesContext(connection) as queries:
                response = staff_client.get(SYNC_CHANGELIST, {"crm_event": "hard_bounce"})
            assert response.status_code == 200
            return len(queries), len(response.context["cl"].result_list)

        add_rows(2)
        few, shown = queries_for_page()
        assert shown == 2
        add_rows(60)
        many, shown = queries_for_page()
        assert shown == 62
        assert many == few
        with django_assert_max_num_queries(few):
            staff_client.get(SYNC_CHANGELIST, {"opted_out": "yes"})


class TestContactPages:
    def test_the_contact_list_filters_by_event_and_opt_out(self, staff_client, rows):
        def listed(**params):
            return listed_emails(staff_client.get(CHANGELIST, params))

        assert listed(crm_event="unsubscribed") == {"ann@example.com"}
        assert listed(crm_event="merged") == {"bob@example.com"}
        # The CRM chosen applies to the event: bob's merge was in Mautic, not HubSpot.
        assert listed(crm_event="merged", crm="hubspot") == set()
        assert listed(crm_event="deleted", crm="hubspot") == {"bob@example.com"}
        assert listed(opted_out="yes") == {"ann@example.com"}
        assert listed(opted_out="no") == {"bob@example.com", "cy@example.com", "dan@example.com"}
        # Opted out in HubSpot: ann opted out of Brevo only.
        assert listed(opted_out="yes", crm="hubspot") == set()

    def test_the_contact_list_badge_marks_the_event(self, staff_client, rows):
        html = staff_client.get(CHANGELIST).content.decode()

        assert (
            'class="crm-badge crm-badge--complete crm-badge--event-opted-out" '
            'title="Brevo: Complete\nUnsubscribed 11/20/2026 9:30 a.m."' in html
        )

    def test_the_contact_page_shows_each_crm_event_and_state(self, staff_client, rows):
        ann, bob, _cy, _dan = rows
        bob_page = staff_client.get(reverse("admin:contacts_contact_change", args=[bob.pk])).content.decode()
        ann_page = staff_client.get(reverse("admin:contacts_contact_change", args=[ann.pk])).content.decode()

        assert 'class="crm-event crm-event--gone" title="HubSpot reported: Deleted in the CRM"' in bob_page
        assert 'class="crm-state crm-state--not_in_crm"' in bob_page
        assert "HubSpot reports this contact deleted on 2026-11-20 09:30 UTC</span>" in bob_page
        assert 'class="crm-event crm-event--merged"' in bob_page
        assert 'class="crm-event crm-event--opted-out"' in ann_page
        assert "Opted out since 11/20/2026 9:30 a.m." in ann_page
