"""The staff UI, driven through the test client as a logged-in user posting the real forms."""

from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from contacts.models import ContactSync, ProcessingStatus, SyncAttempt, SyncStatus

CHANGELIST = reverse("admin:contacts_contact_changelist")
SYNC_CHANGELIST = reverse("admin:contacts_contactsync_changelist")
P = ProcessingStatus
S = SyncStatus


def post_action(client, action, ids=(), *, select_across=False, url=CHANGELIST, **extra):
    data = {"action": action, "index": 0, ACTION_CHECKBOX_NAME: [str(pk) for pk in ids]}
    if select_across:
        data["select_across"] = "1"
    data.update(extra)
    return client.post(url, data)


def messages_of(response):
    return [str(message) for message in get_messages(response.wsgi_request)]


def listed_emails(response):
    return {contact.email for contact in response.context["cl"].result_list}


class TestChangelist:
    def test_shows_a_badge_per_crm_with_status_and_error_tooltip(self, staff_client, make_contact, make_sync):
        contact = make_contact(email="ann@example.com")
        make_sync(
            contact,
            "brevo",
            sync_status=S.ERROR,
            processing_status=P.ERROR,
            attempts=4,
            last_error="Brevo: email is blacklisted",
        )
        make_sync(contact, "hubspot", sync_status=S.COMPLETE, processing_status=P.COMPLETE)

        html = staff_client.get(CHANGELIST).content.decode()

        assert (
            'class="crm-badge crm-badge--error" title="Brevo: Error / Error (4 attempts)\nBrevo: email is blacklisted"'
            in html
        )
        assert 'crm-badge--complete" title="HubSpot: Complete / Complete"' in html
        assert 'crm-badge--new" title="Mautic: New"' in html

    def test_search_by_email_name_and_company(self, staff_client, make_contact):
        make_contact(email="ann@example.com", first_name="Ann", company="Acme")
        make_contact(email="bob@example.com", last_name="Brown", company="Globex")
        assert listed_emails(staff_client.get(CHANGELIST, {"q": "ann@"})) == {"ann@example.com"}
        assert listed_emails(staff_client.get(CHANGELIST, {"q": "brown"})) == {"bob@example.com"}
        assert listed_emails(staff_client.get(CHANGELIST, {"q": "globex"})) == {"bob@example.com"}

    def test_crm_and_status_filters_combine_on_the_same_crm(self, staff_client, make_contact, make_sync):
        brevo_error = make_contact(email="brevo-error@example.com")
        make_sync(brevo_error, "brevo", sync_status=S.ERROR, processing_status=P.ERROR)
        mixed = make_contact(email="mixed@example.com")
        make_sync(mixed, "brevo", sync_status=S.COMPLETE, processing_status=P.COMPLETE)
        make_sync(mixed, "hubspot", sync_status=S.ERROR, processing_status=P.ERROR)
        untouched = make_contact(email="untouched@example.com")

        def listed(**params):
            return listed_emails(staff_client.get(CHANGELIST, params))

        assert listed(crm="brevo", sync_status="error") == {brevo_error.email}
        assert listed(sync_status="error") == {brevo_error.email, mixed.email}
        assert listed(crm="brevo") == {brevo_error.email, mixed.email}
        assert listed(crm="hubspot", processing_status="error") == {mixed.email}
        assert listed(crm="hubspot", sync_status="new") == {brevo_error.email, untouched.email}
        assert listed(sync_status="new") == {untouched.email}

    def test_query_count_does_not_grow_with_the_rows_shown(self, staff_client, make_contacts):
        from contacts import selection

        def queries_for_page():
            with CaptureQueriesContext(connection) as queries:
                assert staff_client.get(CHANGELIST).status_code == 200
            return len(queries)

        selection.select(make_contacts(3), ["brevo", "hubspot"])
        few = queries_for_page()
        selection.select(make_contacts(60), ["brevo", "hubspot", "mautic"])
        many = queries_for_page()
        assert many == few

    def test_viewer_sees_the_list_but_no_actions(self, viewer_client, make_contact):
        make_contact()
        response = viewer_client.get(CHANGELIST)
        assert response.status_code == 200
        assert "queue_for_crm" not in response.content.decode()


