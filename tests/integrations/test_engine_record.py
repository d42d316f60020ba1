"""The record step as the engine writes it in bulk: what a staff decision and an
edit of the contact taken mid-push leave together, which edits queue a row again,
and a record whose statements do not grow with the batch. Runs on SQLite and
PostgreSQL."""

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from contacts import selection
from contacts.models import AttemptOutcome, Contact, ContactSync, SyncAttempt
from contacts.models import ProcessingStatus as P
from contacts.models import SyncStatus as S
from integrations.backends.base import Outcome
from integrations.engine import SyncEngine

from .conftest import UpperBound
from .doubles import ScriptedBackend

pytestmark = pytest.mark.django_db


def during_the_first_push(act, outcome=ScriptedBackend.accept_all):
    """A push that calls act(contacts) while its rows are Processing, then answers
    with `outcome`; later pushes only answer."""
    pushes = []

    def respond(items):
        if not pushes:
            act(Contact.objects.filter(pk__in=[item.contact.pk for item in items]))
        pushes.append(items)
        return outcome(items)

    return respond


def run(policy, clock, respond, **changes):
    return SyncEngine(ScriptedBackend(respond), policy(**changes), clock=clock, rng=UpperBound()).run()


def states():
    return {(row.sync_status, row.processing_status, row.pending_decision) for row in ContactSync.objects.all()}


@pytest.mark.parametrize(
    ("decide", "settled"),
    [(selection.skip, (S.SKIPPED, P.NONE, "")), (selection.unselect, (S.NEW, P.NONE, ""))],
    ids=["skip", "unselect"],
)
def test_a_decision_mid_push_holds_even_when_the_contact_is_edited_too(queued, policy, clock, decide, settled):
    queued(2)

    def decide_and_edit(contacts):
        decide(contacts, ["scripted"])
        contacts.update(first_name="Edited")  # changes the payload; no signal sent

    result = run(policy, clock, during_the_first_push(decide_and_edit))

    assert result.claimed == 2, "nothing was pushed again"
    assert states() == {settled}


def test_an_edit_outside_the_payload_mid_push_does_not_queue_the_row_again(queued, policy, clock):
    queued(3)
    # The scripted CRM's payload is the email and first name.
    result = run(policy, clock, during_the_first_push(lambda contacts: contacts.update(company="Acme")))

    assert result.claimed == 3
    assert states() == {(S.COMPLETE, P.COMPLETE, "")}


def test_an_edit_of_the_payload_mid_push_queues_only_that_row_again(queued, policy, clock):
    contacts = queued(3)
    edited = contacts.order_by("pk").first()
    result = run(
        policy,
        clock,
        during_the_first_push(lambda _c: Contact.objects.filter(pk=edited.pk).update(first_name="Edited")),
    )

    assert result.claimed == 4, "the edited contact was pushed a second time"
    assert states() == {(S.COMPLETE, P.COMPLETE, "")}
    attempts = SyncAttempt.objects.filter(outcome=AttemptOutcome.ACCEPTED)
    assert attempts.filter(contact=edited).count() == 2
    assert attempts.exclude(contact=edited).count() == 2


def edit_by_save(contacts):
    for contact in contacts:
        contact.first_name = "Edited"
        contact.save()


def edit_by_update(contacts):
    contacts.update(first_name="Edited")


def edit_by_raw_sql(contacts):
    table = connection.ops.quote_name(Contact._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE %s SET first_name = 'Edited' WHERE id = %%s" % table, [contacts[0].pk])


@pytest.mark.parametrize("edit", [edit_by_save, edit_by_update, edit_by_raw_sql])
def test_an_edit_of_the_payload_mid_push_by_any_means_is_found(queued, policy, clock, edit):
    # On PostgreSQL the record compares row versions read at the claim; on SQLite, the rows.
    queued(1)
    result = run(policy, clock, during_the_first_push(edit))

    assert result.claimed == 2, "pushed again with the edit"
    assert states() == {(S.COMPLETE, P.COMPLETE, "")}


def test_a_write_that_leaves_the_payload_as_it_was_mid_push_queues_nothing(queued, policy, clock):
    queued(2)
    # A new row version on PostgreSQL; the payload built again is the same.
    result = run(policy, clock, during_the_first_push(lambda contacts: contacts.update(first_name=F("first_name"))))

    assert result.claimed == 2
    assert states() == {(S.COMPLETE, P.COMPLETE, "")}


def record_statements(policy, clock, queued, count, outcome):
    queued(count, prefix="n%d-" % count)
    with CaptureQueriesContext(connection) as captured:
        result = run(policy, clock, outcome, batch_size=100)
    assert result.claimed == count
    return len(captured)


@pytest.mark.parametrize(
    "outcome",
    [
        ScriptedBackend.accept_all,
        lambda items: [Outcome.retry(item, "CRM busy", http_status=503) for item in items],
        lambda items: [Outcome.permanent(item, "CRM refused it", http_status=400) for item in items],
    ],
    ids=["accepted", "retry", "failed"],
)
def test_a_batch_costs_the_same_statements_whatever_its_size(queued, policy, clock, outcome, settings):
    # Opening an alert (60 contacts failed: integrations.alerts) is a one-off, not a batch's cost.
    settings.CRMSYNC_ALERT_ERROR_RATE = 1
    # The first run creates the CRM's state row; the compared runs find it.
    record_statements(policy, clock, queued, 1, outcome)
    ContactSync.objects.all().delete()
    few = record_statements(policy, clock, queued, 3, outcome)
    ContactSync.objects.all().delete()
    many = record_statements(policy, clock, queued, 60, outcome)

    assert few == many
    rows = ContactSync.objects.all()
    assert SyncAttempt.objects.filter(contact__syncs__in=rows).count() == 60, "one attempt per contact"
