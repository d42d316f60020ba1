import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus


def test_email_is_stored_lower_cased_and_found_whatever_its_case(make_contact):
    contact = make_contact(email="  Ann.Lee@Example.COM ")
    contact.refresh_from_db()
    assert contact.email == "ann.lee@example.com"
    assert Contact.objects.get(email="ANN.LEE@example.com") == contact


def test_email_is_unique_ignoring_case(make_contact):
    make_contact(email="ann@example.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        Contact.objects.create(email="ANN@example.com")


def test_database_refuses_an_upper_case_email_written_around_the_orm(make_contact):
    contact = make_contact(email="ann@example.com")
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE contacts_contact SET email = 'Ann@example.com' WHERE id = %s", [contact.pk])


def test_one_sync_row_per_contact_and_crm(make_contact, make_sync):
    contact = make_contact()
    make_sync(contact, "brevo")
    make_sync(contact, "hubspot")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_sync(contact, "brevo")


def test_crm_must_be_a_registered_backend(make_contact):
    sync = ContactSync(contact=make_contact(), crm="salesforce")
    with pytest.raises(ValidationError) as excinfo:
        sync.full_clean()
    assert "salesforce is not a known CRM" in str(excinfo.value)
    assert "brevo" in str(excinfo.value)


def test_new_sync_row_defaults_to_new_and_no_processing(make_contact, make_sync):
    sync = make_sync(make_contact())
    assert sync.sync_status == SyncStatus.NEW
    assert sync.processing_status == ProcessingStatus.NONE
    assert sync.attempts == 0


def test_due_queued_rows_have_a_partial_index(on_postgres, db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'contactsync_due_queued'")
        (definition,) = cursor.fetchone()
    assert "(crm, next_attempt_at)" in definition
    assert "WHERE" in definition and "'queued'" in definition


def test_due_rows_query_uses_the_partial_index(on_postgres, make_contacts):
    from contacts import selection

    contacts = make_contacts(2000)
    selection.select(contacts.filter(pk__lte=contacts.order_by("pk")[10].pk), ["brevo"])
    selection.skip(contacts, ["hubspot"])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE contacts_contactsync")
    due = ContactSync.objects.filter(
        crm="brevo", processing_status=ProcessingStatus.QUEUED, next_attempt_at__lte=timezone.now()
    ).order_by("next_attempt_at")[:100]
    assert "contactsync_due_queued" in due.explain()
