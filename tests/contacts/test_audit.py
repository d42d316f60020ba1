"""contacts.audit: one admin log entry per staff action."""

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import AnonymousUser, User

from contacts import audit
from contacts.models import Contact

pytestmark = pytest.mark.django_db


def test_an_action_on_many_contacts_is_one_entry_naming_count_and_crms():
    staff = User.objects.create_user("ann")
    entry = audit.record(staff, "Queued", count=1200, crms=["brevo", "hubspot"])
    assert LogEntry.objects.get() == entry
    assert (entry.user, entry.object_id) == (staff, None)
    assert entry.get_change_message() == "Queued 1,200 contacts for Brevo, HubSpot"


def test_an_action_on_one_contact_shows_on_its_history():
    staff = User.objects.create_user("ann")
    contact = Contact.objects.create(email="one@example.com")
    audit.record(staff, "Skipped", count=1, crms=["n8n"], contact=contact, detail="From the API.")
    (entry,) = LogEntry.objects.filter(object_id=str(contact.pk), content_type__model="contact")
    assert entry.get_change_message() == "Skipped 1 contact for n8n. From the API."


def test_nobody_to_name_writes_nothing():
    assert audit.record(None, "Imported", count=3) is None
    assert audit.record(AnonymousUser(), "Imported", count=3) is None
    assert not LogEntry.objects.exists()


def test_the_entry_never_names_the_contact_by_email():
    # An erased person's address must not outlive them in the log.
    staff = User.objects.create_user("ann")
    contact = Contact.objects.create(email="private@example.com")
    entry = audit.record(staff, "Queued", count=1, crms=["brevo"], contact=contact)
    assert entry.object_repr == "Queued 1 contact for Brevo"
    assert "private" not in entry.get_change_message()


def test_an_action_on_a_crm_itself_names_no_count():
    staff = User.objects.create_user("ann")
    assert audit.record(staff, "Paused", count=None, crms=["hubspot"]).object_repr == "Paused HubSpot"


def test_forgetting_contacts_blanks_their_email_in_djangos_own_entries():
    staff = User.objects.create_user("ann")
    erased, kept = Contact.objects.create(email="gone@example.com"), Contact.objects.create(email="kept@example.com")
    for contact in (erased, kept):
        LogEntry.objects.log_actions(
            staff.pk, [contact], CHANGE, change_message="Changed first name.", single_object=True
        )

    assert audit.forget_contacts([erased.pk]) == 1

    assert set(LogEntry.objects.values_list("object_repr", flat=True)) == {"(erased contact)", "kept@example.com"}
