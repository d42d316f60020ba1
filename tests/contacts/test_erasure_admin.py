"""Erasure in the admin: the contacts' erase action and its confirmation page, the
per-contact erase page, the erasures as read-only proof (never the email), their
cancel action, and the suppression list with its search and lift action."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import get_messages
from django.urls import reverse

from contacts import erasure
from contacts.models import (
    Contact,
    ContactSync,
    Erasure,
    ErasureOutcome,
    ErasureStatus,
    Operation,
    Suppression,
)
from contacts.suppression import email_hash

CONTACTS = reverse("admin:contacts_contact_changelist")
ERASURES = reverse("admin:contacts_erasure_changelist")
SUPPRESSIONS = reverse("admin:contacts_suppression_changelist")

pytestmark = pytest.mark.django_db


def post_action(client, url, action, ids, **extra):
    return client.post(url, {"action": action, "index": 0, ACTION_CHECKBOX_NAME: [str(i) for i in ids], **extra})


def messages_of(response):
    return [str(message) for message in get_messages(response.wsgi_request)]


def start_erasure(email, by="alice"):
    return erasure.start([email], requested_by=by, via="admin")[0]


class TestEraseConfirmation:
    def test_says_per_crm_what_happens_and_starts_nothing(
        self, eraser_client, make_contact, configure_crms, suppression_key
    ):
        configure_crms("brevo", "hubspot", "n8n")
        ann = make_contact(email="ann@example.com")

        response = post_action(eraser_client, CONTACTS, "erase_from_every_crm", [ann.pk])

        assert response.status_code == 200
        plan = {label: (configured, str(what)) for label, configured, what in response.context["plan"]}
        assert plan == {
            "Brevo": (True, "The contact is deleted."),
            "HubSpot": (
                True,
                "GDPR delete: permanently deletes the contact and blocks the email from being re-created in HubSpot.",
            ),
            "Mautic": (False, "Not configured: erase there by hand."),
            "n8n": (True, 'An "erase" event is sent to the workflow, which must do the erasing.'),
        }
        html = response.content.decode()
        assert "ann@example.com" in html
        assert "Not configured: erase there by hand." in html
        assert "The local contact is deleted once every CRM has confirmed" in html
        assert "suppression list" in html
        assert 'class="button cancel-link"' in html
        assert not Erasure.objects.exists()

    def test_mautic_configured_says_the_contact_is_deleted(
        self, eraser_client, make_contact, configure_crms, suppression_key
    ):
        configure_crms("mautic")
        response = post_action(eraser_client, CONTACTS, "erase_from_every_crm", [make_contact().pk])
        plan = {label: (configured, str(what)) for label, configured, what in response.context["plan"]}
        assert plan["Mautic"] == (True, "The contact is deleted.")
        assert plan["Brevo"] == (False, "Not configured: erase there by hand.")

    def test_confirming_starts_an_erasure_per_contact_and_shows_the_erasures(
        self, eraser_client, make_contact, configure_crms, suppression_key
    ):
        configure_crms("brevo")
        ann, bob = make_contact(email="ann@example.com"), make_contact(email="bob@example.com")

        response = post_action(eraser_client, CONTACTS, "erase_from_every_crm", [ann.pk, bob.pk], post="yes")

        assert response.status_code == 302
        assert response.url == ERASURES
        assert "Erasure started for 2 contacts" in messages_of(response)[0]
        erasures = Erasure.objects.order_by("email")
        assert [(e.requested_by, e.requested_via, e.status) for e in erasures] == [("eraser", "admin", "pending")] * 2
        assert set(Suppression.objects.values_list("email_hash", flat=True)) == {
            email_hash("ann@example.com"),
            email_hash("bob@example.com"),
        }
        rows = ContactSync.objects.filter(crm="brevo", operation=Operation.ERASE)
        assert set(rows.values_list("contact__email", flat=True)) == {"ann@example.com", "bob@example.com"}

    def test_without_the_key_it_says_so_and_does_nothing(
        self, eraser_client, make_contact, configure_crms, no_suppression_key
    ):
        configure_crms("brevo")
        ann = make_contact()

        for extra in ({}, {"post": "yes"}):
            response = post_action(eraser_client, CONTACTS, "erase_from_every_crm", [ann.pk], **extra)
            assert response.status_code == 302
            assert "CRMSYNC_SUPPRESSION_KEY is not set" in messages_of(response)[-1]
        assert not Erasure.objects.exists()
        assert not Suppression.objects.exists()
        assert Contact.objects.filter(pk=ann.pk).exists()


class TestContactPage:
    def test_links_to_its_erase_page_which_erases_that_contact(
        self, eraser_client, make_contact, configure_crms, suppression_key
    ):
        configure_crms("brevo")
        ann, other = make_contact(email="ann@example.com"), make_contact()
        erase_url = reverse("admin:contacts_contact_erase", args=[ann.pk])

        assert erase_url in eraser_client.get(reverse("admin:contacts_contact_change", args=[ann.pk])).content.decode()
        page = eraser_client.get(erase_url)
        assert page.status_code == 200
        assert page.context["contact_count"] == 1

        response = eraser_client.post(erase_url, {"post": "yes"})

        assert response.url == ERASURES
        assert Erasure.objects.get().email_hash == email_hash("ann@example.com")
        assert not ContactSync.objects.filter(contact=other).exists()


class TestErasureAdmin:
    def test_lists_pending_first_with_each_crms_outcome_and_never_the_email(
        self, eraser_client, configure_crms, suppression_key
    ):
        configure_crms("brevo")
        # The pending one is older: by date alone it would come second.
        pending = start_erasure("pending@example.com")
        done = start_erasure("done@example.com")
        erasure.cancel(Erasure.objects.filter(pk=done.pk), cancelled_by="bob")

        response = eraser_client.get(ERASURES)

        html = response.content.decode()
        assert [e.pk for e in response.context["cl"].result_list] == [pending.pk, done.pk]
        assert "1 erasure pending" in html
        assert "Brevo: Pending" in html and "Mautic: Not configured: erase there by hand" in html
        assert "pending@example.com" not in html

    def test_change_view_is_read_only_proof_without_the_email(self, eraser_client, configure_crms, suppression_key):
        configure_crms("brevo")
        pending = start_erasure("pending@example.com")

        response = eraser_client.get(reverse("admin:contacts_erasure_change", args=[pending.pk]))

        html = response.content.decode()
        assert response.status_code == 200
        assert "pending@example.com" not in html
        assert suppression_key not in html
        assert pending.email_hash in html
        assert 'name="_save"' not in html
        assert response.context["has_delete_permission"] is False
        assert eraser_client.get(reverse("admin:contacts_erasure_add")).status_code == 403

    def test_search_by_email_finds_its_erasure(self, eraser_client, configure_crms, suppression_key):
        configure_crms()
        ann = start_erasure("ann@example.com")
        start_erasure("bob@example.com")
        response = eraser_client.get(ERASURES, {"q": "ANN@example.com"})
        assert [e.pk for e in response.context["cl"].result_list] == [ann.pk]

    def test_cancel_erasure(self, eraser_client, configure_crms, suppression_key):
        configure_crms("brevo")
        pending = start_erasure("pending@example.com")

        response = post_action(eraser_client, ERASURES, "cancel_erasure", [pending.pk])

        pending.refresh_from_db()
        assert (pending.status, pending.cancelled_by, pending.email) == (ErasureStatus.CANCELLED, "eraser", "")
        assert pending.results.get(crm="brevo").outcome == ErasureOutcome.CANCELLED
        assert "1 erasure cancelled" in messages_of(response)[0]
        assert Suppression.objects.filter(erasure=pending).exists()


class TestSuppressionAdmin:
    def test_lists_hash_prefixes_and_searches_by_email(self, eraser_client, configure_crms, suppression_key):
        configure_crms()
        ann = start_erasure("ann@example.com")
        start_erasure("bob@example.com")

        everyone = eraser_client.get(SUPPRESSIONS)
        found = eraser_client.get(SUPPRESSIONS, {"q": " Ann@Example.com "})

        assert ann.email_hash[:16] in everyone.content.decode()
        assert [s.erasure_id for s in found.context["cl"].result_list] == [ann.pk]
        assert eraser_client.get(reverse("admin:contacts_suppression_add")).status_code == 403

    def test_lift_asks_first_then_deletes_the_rows(self, eraser_client, configure_crms, suppression_key):
        configure_crms()
        start_erasure("ann@example.com")
        row = Suppression.objects.get()

        asked = post_action(eraser_client, SUPPRESSIONS, "lift_suppression", [row.pk])
        assert asked.status_code == 200 and asked.context["suppression_count"] == 1
        assert Suppression.objects.exists()

        lifted = post_action(eraser_client, SUPPRESSIONS, "lift_suppression", [row.pk], post="yes")

        assert not Suppression.objects.exists()
        assert "1 email lifted" in messages_of(lifted)[0]
        assert Erasure.objects.exists()  # the proof stays
