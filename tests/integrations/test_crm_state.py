"""CRMState is the one place that decides whether a CRM is paused; the read-only
admin list shows that decision, not a rule of its own."""

from datetime import timedelta

import pytest
from django.contrib.admin.sites import site
from django.utils import timezone

from integrations.models import CRMState

pytestmark = pytest.mark.django_db


def admin_says_paused(state):
    return site._registry[CRMState].is_paused(state)


@pytest.mark.parametrize(
    "fields, paused",
    [
        ({}, False),
        ({"paused_at": "now", "paused_by": "ann"}, True),  # staff: until resumed
        ({"paused_until": "+1"}, True),  # the CRM's own pause, still running
        ({"paused_until": "-1"}, False),  # ... and over
        ({"next_probe_at": "+1", "failing_since": "-1"}, True),  # circuit breaker, probe ahead
        ({"next_probe_at": "-1", "failing_since": "-1"}, False),  # probe due: a worker may claim
    ],
)
def test_the_admin_list_shows_every_kind_of_pause_the_model_decides(fields, paused):
    now = timezone.now()
    moments = {"now": now, "+1": now + timedelta(minutes=1), "-1": now - timedelta(minutes=1)}
    state = CRMState.objects.create(crm="brevo", **{k: moments.get(v, v) for k, v in fields.items()})
    assert (CRMState.objects.paused("brevo") is not None) is paused
    assert admin_says_paused(state) is paused
