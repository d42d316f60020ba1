"""An erasure across every CRM at once, over real sockets against the sandbox,
with Mautic down while it runs: the other CRMs confirm, the erasure waits for
Mautic without giving up, finishes when Mautic answers again, and the proof shows
when it was first tried and when Mautic confirmed."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from contacts import erasure, selection
from contacts.models import Contact, ContactSync, Erasure, ErasureOutcome, ErasureStatus, ProcessingStatus
from contacts.suppression import suppressed
from integrations.engine import SyncEngine
from integrations.registry import get_enabled_backend_class

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
CRMS = ["brevo", "hubspot", "mautic", "n8n"]
EMAIL = "forget.me@example.com"


def run(crm, at=None):
    backend = get_enabled_backend_class(crm)()
    return SyncEngine(backend, clock=(lambda: at) if at else timezone.now).run()


def holds(sandbox, crm, email):
    """Whether the sandbox's CRM still has a record with this email."""
    return email in json.dumps(sandbox.contacts(crm))


@pytest.fixture
def everywhere(sandbox, settings):
    """A contact synced to every CRM of the sandbox."""
    settings.CRMSYNC_SUPPRESSION_KEY = "end-to-end-suppression-key"
    contact = Contact.objects.create(email=EMAIL, first_name="Forget", last_name="Me")
    selection.select(Contact.objects.filter(pk=contact.pk), CRMS)
    for crm in CRMS:
        run(crm)
    assert set(ContactSync.objects.filter(contact=contact).values_list("processing_status", flat=True)) == {
        ProcessingStatus.COMPLETE
    }
    for crm in ("brevo", "hubspot", "mautic"):
        assert holds(sandbox, crm, EMAIL)
    return contact


def test_an_erasure_with_a_crm_down_finishes_when_it_comes_back(sandbox, everywhere):
    sandbox.faults("mautic", down=True)
    (proof,) = erasure.start([EMAIL], requested_by="dpo", via="test")

    for crm in CRMS:
        run(crm)

    results = {r.crm: r for r in proof.results.all()}
    assert {crm: results[crm].outcome for crm in CRMS} == {
        "brevo": ErasureOutcome.ERASED,
        "hubspot": ErasureOutcome.ERASED,
        "mautic": ErasureOutcome.PENDING,
        "n8n": ErasureOutcome.ERASED,
    }
    assert not holds(sandbox, "brevo", EMAIL) and not holds(sandbox, "hubspot", EMAIL)
    assert [item["event"] for item in sandbox.contacts("n8n")][-1] == "erase"
    down = results["mautic"]
    assert down.attempts == 1 and down.first_attempt_at and down.confirmed_at is None
    assert "Mautic" in down.answer
    proof.refresh_from_db()
    assert (proof.status, proof.email) == (ErasureStatus.PENDING, EMAIL)
    assert Contact.objects.filter(pk=everywhere.pk).exists()

    # Mautic is back; by the time its retry falls due it confirms.
    sandbox.faults("mautic", down=False)
    run("mautic", at=timezone.now() + timedelta(hours=2))

    proof.refresh_from_db()
    back = proof.results.get(crm="mautic")
    assert (back.outcome, back.attempts) == (ErasureOutcome.ERASED, 2)
    assert back.first_attempt_at < back.confirmed_at
    assert not holds(sandbox, "mautic", EMAIL)
    assert (proof.status, proof.email, proof.local_contact_deleted) == (ErasureStatus.COMPLETE, "", True)
    assert not Contact.objects.filter(email=EMAIL).exists()
    assert not ContactSync.objects.exists()
    # Nothing in the proof names the person.
    stored = json.dumps(list(Erasure.objects.values()), default=str) + json.dumps(
        list(proof.results.values()), default=str
    )
    assert EMAIL not in stored and "forget.me" not in stored
    assert suppressed([EMAIL]) == {EMAIL}


def test_a_crm_that_never_had_the_person_counts_as_done(sandbox, settings):
    settings.CRMSYNC_SUPPRESSION_KEY = "end-to-end-suppression-key"
    (proof,) = erasure.start(["never.synced@example.com"], requested_by="dpo", via="test")

    for crm in CRMS:
        run(crm)

    proof.refresh_from_db()
    outcomes = dict(proof.results.values_list("crm", "outcome"))
    assert proof.status == ErasureStatus.COMPLETE
    assert {outcomes[crm] for crm in ("brevo", "mautic")} == {ErasureOutcome.NOT_FOUND}
    # HubSpot's GDPR delete by email answers 204 for an address it does not know
    # (it blocklists it), and n8n cannot tell: the workflow took the event.
    assert (outcomes["hubspot"], outcomes["n8n"]) == (ErasureOutcome.ERASED, ErasureOutcome.ERASED)
