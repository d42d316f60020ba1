"""Numbers are written one way (intcomma: "1,001") in the admin's lists, pages and
messages, and the two status filters say which status they are about."""

import re

import pytest
from django.urls import reverse

from .test_admin import messages_of, post_action

pytestmark = pytest.mark.django_db
CONTACTS = reverse("admin:contacts_contact_changelist")
SYNCS = reverse("admin:contacts_contactsync_changelist")


def text_of(html):
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.mark.parametrize("url", [CONTACTS, SYNCS])
def test_the_two_status_filters_have_their_own_titles_and_choices(admin_client, url):
    filters = admin_client.get(url).content.decode()
    filters = text_of(filters[filters.index('id="changelist-filter"') :])
    assert "By staff decision (sync status)" in filters and "By work (processing status)" in filters
    for status in ("Complete", "Error"):
        assert "Decision: %s" % status in filters and "Work: %s" % status in filters
        assert not re.search(r"(?<!: )\b%s\b" % status, filters), "%s alone would say neither status" % status


def test_the_sync_list_filters_keep_djangos_parameters(admin_client, make_contact, make_sync):
    make_sync(make_contact(email="done@example.com"), sync_status="complete", processing_status="complete")
    make_sync(make_contact(email="queued@example.com"), sync_status="selected", processing_status="queued")
    listed = admin_client.get(SYNCS, {"processing_status__exact": "queued"}).content.decode()
    assert "queued@example.com" in listed and "done@example.com" not in listed
    assert admin_client.get(SYNCS, {"sync_status__exact": "zzz"})["Location"].endswith("?e=1")


def test_counts_and_messages_are_written_with_a_thousands_separator(admin_client, make_contacts):
    contacts = make_contacts(1001)
    page = text_of(admin_client.get(CONTACTS).content.decode())
    assert "1,001 contacts" in page and "Select all 1,001 contacts" in page
    assert not re.search(r"\b1001\b", page)

    response = post_action(
        admin_client, "queue_for_crm", [contacts[0].pk], select_across=True, post="yes", crms=["brevo"]
    )
    assert messages_of(response) == ["1,001 contacts queued for Brevo."]
