"""Every admin list fits a 1366x768 laptop screen with realistic, long data: no
horizontal scroll bar (the page's or the results table's), no clipped column
header, and no row taller than three lines of text. Screenshots of each list go to
test-artifacts/browser/layout-*.png."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from contacts.models import (
    AttemptOutcome,
    Contact,
    ContactSync,
    CRMEvent,
    Erasure,
    ErasureOutcome,
    ErasureResult,
    ErasureStatus,
    ProcessingStatus,
    Suppression,
    SyncAttempt,
    SyncStatus,
)
from integrations.models import CRMState
from tests.browser_support import changelist_layout, laptop_browser, log_in_as_superuser, snap
from tests.integrations.test_browser import wait_for

pytestmark = pytest.mark.browser
CRMS = ("brevo", "hubspot", "mautic", "n8n")
ROWS = 25
LONG_ERROR = (
    'HubSpot refused it: Property values were not valid: [{"isValid":false,"message":"Email address '
    'marie-christine.van-der-berghe-lefebvre@subsidiary-of-a-very-long-company-name.example.com is invalid",'
    '"error":"INVALID_EMAIL","name":"email","localizedErrorMessage":"Email address is invalid"}] '
    "(correlationId 8d5f2a4e-1c3b-4f6e-9a7d-2b8c0e1f3a5d)"
)
LONG_WARNING = (
    "Brevo cannot take the phone '0612 345 678 ext. 4410' (it needs a country code: set "
    "BREVO_DEFAULT_COUNTRY_CODE or store it as +<code><number>); synced without it."
)

LISTS = [
    ("contacts", "admin:contacts_contact_changelist"),
    ("contact-syncs", "admin:contacts_contactsync_changelist"),
    ("sync-attempts", "admin:contacts_syncattempt_changelist"),
    ("crm-states", "admin:integrations_crmstate_changelist"),
    ("erasures", "admin:contacts_erasure_changelist"),
    ("suppressed-emails", "admin:contacts_suppression_changelist"),
]


def long_contacts():
    return Contact.objects.bulk_create(
        Contact(
            email="marie-christine.van-der-berghe-lefebvre.%02d@subsidiary-of-a-long-company-name.example.com" % i,
            first_name="Marie-Christine Anne-Sophie",
            last_name="van der Berghe-Lefebvre de la Tour",
            company="Internationale Handelsgesellschaft für Maschinenbau und Anlagentechnik GmbH & Co. KG",
            phone="0612 345 678",
        )
        for i in range(ROWS)
    )


def syncs_for(contacts, now):
    states = [
        (SyncStatus.ERROR, ProcessingStatus.ERROR, LONG_ERROR, "", ""),
        (SyncStatus.COMPLETE, ProcessingStatus.COMPLETE, "", LONG_WARNING, CRMEvent.values[1]),
        (SyncStatus.SELECTED, ProcessingStatus.QUEUED, LONG_ERROR, "", ""),
        (SyncStatus.COMPLETE, ProcessingStatus.NOT_IN_CRM, "HubSpot has no contact 123456789012 any more " * 3, "", ""),
    ]
    ContactSync.objects.bulk_create(
        ContactSync(
            contact=contact,
            crm=crm,
            sync_status=sync_status,
            processing_status=processing,
            last_error=error,
            warning=warning,
            crm_event=event,
            crm_event_at=now if event else None,
            attempts=7,
            next_attempt_at=now + timedelta(minutes=5),
            external_id="1234567890123456789012345",
            synced_at=now,
            synced_email=contact.email,
        )
        for contact in contacts
        for crm, (sync_status, processing, error, warning, event) in zip(CRMS, states)
    )


def attempts_for(contacts, now):
    SyncAttempt.objects.bulk_create(
        SyncAttempt(
            contact=contact,
            crm=crm,
            attempted_at=now - timedelta(seconds=i),
            outcome=AttemptOutcome.FAILED,
            http_status=400,
            duration_ms=12345,
            error=LONG_ERROR * 3,
        )
        for i, contact in enumerate(contacts)
        for crm in CRMS
    )


def crm_states(now):
    CRMState.objects.create(crm="brevo", paused_at=now, paused_by="marie-christine.van-der-berghe-lefebvre")
    CRMState.objects.create(
        crm="hubspot", paused_until=now + timedelta(hours=1), pause_reason=LONG_ERROR, last_run_at=now
    )
    CRMState.objects.create(crm="mautic", next_probe_at=now + timedelta(minutes=2), failing_since=now)
    CRMState.objects.create(crm="n8n", last_run_at=now, last_success_at=now)


def erasures(now):
    for i in range(ROWS):
        erasure = Erasure.objects.create(
            email_hash="%064x" % (i + 1),
            requested_by="marie-christine.van-der-berghe-lefebvre",
            requested_via="admin",
            requested_at=now,
            status=ErasureStatus.PENDING if i % 2 else ErasureStatus.COMPLETE,
            completed_at=None if i % 2 else now,
        )
        ErasureResult.objects.bulk_create(
            ErasureResult(erasure=erasure, crm=crm, outcome=outcome)
            for crm, outcome in zip(
                CRMS,
                [
                    ErasureOutcome.ERASED,
                    ErasureOutcome.NOT_FOUND,
                    ErasureOutcome.PENDING,
                    ErasureOutcome.NOT_CONFIGURED,
                ],
            )
        )
        Suppression.objects.create(email_hash="%064x" % (i + 1), erasure=erasure)


@pytest.fixture
def long_data(transactional_db):
    now = timezone.now()
    contacts = long_contacts()
    syncs_for(contacts, now)
    attempts_for(contacts, now)
    crm_states(now)
    erasures(now)


@pytest.fixture
def laptop():
    driver = laptop_browser()
    yield driver
    driver.quit()


def test_every_admin_list_fits_a_1366_by_768_screen(laptop, live_server, long_data, settings):
    settings.CRMSYNC_SUPPRESSION_KEY = "suppression-key-for-the-layout-test"
    log_in_as_superuser(laptop, live_server.url)
    problems = []
    for name, url_name in LISTS:
        laptop.get(live_server.url + reverse(url_name))
        wait_for(laptop, "#result_list")
        snap(laptop, "layout-%s" % name)
        problems += layout_problems(name, changelist_layout(laptop))
    assert not problems, "\n".join(problems)


def layout_problems(name, layout):
    problems = []
    if layout["pageScrollWidth"] > layout["pageClientWidth"]:
        problems.append("%s: the page scrolls sideways (%s)" % (name, layout))
    if layout["resultsScrollWidth"] > layout["resultsClientWidth"]:
        problems.append("%s: the results table scrolls sideways (%s)" % (name, layout))
    if layout["clippedHeaders"]:
        problems.append("%s: clipped column headers %s" % (name, layout["clippedHeaders"]))
    limit = 3 * layout["lineHeight"] + layout["verticalPadding"] + 2
    if not layout["rowHeights"] or max(layout["rowHeights"]) > limit:
        problems.append(
            "%s: rows up to %s px, over three lines (%.0f px)" % (name, max(layout["rowHeights"] or [0]), limit)
        )
    return problems
