"""The CRM states list: a CRM staff paused shows as paused, with who paused it and
since when; the CRM's own pause and the circuit breaker say so in the same column."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from integrations.models import CRMState

pytestmark = pytest.mark.django_db


def changelist_rows(admin_client):
    response = admin_client.get(reverse("admin:integrations_crmstate_changelist"))
    assert response.status_code == 200
    return response


def row_of(html, label):
    """The <tr> of the CRM named `label` in the changelist HTML."""
    start = html.index(">%s<" % label)
    return html[html.rindex("<tr", 0, start) : html.index("</tr>", start)]


def test_a_crm_paused_by_staff_shows_paused_with_who_paused_it(admin_client):
    CRMState.objects.pause_by_staff("brevo", "ann.staff")
    CRMState.objects.ensure("hubspot")
    html = changelist_rows(admin_client).content.decode()

    assert "paused by" in html.lower()  # the column header
    brevo = row_of(html, "Brevo")
    assert 'alt="True"' in brevo
    assert "ann.staff" in brevo
    assert "until resumed" in brevo
    hubspot = row_of(html, "HubSpot")
    assert 'alt="False"' in hubspot
    assert "ann.staff" not in hubspot


def test_the_paused_by_column_names_the_crm_or_the_breaker_when_no_one_paused_it(admin_client):
    now = timezone.now()
    CRMState.objects.create(crm="brevo", paused_until=now + timedelta(minutes=5), pause_reason="Rate limited (429).")
    CRMState.objects.create(crm="hubspot", next_probe_at=now + timedelta(minutes=1), failing_since=now)
    html = changelist_rows(admin_client).content.decode()

    brevo = row_of(html, "Brevo")
    assert "the CRM" in brevo and "Rate limited (429)." in brevo
    assert "the circuit breaker" in row_of(html, "HubSpot")


def test_the_reason_of_a_pause_that_ended_stays_marked_as_over(admin_client):
    CRMState.objects.create(
        crm="brevo", paused_until=timezone.now() - timedelta(minutes=1), pause_reason="Rate limited (429)."
    )
    brevo = row_of(changelist_rows(admin_client).content.decode(), "Brevo")
    assert 'alt="False"' in brevo
    assert "Last pause, over: Rate limited (429)." in brevo
