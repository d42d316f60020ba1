"""crmsync against the sandbox's Mautic over real sockets, configured as a real
instance would be (OAuth2 client credentials, not sandbox mode)."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from contacts import selection
from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus
from crm_sandbox import mautic as mautic_sandbox
from integrations.backends.mautic import MauticBackend
from integrations.models import CRMState

pytestmark = pytest.mark.django_db


@pytest.fixture
def mautic_over_oauth2(sandbox, settings):
    MauticBackend._tokens.clear()
    settings.CRMSYNC_SANDBOX_URL = ""
    settings.MAUTIC_BASE_URL = sandbox.url + "/mautic"
    settings.MAUTIC_CLIENT_ID = mautic_sandbox.CLIENT_ID
    settings.MAUTIC_CLIENT_SECRET = mautic_sandbox.CLIENT_SECRET
    yield sandbox
    MauticBackend._tokens.clear()


def sync():
    out = StringIO()
    call_command("sync_crm", "--crm", "mautic", stdout=out, stderr=StringIO())
    return out.getvalue()


def test_an_instance_with_its_api_disabled_pauses_mautic_at_the_token_request(mautic_over_oauth2):
    sandbox = mautic_over_oauth2
    sandbox.settings("mautic", api_enabled=False)
    Contact.objects.bulk_create(Contact(email="m%d@example.com" % i) for i in range(3))
    selection.select(Contact.objects.all(), ["mautic"])

    out = sync()

    assert "Mautic's API is disabled: enable it" in out
    assert "Mautic's API is disabled: enable it" in CRMState.objects.get(crm="mautic").pause_reason
    rows = ContactSync.objects.filter(crm="mautic")
    assert set(rows.values_list("processing_status", "attempts")) == {(ProcessingStatus.QUEUED, 0)}, "no attempt spent"
    assert [(r["path"], r["status"]) for r in sandbox.requests("mautic")] == [("/oauth/v2/token", 403)]

    # Once the API is enabled and the pause is over, the same contacts go through.
    sandbox.settings("mautic", api_enabled=True)
    CRMState.objects.filter(crm="mautic").update(paused_until=timezone.now())
    rows.update(next_attempt_at=timezone.now())  # they waited for the pause to end
    sync()

    assert set(rows.values_list("sync_status", "attempts")) == {(SyncStatus.COMPLETE, 1)}
    assert len(sandbox.contacts("mautic")) == 3
