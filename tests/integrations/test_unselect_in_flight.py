"""An unselect taken while the row is pushed: remembered as the row's pending
decision and applied when the batch records, as a Skip is (contacts.selection,
integrations.engine._apply_pending_decisions). Runs on SQLite and PostgreSQL."""

import pytest

from contacts import selection
from contacts.models import AttemptOutcome, Contact, ContactSync, PendingDecision, SyncAttempt
from contacts.models import ProcessingStatus as P
from contacts.models import SyncStatus as S
from integrations.backends.base import Outcome
from integrations.engine import SyncEngine

from .conftest import UpperBound
from .doubles import ScriptedBackend

pytestmark = pytest.mark.django_db


def deciding_mid_push(*decisions, outcome=ScriptedBackend.accept_all):
    """A push that takes `decisions` (selection functions) for its contacts while it
    is in flight, then answers with `outcome`. Only the first push decides: a
    decision that queues the row again must not be taken again at every push."""
    pushes = []

    def respond(items):
        if not pushes:
            assert set(ContactSync.objects.values_list("processing_status", flat=True)) == {P.PROCESSING}
            contacts = Contact.objects.filter(pk__in=[item.contact.pk for item in items])
            for decide in decisions:
                decide(contacts, ["scripted"])
        pushes.append(items)
        return outcome(items)

    return respond


def run(policy, clock, respond):
    return SyncEngine(ScriptedBackend(respond), policy(), clock=clock, rng=UpperBound()).run()


def test_a_row_unselected_mid_push_ends_new_after_the_push(queued, policy, clock):
    queued(2)
    result = run(policy, clock, deciding_mid_push(selection.unselect))

    assert result.accepted == 2
    for row in ContactSync.objects.all():
        assert (row.sync_status, row.processing_status, row.pending_decision) == (S.NEW, P.NONE, "")
        assert (row.next_attempt_at, row.claim_token, row.lease_expires_at) == (None, None, None)
        assert row.external_id, "what the push achieved is kept: nothing is deleted in the CRM"
    assert SyncAttempt.objects.filter(outcome=AttemptOutcome.ACCEPTED).count() == 2, "the push is recorded"


def test_a_failed_push_unselected_mid_push_ends_new_without_its_error(queued, policy, clock):
    queued(1)

    def refuse(items):
        return [Outcome.permanent(item, "CRM refused the contact") for item in items]

    run(policy, clock, deciding_mid_push(selection.unselect, outcome=refuse))

    row = ContactSync.objects.get()
    assert (row.sync_status, row.processing_status, row.last_error, row.first_failed_at) == (S.NEW, P.NONE, "", None)


def test_unselect_mid_push_is_not_counted_and_is_remembered(queued, policy, clock):
    queued(1)
    counted = []

    def unselect(contacts, crms):
        counted.append(selection.unselect(contacts, crms))
        assert ContactSync.objects.get().pending_decision == PendingDecision.UNSELECT

    run(policy, clock, deciding_mid_push(unselect))
    assert counted == [0]


def test_the_latest_decision_mid_push_wins(queued, policy, clock):
    queued(1)
    run(policy, clock, deciding_mid_push(selection.select, selection.unselect))
    row = ContactSync.objects.get()
    assert (row.sync_status, row.processing_status, row.pending_decision) == (S.NEW, P.NONE, "")


def test_a_select_after_the_unselect_mid_push_queues_it_again(queued, policy, clock):
    queued(1)
    respond = deciding_mid_push(selection.unselect, selection.select)
    result = run(policy, clock, respond)
    # Queued again when the first push recorded, and pushed again in the same run.
    assert result.accepted == 2
    row = ContactSync.objects.get()
    assert (row.sync_status, row.processing_status, row.pending_decision) == (S.COMPLETE, P.COMPLETE, "")
