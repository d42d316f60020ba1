"""The contact page reads as finished: attempts at Django's date format, no stray
row captions in the per-CRM table, attributes as a name/value table with a JSON
editor that refuses what a contact cannot keep."""

import json
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from contacts.forms import ContactForm
from contacts.models import SyncAttempt

pytestmark = pytest.mark.django_db


def contact_page(client, contact):
    return client.get(reverse("admin:contacts_contact_change", args=[contact.pk])).content.decode()


def test_recent_attempts_show_a_formatted_time_and_a_clamped_error(admin_client, make_contact):
    contact = make_contact()
    moment = timezone.now().replace(microsecond=123456)
    error = "Brevo refused it:" + " a very long reason" * 30
    SyncAttempt.objects.create(contact=contact, crm="brevo", outcome="permanent", attempted_at=moment, error=error)
    html = contact_page(admin_client, contact)
    table = html[html.index('class="crm-attempts"') :]
    assert "123456" not in table and str(moment) not in table
    assert re.search(r"<td>\d\d/\d\d/\d{4} \d", table), "the time as SHORT_DATETIME_FORMAT"
    assert '<span class="crm-clamp" title="%s">' % error in table, "all of it in the tooltip"
    assert table.count(error) == 1, "the cell shows only its start"


def test_the_per_crm_rows_have_no_caption_repeating_the_contact_id(admin_client, make_contact, make_sync):
    contact = make_contact()
    make_sync(contact, "brevo")
    html = contact_page(admin_client, contact)
    assert "%d for Brevo" % contact.pk not in html
    assert 'name="syncs-0-id"' in html, "the inline is still a formset"


def test_attributes_show_as_a_name_value_table(admin_client, make_contact):
    contact = make_contact(attributes={"job_title": "CTO", "source": "<b>fair</b>"})
    html = contact_page(admin_client, contact)
    assert '<th scope="row">job_title</th><td>CTO</td>' in html
    assert "&lt;b&gt;fair&lt;/b&gt;" in html and "<b>fair</b>" not in html


@pytest.mark.parametrize(
    "text, error",
    [
        ('{"job_title": "CTO",}', "not valid JSON"),
        ('["CTO"]', "JSON object"),
        ('{"age": 42}', "must be text"),
        ('{" ": "x"}', "needs a name"),
        ('{"bio": "%s"}' % ("x" * 2001), "2000"),
    ],
)
def test_the_attributes_editor_refuses_what_a_contact_cannot_keep(text, error):
    form = ContactForm(data={"attributes": text})
    assert not form.is_valid()
    assert error in " ".join(form.errors["attributes"])


def test_the_attributes_editor_lays_json_out_and_takes_an_empty_box_as_none():
    shown = ContactForm(initial={"attributes": {"b": "2", "a": "1"}})["attributes"].value()
    assert ContactForm.base_fields["attributes"].prepare_value({"b": "2", "a": "1"}) == json.dumps(
        {"a": "1", "b": "2"}, indent=2
    )
    assert shown is not None
    form = ContactForm(data={"attributes": ""})
    assert form.is_valid() and form.cleaned_data["attributes"] == {}


def test_saving_the_contact_page_keeps_edited_attributes(admin_client, make_contact):
    contact = make_contact(attributes={"job_title": "CTO"})
    url = reverse("admin:contacts_contact_change", args=[contact.pk])
    data = {
        "email": contact.email,
        "attributes": '{"job_title": "CEO", "source": "fair"}',
        "syncs-TOTAL_FORMS": "0",
        "syncs-INITIAL_FORMS": "0",
        "syncs-MIN_NUM_FORMS": "0",
        "syncs-MAX_NUM_FORMS": "1000",
    }
    assert admin_client.post(url, data).status_code == 302
    contact.refresh_from_db()
    assert contact.attributes == {"job_title": "CEO", "source": "fair"}


def test_the_per_crm_rows_clamp_a_long_error_with_all_of_it_in_the_tooltip(admin_client, make_contact, make_sync):
    contact = make_contact()
    error = "HubSpot refused it:" + " a long reason" * 40
    make_sync(contact, "hubspot", sync_status="error", processing_status="error", last_error=error)
    html = contact_page(admin_client, contact)
    group = html[html.index('id="syncs-group"') :]
    assert '<span class="crm-clamp" title="%s">' % error in group
    assert group.count(error) == 1, "the cell shows only its start"