class TestQueueAction:
    def test_first_post_shows_a_confirmation_page_with_a_checkbox_per_crm(self, staff_client, make_contacts):
        contacts = make_contacts(3)
        response = post_action(staff_client, "queue_for_crm", contacts.values_list("pk", flat=True))

        assert response.status_code == 200
        html = response.content.decode()
        assert "This applies to 3 contacts." in html
        for crm in ("brevo", "hubspot", "mautic", "n8n"):
            assert 'name="crms" value="%s"' % crm in html
        assert 'name="post" value="yes"' in html
        assert not ContactSync.objects.exists(), "nothing changes before confirmation"

    def test_confirming_queues_the_chosen_contacts_for_the_chosen_crms(self, staff_client, make_contacts, make_contact):
        contacts = make_contacts(3)
        other = make_contact()
        response = post_action(
            staff_client,
            "queue_for_crm",
            contacts.values_list("pk", flat=True),
            post="yes",
            crms=["brevo", "hubspot"],
        )

        assert response.status_code == 302
        assert messages_of(response) == ["3 contacts queued for Brevo and HubSpot."]
        rows = ContactSync.objects.all()
        assert rows.count() == 6
        assert set(rows.values_list("sync_status", "processing_status")) == {(S.SELECTED, P.QUEUED)}
        assert not rows.filter(contact=other).exists()

    def test_select_across_pages_applies_to_every_filtered_contact(self, staff_client, make_contacts, make_contact):
        contacts = make_contacts(150, prefix="acme")  # more than one page of 100
        outsider = make_contact(email="someone@else.test")
        url = CHANGELIST + "?q=acme"
        # As a browser does: the ids on the page shown, plus "select all 150".
        first_page = list(contacts.values_list("pk", flat=True)[:100])

        page = post_action(staff_client, "queue_for_crm", first_page, select_across=True, url=url)
        assert "This applies to 150 contacts." in page.content.decode()
        assert 'name="select_across" value="1"' in page.content.decode()

        response = post_action(
            staff_client, "queue_for_crm", first_page, select_across=True, url=url, post="yes", crms=["n8n"]
        )
        assert messages_of(response) == ["150 contacts queued for n8n."]
        assert ContactSync.objects.filter(crm="n8n").count() == 150
        assert not ContactSync.objects.filter(contact=outsider).exists()

    def test_confirming_without_a_crm_shows_the_page_again_with_an_error(self, staff_client, make_contacts):
        contacts = make_contacts(2)
        response = post_action(staff_client, "queue_for_crm", contacts.values_list("pk", flat=True), post="yes")
        assert response.status_code == 200
        assert "Choose at least one CRM." in response.content.decode()
        assert not ContactSync.objects.exists()

    def test_reports_syncs_left_to_finish(self, staff_client, make_contact, make_sync):
        busy = make_contact()
        make_sync(busy, "brevo", sync_status=S.SELECTED, processing_status=P.PROCESSING)
        idle = make_contact()
        response = post_action(staff_client, "queue_for_crm", [busy.pk, idle.pk], post="yes", crms=["brevo"])
        assert messages_of(response) == [
            "2 contacts queued for Brevo.",
            "1 sync is being pushed right now; the decision takes effect when its push ends.",
        ]
        assert ContactSync.objects.get(contact=busy).processing_status == P.PROCESSING

    def test_refused_without_change_permission(self, viewer_client, make_contacts):
        contacts = make_contacts(2)
        response = post_action(
            viewer_client, "queue_for_crm", contacts.values_list("pk", flat=True), post="yes", crms=["brevo"]
        )
        # With no action open to them, Django ignores the post and shows the list.
        assert response.status_code == 200
        assert "queued for" not in " ".join(messages_of(response))
        assert not ContactSync.objects.exists()

    def test_anonymous_users_are_sent_to_log_in(self, client, make_contacts):
        contacts = make_contacts(1)
        response = post_action(
            client, "queue_for_crm", contacts.values_list("pk", flat=True), post="yes", crms=["brevo"]
        )
        assert response.status_code == 302 and "/login/" in response["Location"]
        assert not ContactSync.objects.exists()


class TestSkipAction:
    def test_confirming_skips_for_the_chosen_crms(self, staff_client, make_contact, make_sync):
        contact = make_contact()
        make_sync(contact, "brevo", sync_status=S.SELECTED, processing_status=P.QUEUED, next_attempt_at=timezone.now())

        page = post_action(staff_client, "skip_for_crm", [contact.pk])
        assert "This applies to 1 contact." in page.content.decode()

        response = post_action(staff_client, "skip_for_crm", [contact.pk], post="yes", crms=["brevo", "mautic"])
        assert messages_of(response) == ["1 contact will be skipped for Brevo and Mautic."]
        assert set(ContactSync.objects.values_list("crm", "sync_status", "processing_status")) == {
            ("brevo", S.SKIPPED, P.NONE),
            ("mautic", S.SKIPPED, P.NONE),
        }


