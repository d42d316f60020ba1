"""The bulk upsert with CRMs: an unchanged contact already Complete is not queued again."""

import pytest

from contacts.models import ContactSync, ProcessingStatus, SyncStatus

from .conftest import CHANGE_CONTACTS
from .test_bulk import URL


@pytest.mark.django_db
def test_unchanged_complete_contacts_are_counted_unchanged_and_not_queued(client_with, make_contact, make_sync):
    client = client_with(CHANGE_CONTACTS)
    synced = make_contact(email="synced@example.com", first_name="Sy")
    make_sync(synced, "brevo", sync_status=SyncStatus.COMPLETE, processing_status=ProcessingStatus.COMPLETE)
    make_contact(email="never@example.com", first_name="Ne")

    response = client.post(
        URL,
        {
            "contacts": [{"email": "synced@example.com", "first_name": "Sy"}, {"email": "never@example.com"}],
            "crms": ["brevo"],
        },
        format="json",
    )

    body = response.json()
    assert body["totals"] == {"created": 0, "updated": 0, "unchanged": 2, "rejected": 0}
    assert body["queued_count"] == 1
    statuses = dict(ContactSync.objects.values_list("contact__email", "processing_status"))
    assert statuses == {"synced@example.com": ProcessingStatus.COMPLETE, "never@example.com": ProcessingStatus.QUEUED}
