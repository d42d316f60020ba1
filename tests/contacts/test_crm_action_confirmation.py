"""The confirmation page of queue, skip and set back to New: Django's
delete-confirmation buttons, a table of CRM checkboxes, and per CRM how many of the
chosen contacts are already Complete, queued or in flight, counted in one query."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from contacts.models import ProcessingStatus

from .test_admin import post_action

pytestmark = pytest.mark.django_db
P = ProcessingStatus


def counts_by_crm(html):
    """{crm: [complete, queued, in flight]} read from the page's table."""
    rows = re.findall(
        r'name="crms" value="(\w+)".*?</th>((?:\s*<td class="crm-choice-count">[\d,]+</td>)+)', html, re.S
    )
    return {crm: [int(n.replace(",", "")) for n in re.findall(r">([\d,]+)<", cells)] for crm, cells in rows}


def test_the_page_counts_per_crm_the_chosen_contacts_complete_queued_and_in_flight(
    staff_client, make_contacts, make_contact, make_sync
):
    chosen = list(make_contacts(4))
    for contact, status in zip(chosen, (P.COMPLETE, P.COMPLETE, P.QUEUED, P.PROCESSING)):
        make_sync(contact, "brevo", processing_status=status)
    make_sync(chosen[0], "hubspot", processing_status=P.ERROR)
    make_sync(make_contact(), "brevo", processing_status=P.COMPLETE)  # not chosen

    html = post_action(staff_client, "queue_for_crm", [c.pk for c in chosen]).content.decode()

    assert counts_by_crm(html) == {"brevo": [2, 1, 1], "hubspot": [0, 0, 0], "mautic": [0, 0, 0], "n8n": [0, 0, 0]}


def test_the_counts_take_one_query_however_many_contacts_are_chosen(staff_client, make_contacts, make_sync):
    def queries_for(count):
        contacts = list(make_contacts(count))
        for contact in contacts:
            make_sync(contact, "brevo", processing_status=P.COMPLETE)
        with CaptureQueriesContext(connection) as queries:
            html = post_action(staff_client, "skip_for_crm", [c.pk for c in contacts]).content.decode()
        assert counts_by_crm(html)["brevo"] == [count, 0, 0]
        return len(queries)

    assert queries_for(2) == queries_for(25)


def test_the_buttons_are_djangos_delete_confirmation_markup(staff_client, make_contacts):
    html = post_action(staff_client, "unselect_for_crm", make_contacts(1).values_list("pk", flat=True)).content.decode()
    assert re.search(r'<body class="[^"]*\bdelete-confirmation\b[^"]*\bcrm-action-confirmation\b', html)
    start = html.index('<form method="post">')
    form = html[start : html.index("</form>", start)]
    assert 'class="button cancel-link"' in form and "submit-row" not in form
    assert re.search(r'<input type="checkbox" name="crms" value="brevo"[^>]*id="id_crms_0"', form)
    assert '<label for="id_crms_0">Brevo</label>' in form