class TestRetryAction:
    def test_requeues_only_failed_rows(self, staff_client, make_contact, make_sync):
        failed = make_contact()
        make_sync(failed, "brevo", sync_status=S.ERROR, processing_status=P.ERROR, attempts=4, last_error="x")
        make_sync(failed, "hubspot", sync_status=S.COMPLETE, processing_status=P.COMPLETE)

        response = post_action(staff_client, "retry_failed", [failed.pk])

        assert messages_of(response) == ["1 failed sync queued again."]
        assert set(ContactSync.objects.values_list("crm", "sync_status", "attempts")) == {
            ("brevo", S.SELECTED, 0),
            ("hubspot", S.COMPLETE, 0),
        }

    def test_says_so_when_nothing_failed(self, staff_client, make_contact):
        response = post_action(staff_client, "retry_failed", [make_contact().pk])
        assert messages_of(response) == ["None of the selected contacts has a failed sync."]

    def test_from_the_sync_list(self, staff_client, make_contact, make_sync):
        failed = make_sync(make_contact(), "hubspot", sync_status=S.ERROR, processing_status=P.ERROR)
        response = post_action(staff_client, "retry_failed_syncs", [failed.pk], url=SYNC_CHANGELIST)
        assert messages_of(response) == ["1 failed sync queued again."]
        failed.refresh_from_db()
        assert (failed.sync_status, failed.processing_status) == (S.SELECTED, P.QUEUED)


class TestContactPage:
    def test_shows_sync_rows_read_only_and_recent_attempts(self, staff_client, make_contact, make_sync):
        contact = make_contact(email="ann@example.com")
        make_sync(contact, "brevo", sync_status=S.ERROR, processing_status=P.ERROR, last_error="Key not found")
        SyncAttempt.objects.create(
            contact=contact,
            crm="brevo",
            attempted_at=timezone.now() - timedelta(minutes=1),
            outcome="failed",
            http_status=401,
            error="Brevo rejected the API key",
        )

        response = staff_client.get(reverse("admin:contacts_contact_change", args=[contact.pk]))

        html = response.content.decode()
        assert response.status_code == 200
        assert "Key not found" in html
        assert "Brevo rejected the API key" in html and "<td>401</td>" in html
        assert 'name="syncs-0-sync_status"' not in html, "status fields are read-only"

    def test_links_to_the_hubspot_record_when_the_portal_is_known(
        self, staff_client, make_contact, make_sync, settings
    ):
        contact = make_contact()
        make_sync(contact, "hubspot", sync_status=S.COMPLETE, processing_status=P.COMPLETE, external_id="501")
        url = reverse("admin:contacts_contact_change", args=[contact.pk])
        assert "app.hubspot.com" not in staff_client.get(url).content.decode()
        settings.HUBSPOT_PORTAL_ID = "987"
        assert 'href="https://app.hubspot.com/contacts/987/record/0-1/501"' in staff_client.get(url).content.decode()

    def test_saving_the_contact_leaves_sync_rows_unchanged(self, staff_client, make_contact, make_sync):
        contact = make_contact(email="ann@example.com")
        make_sync(contact, "brevo", sync_status=S.COMPLETE, processing_status=P.COMPLETE)
        url = reverse("admin:contacts_contact_change", args=[contact.pk])
        response = staff_client.post(
            url,
            {
                "email": "ann@example.com",
                "first_name": "Annie",
                "last_name": "",
                "phone": "",
                "company": "",
                "website": "",
                "source_url": "",
                "attributes": "{}",
                "syncs-TOTAL_FORMS": "1",
                "syncs-INITIAL_FORMS": "1",
                "syncs-MIN_NUM_FORMS": "0",
                "syncs-MAX_NUM_FORMS": "1000",
                "syncs-0-id": str(contact.syncs.get().pk),
                "syncs-0-contact": str(contact.pk),
            },
        )
        assert response.status_code == 302, response.content.decode()[:2000]
        contact.refresh_from_db()
        assert contact.first_name == "Annie"
        assert contact.syncs.get().sync_status == S.COMPLETE


@pytest.mark.parametrize(
    "url",
    [
        reverse("admin:contacts_contactsync_changelist"),
        reverse("admin:contacts_syncattempt_changelist"),
        reverse("admin:index"),
    ],
)
def test_admin_pages_load(staff_client, url, make_contact, make_sync):
    make_sync(make_contact())
    assert staff_client.get(url).status_code == 200


def test_crm_state_page_shows_a_pause_and_its_reason(admin_client):
    from integrations.models import CRMState

    CRMState.objects.create(
        crm="brevo", paused_until=timezone.now() + timedelta(minutes=5), pause_reason="Brevo: too many requests"
    )
    html = admin_client.get(reverse("admin:integrations_crmstate_changelist")).content.decode()
    assert "Brevo: too many requests" in html
    assert 'alt="True"' in html
