"""The audit trail: every staff action, in the admin or through the API, is one
entry in Django's admin log (who, how many, which CRMs), tied to the contact when
it was on one, so that it shows on that contact's History page."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from contacts import erasure
from contacts.models import Contact, ContactSync, Erasure, ProcessingStatus, Suppression, SyncStatus
from integrations.models import CRMState

from .conftest import ERASER_PERMISSIONS, make_staff

pytestmark = pytest.mark.django_db

CONTACTS = reverse("admin:contacts_contact_changelist")
SYNCS = reverse("admin:contacts_contactsync_changelist")
ERASURES = reverse("admin:contacts_erasure_changelist")
SUPPRESSIONS = reverse("admin:contacts_suppression_changelist")
STAFF_PERMISSIONS = (*ERASER_PERMISSIONS, "view_contactsync", "change_contactsync")


@pytest.fixture
def staff(client):
    user = make_staff("ann", *STAFF_PERMISSIONS)
    user.user_permissions.add(Permission.objects.get(codename="pause_crm"))
    client.force_login(user)
    return user


def post_action(client, url, action, ids, **extra):
    return client.post(url, {"action": action, "index": 0, ACTION_CHECKBOX_NAME: [str(i) for i in ids], **extra})


def people(count):
    return [Contact.objects.create(email="person%d@example.com" % i) for i in range(count)]


def the_entry():
    """The one entry in the log (the test fails if there are more or none)."""
    (entry,) = LogEntry.objects.all()
    return entry


def on_history_of(contact):
    return LogEntry.objects.filter(content_type__model="contact", object_id=str(contact.pk))


def failed(contact, crm):
    return ContactSync.objects.create(
        contact=contact, crm=crm, sync_status=SyncStatus.ERROR, processing_status=ProcessingStatus.ERROR
    )


class TestAdminActions:
    @pytest.mark.parametrize(
        "action, verb",
        [("queue_for_crm", "Queued"), ("skip_for_crm", "Skipped"), ("unselect_for_crm", "Unselected")],
    )
    def test_a_decision_on_many_contacts_is_one_entry(self, client, staff, action, verb):
        contacts = people(3)
        response = post_action(
            client, CONTACTS, action, [c.pk for c in contacts], post="yes", crms=["brevo", "hubspot"]
        )

        assert response.status_code == 302
        entry = the_entry()
        assert entry.user == staff
        assert entry.get_change_message() == "%s 3 contacts for Brevo, HubSpot" % verb
        assert entry.object_id is None
        assert entry.action_time is not None

    def test_nothing_is_recorded_before_confirmation(self, client, staff):
        post_action(client, CONTACTS, "queue_for_crm", [c.pk for c in people(2)])
        assert not LogEntry.objects.exists()

    def test_a_decision_on_one_contact_shows_on_its_history_page(self, client, staff):
        (contact,) = people(1)
        post_action(client, CONTACTS, "queue_for_crm", [contact.pk], post="yes", crms=["mautic"])

        (entry,) = on_history_of(contact)
        assert entry.get_change_message() == "Queued 1 contact for Mautic"
        history = client.get(reverse("admin:contacts_contact_history", args=[contact.pk]))
        assert "Queued 1 contact for Mautic" in history.content.decode()
        # The index's Recent actions link to the contact without naming it by email.
        index = client.get(reverse("admin:index")).content.decode()
        assert reverse("admin:contacts_contact_change", args=[contact.pk]) in index
        assert contact.email not in index

    def test_retry_counts_the_syncs_queued_again_and_names_their_crms(self, client, staff):
        first, second, fine = people(3)
        failed(first, "brevo")
        failed(first, "n8n")
        failed(second, "brevo")

        post_action(client, CONTACTS, "retry_failed", [first.pk, second.pk, fine.pk])

        entry = the_entry()
        assert (entry.user, entry.object_id) == (staff, None)
        assert entry.get_change_message() == "Retried 3 contact syncs for Brevo, n8n"

    def test_a_retry_that_finds_nothing_failed_is_not_recorded(self, client, staff):
        post_action(client, CONTACTS, "retry_failed", [c.pk for c in people(2)])
        assert not LogEntry.objects.exists()

    def test_retry_from_the_sync_list_on_one_contact_shows_on_its_history(self, client, staff):
        (contact,) = people(1)
        rows = [failed(contact, "brevo"), failed(contact, "hubspot")]

        post_action(client, SYNCS, "retry_failed_syncs", [row.pk for row in rows])

        (entry,) = on_history_of(contact)
        assert entry.get_change_message() == "Retried 2 contact syncs for Brevo, HubSpot"
        assert LogEntry.objects.count() == 1

    def test_retry_from_the_sync_list_on_several_contacts(self, client, staff):
        rows = [failed(contact, "hubspot") for contact in people(2)]
        post_action(client, SYNCS, "retry_failed_syncs", [row.pk for row in rows])
        entry = the_entry()
        assert (entry.object_id, entry.get_change_message()) == (None, "Retried 2 contact syncs for HubSpot")


@pytest.fixture
def pausable(settings):
    """Brevo is configured (so the dashboard can pause it), and nothing else."""
    settings.CRMSYNC_SANDBOX_URL = ""
    settings.BREVO_API_KEY = "brevo-key-for-audit-tests"


class TestDashboard:
    def test_pause_and_resume_are_one_entry_each(self, client, staff, pausable):
        client.post(reverse("admin:crmsync_pause", args=["brevo"]), {"confirm": "yes"})
        client.post(reverse("admin:crmsync_pause", args=["brevo"]), {"confirm": "yes"})  # paused already: nothing done
        client.post(reverse("admin:crmsync_resume", args=["brevo"]))

        entries = LogEntry.objects.order_by("pk")
        assert [e.get_change_message() for e in entries] == ["Paused Brevo", "Resumed Brevo"]
        assert {e.user for e in entries} == {staff}
        assert {e.content_type.model_class() for e in entries} == {CRMState}


class TestErasureAdmin:
    def test_erasing_contacts_is_one_entry_naming_the_crms_asked(self, client, staff, configure_crms, suppression_key):
        configure_crms("brevo", "hubspot")
        contacts = people(2)

        post_action(client, CONTACTS, "erase_from_every_crm", [c.pk for c in contacts], post="yes")

        entry = the_entry()
        assert (entry.user, entry.object_id) == (staff, None)
        assert entry.get_change_message() == "Started 2 erasures for Brevo, HubSpot"

    def test_erasing_one_contact_shows_on_its_erasure_never_naming_the_email(
        self, client, staff, configure_crms, suppression_key
    ):
        configure_crms("mautic")
        (contact,) = people(1)

        client.post(reverse("admin:contacts_contact_erase", args=[contact.pk]), {"post": "yes"})

        entry = the_entry()
        assert entry.content_type.model_class() is Erasure
        assert entry.object_id == str(Erasure.objects.get().pk)
        assert contact.email not in entry.object_repr + entry.get_change_message()

    def test_cancel_is_one_entry(self, client, staff, configure_crms, suppression_key):
        configure_crms("brevo")
        started = erasure.start(["a@example.com", "b@example.com"], requested_by="ann", via="admin")

        post_action(client, ERASURES, "cancel_erasure", [e.pk for e in started])

        entry = the_entry()
        assert (entry.user, entry.get_change_message()) == (staff, "Cancelled 2 erasures")

    def test_lifting_suppressions_is_one_entry_not_one_per_row(self, client, staff, configure_crms, suppression_key):
        configure_crms()
        erasure.start(["a@example.com", "b@example.com", "c@example.com"], requested_by="ann", via="admin")

        rows = Suppression.objects.values_list("pk", flat=True)
        post_action(client, SUPPRESSIONS, "lift_suppression", rows, post="yes")

        entry = the_entry()
        assert (entry.user, entry.action_flag) == (staff, DELETION)
        assert entry.get_change_message() == "Lifted 3 suppressed emails"


API_PERMISSIONS = ("change_contact", "view_contactsync", "pause_crm", "erase_contact")


@pytest.fixture
def token_user(db):
    """A user of the API (no session, no staff flag) and a client with its token."""
    user = User.objects.create_user("robot")
    user.user_permissions.set(Permission.objects.filter(codename__in=API_PERMISSIONS))
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Token %s" % Token.objects.create(user=user).key)
    return user, api


class TestAPI:
    @pytest.mark.parametrize("action, verb", [("select", "Queued"), ("skip", "Skipped"), ("unselect", "Unselected")])
    def test_a_decision_is_one_entry_under_the_tokens_user(self, token_user, action, verb):
        user, api = token_user
        contacts = people(3)
        body = {"contact_ids": [c.pk for c in contacts], "crms": ["brevo", "n8n"], "action": action}

        assert api.put("/api/v3/contacts/crm/select", body, format="json").status_code == 200

        entry = the_entry()
        assert (entry.user, entry.object_id) == (user, None)
        assert entry.get_change_message().startswith("%s 3 contacts for Brevo, n8n. Through the API. " % verb)

    def test_a_decision_on_one_contact_shows_on_its_history(self, token_user):
        _user, api = token_user
        contact, _other = people(2)
        api.put("/api/v3/contacts/crm/select", {"emails": [contact.email], "crms": ["hubspot"]}, format="json")
        (entry,) = on_history_of(contact)
        assert entry.object_repr == "Queued 1 contact for HubSpot"

    def test_retry_counts_the_syncs_queued_again(self, token_user):
        _user, api = token_user
        contacts = people(2)
        failed(contacts[0], "mautic")
        body = {"contact_ids": [c.pk for c in contacts], "crms": ["brevo", "mautic"]}

        api.post("/api/v3/contacts/crm/retry", body, format="json")

        assert the_entry().object_repr == "Retried 1 contact sync for Mautic"

    def test_a_call_that_finds_nobody_is_not_recorded(self, token_user):
        _user, api = token_user
        response = api.put("/api/v3/contacts/crm/select", {"contact_ids": [999], "crms": ["brevo"]}, format="json")
        assert response.status_code == 404
        assert not LogEntry.objects.exists()

    def test_pause_resume_and_sync_now(self, token_user, pausable):
        user, api = token_user
        for action in ("pause", "pause", "resume", "sync"):
            assert api.post("/api/v3/crms/brevo/%s" % action).status_code in (200, 202)

        entries = LogEntry.objects.order_by("pk")
        assert [e.object_repr for e in entries] == ["Paused Brevo", "Resumed Brevo", "Queued a sync tick for Brevo"]
        assert {e.user for e in entries} == {user}

    def test_erase_is_one_entry_tied_to_no_contact(self, token_user, configure_crms, suppression_key):
        user, api = token_user
        configure_crms("brevo")
        contacts = people(2)

        response = api.post("/api/v3/contacts/erase", {"emails": [c.email for c in contacts]}, format="json")

        assert response.status_code == 202
        entry = the_entry()
        assert (entry.user, entry.object_id) == (user, None)
        assert entry.get_change_message() == "Started 2 erasures for Brevo. Through the API."

    def test_bulk_upsert_is_one_entry_with_its_totals(self, token_user):
        user, api = token_user
        (existing,) = people(1)
        items = [{"email": existing.email, "first_name": "Ann"}, {"email": "new@example.com"}, {"email": "bad"}]

        api.post("/api/v3/contacts/bulk", {"contacts": items, "crms": ["brevo"]}, format="json")

        entry = the_entry()
        assert (entry.user, entry.object_id) == (user, None)
        assert entry.get_change_message() == (
            "Upserted 2 contacts for Brevo. Through the API. "
            "1 created, 1 updated, 0 unchanged, 1 rejected; 2 (contact, CRM) pair(s) queued."
        )

    def test_bulk_upsert_of_one_contact_shows_on_its_history(self, token_user):
        _user, api = token_user
        (contact,) = people(1)
        api.post("/api/v3/contacts/bulk", {"contacts": [{"email": contact.email, "company": "Acme"}]}, format="json")
        (entry,) = on_history_of(contact)
        assert entry.object_repr == "Upserted 1 contact"

    def test_a_bulk_upsert_that_rejects_everything_is_not_recorded(self, token_user):
        _user, api = token_user
        api.post("/api/v3/contacts/bulk", {"contacts": [{"email": "bad"}]}, format="json")
        assert not LogEntry.objects.exists()
