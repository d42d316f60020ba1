"""The engine's side of a contact's whole life: mirror deletes (skip after sync, a
delete through the ORM, a delete while the contact is in flight), erasure with its
proof and suppression, "Not in the CRM", and the CRM's own events applied to the
rows. The CRM is the scripted double, so each test decides what the CRM answers;
each CRM's own requests are tested in its test_<crm>_lifecycle modules."""

import pytest
from django.utils import timezone

from contacts import erasure, selection
from contacts.models import (
    Contact,
    ContactSync,
    CRMEvent,
    Erasure,
    ErasureOutcome,
    ErasureStatus,
    Operation,
    Suppression,
)
from contacts.models import ProcessingStatus as P
from contacts.models import SyncStatus as S
from contacts.suppression import SuppressionKeyMissing, email_hash, suppressed
from integrations.backends.base import Outcome
from integrations.backends.inbound import CRMNotice
from integrations.engine import SyncEngine
from integrations.webhooks.crm import apply_notices

from .conftest import UpperBound
from .doubles import ScriptedBackend

pytestmark = pytest.mark.django_db


def answer_all(items):
    """The CRM takes every upsert (id ext-<pk>) and confirms every removal."""
    return [
        Outcome.removed(item, http_status=204, answer="HTTP 204 removed %s" % item.email)
        if item.is_removal
        else Outcome.accepted(item, "ext-%d" % item.contact.pk)
        for item in items
    ]


@pytest.fixture
def mirroring(settings, scripted_crm):
    settings.SCRIPTED_MIRROR_DELETES = True


@pytest.fixture
def erasing(settings, scripted_crm):
    settings.CRMSYNC_SUPPRESSION_KEY = "test-suppression-key-of-its-own"


@pytest.fixture
def run(policy, clock):
    def run_once(respond=answer_all, **policy_changes):
        backend = ScriptedBackend(respond)
        SyncEngine(backend, policy(**policy_changes), clock=clock, rng=UpperBound()).run()
        return backend.pushed

    return run_once


def row(contact, crm="scripted"):
    return ContactSync.objects.get(contact=contact, crm=crm)


def synced(queued, run, count=1, prefix="c"):
    contacts = queued(count, prefix=prefix)
    run()
    return list(contacts)


# ---------------------------------------------------------------- mirror deletes


def test_skip_after_sync_removes_the_record_from_a_mirroring_crm(mirroring, queued, run):
    (contact,) = synced(queued, run)
    selection.skip(Contact.objects.filter(pk=contact.pk), ["scripted"])
    assert (row(contact).operation, row(contact).processing_status) == (Operation.REMOVE, P.QUEUED)

    pushed = run()

    assert [(item.operation, item.external_id, item.email) for item in pushed] == [
        ("remove", "ext-%d" % contact.pk, contact.email)
    ]
    after = row(contact)
    assert (after.sync_status, after.processing_status, after.external_id, after.synced_email) == (
        S.SKIPPED,
        P.REMOVED,
        "",
        "",
    )


def test_skip_without_mirror_deletes_removes_nothing(queued, run):
    (contact,) = synced(queued, run)
    selection.skip(Contact.objects.filter(pk=contact.pk), ["scripted"])
    assert run() == []
    assert (row(contact).processing_status, row(contact).external_id) == (P.NONE, "ext-%d" % contact.pk)


def test_skip_of_a_never_synced_contact_removes_nothing(mirroring, queued, run):
    (contact,) = queued(1)
    selection.skip(Contact.objects.filter(pk=contact.pk), ["scripted"])
    assert run() == []
    assert row(contact).operation == Operation.UPSERT


def test_selecting_again_drops_a_queued_removal(mirroring, queued, run):
    (contact,) = synced(queued, run)
    selection.skip(Contact.objects.filter(pk=contact.pk), ["scripted"])
    selection.select(Contact.objects.filter(pk=contact.pk), ["scripted"])
    pushed = run()
    assert [item.operation for item in pushed] == [""]
    assert row(contact).processing_status == P.COMPLETE


@pytest.mark.parametrize("how", ["instance", "queryset"])
def test_a_contact_deleted_through_the_orm_is_removed_from_the_crm_then_forgotten(mirroring, queued, run, how):
    contact, other = synced(queued, run, count=2)
    if how == "instance":
        Contact.objects.get(pk=contact.pk).delete()
    else:
        Contact.objects.filter(pk=contact.pk).delete()
    detached = ContactSync.objects.get(contact=None)
    assert (detached.operation, detached.external_id) == (Operation.REMOVE, "ext-%d" % contact.pk)

    pushed = run()

    assert [(item.operation, item.external_id, item.email, item.contact) for item in pushed] == [
        ("remove", "ext-%d" % contact.pk, contact.email, None)
    ]
    assert not ContactSync.objects.filter(contact=None).exists()
    assert row(other).processing_status == P.COMPLETE


def test_a_contact_deleted_without_mirror_deletes_takes_its_rows_with_it(queued, run):
    (contact,) = synced(queued, run)
    contact.delete()
    assert not ContactSync.objects.exists()
    assert run() == []


def test_a_contact_deleted_while_its_first_push_is_in_flight_is_removed_with_the_id_that_push_got(
    mirroring, queued, run
):
    (contact,) = queued(1)
    detached = []

    def delete_mid_push(items):
        if not items[0].is_removal:
            Contact.objects.filter(pk=contact.pk).delete()
            detached.extend(ContactSync.objects.values_list("contact_id", "pending_decision"))
        return answer_all(items)

    pushed = run(delete_mid_push)

    # Detached while in flight, skipped when its push recorded, then removed with
    # the id that push returned, in the same run.
    assert detached == [(None, "skip")]
    assert [(item.operation, item.external_id) for item in pushed] == [("", ""), ("remove", "ext-%d" % contact.pk)]
    assert not ContactSync.objects.exists()


def test_a_contact_deleted_while_a_failing_push_is_in_flight_leaves_nothing_behind(mirroring, queued, run):
    (contact,) = queued(1)

    def delete_then_refuse(items):
        Contact.objects.filter(pk=contact.pk).delete()
        return [Outcome.permanent(item, "refused") for item in items]

    run(delete_then_refuse)
    assert not ContactSync.objects.exists()


# ---------------------------------------------------------------- erasure


def test_erasure_refuses_to_start_without_its_key(scripted_crm, queued):
    queued(1)
    with pytest.raises(SuppressionKeyMissing):
        erasure.start(["c0@example.com"], requested_by="alice", via="test")
    assert not Erasure.objects.exists()


def test_an_erasure_erases_everywhere_then_deletes_the_contact_and_keeps_proof_without_the_email(erasing, queued, run):
    (contact,) = synced(queued, run)
    (proof,) = erasure.start([contact.email.upper()], requested_by="alice", via="test")
    results = {r.crm: r.outcome for r in proof.results.all()}
    assert results["scripted"] == ErasureOutcome.PENDING
    # The other CRMs the registry knows are not configured in this test.
    assert {outcome for crm, outcome in results.items() if crm != "scripted"} == {ErasureOutcome.NOT_CONFIGURED}
    assert suppressed([contact.email]) == {contact.email}

    pushed = run()

    assert [(item.operation, item.external_id, item.email) for item in pushed] == [
        ("erase", "ext-%d" % contact.pk, contact.email)
    ]
    proof.refresh_from_db()
    result = proof.results.get(crm="scripted")
    assert (proof.status, proof.email, proof.local_contact_deleted) == (ErasureStatus.COMPLETE, "", True)
    assert (result.outcome, result.http_status, result.attempts) == (ErasureOutcome.ERASED, 204, 1)
    assert result.confirmed_at and result.first_attempt_at
    assert contact.email not in result.answer and "[email removed]" in result.answer
    assert proof.email_hash == email_hash(contact.email)
    assert not Contact.objects.filter(pk=contact.pk).exists()
    assert Suppression.objects.filter(email_hash=proof.email_hash, erasure=proof).exists()


def test_a_crm_without_the_person_answers_not_found_which_completes_the_erasure(erasing, queued, run):
    (contact,) = synced(queued, run)
    (proof,) = erasure.start([contact.email], requested_by="alice", via="test")

    run(lambda items: [Outcome.removed(item, http_status=404, found=False, answer="HTTP 404") for item in items])

    proof.refresh_from_db()
    assert proof.status == ErasureStatus.COMPLETE
    assert proof.results.get(crm="scripted").outcome == ErasureOutcome.NOT_FOUND


def test_an_address_crmsync_never_had_is_still_erased_in_every_crm(erasing, run):
    (proof,) = erasure.start(["Stranger@Example.com"], requested_by="bob", via="test")
    pending = ContactSync.objects.get(erasure=proof)
    assert (pending.contact_id, pending.operation) == (None, Operation.ERASE)

    pushed = run()

    assert [(item.operation, item.email, item.external_id) for item in pushed] == [
        ("erase", "stranger@example.com", "")
    ]
    proof.refresh_from_db()
    assert (proof.status, proof.local_contact_deleted) == (ErasureStatus.COMPLETE, False)
    assert not ContactSync.objects.exists()


def test_an_erasure_is_never_given_up_and_the_proof_shows_each_answer(erasing, queued, run, clock):
    (contact,) = synced(queued, run)
    (proof,) = erasure.start([contact.email], requested_by="alice", via="test")
    refuse = lambda items: [Outcome.permanent(item, "Refused for %s" % item.email, http_status=400) for item in items]  # noqa: E731

    for _ in range(6):  # twice the attempts a sync gets (max_retries=3)
        run(refuse)
        clock.advance(days=2)

    pending = row(contact)
    result = proof.results.get(crm="scripted")
    assert (pending.operation, pending.processing_status) == (Operation.ERASE, P.QUEUED)
    assert (result.outcome, result.attempts, result.http_status) == (ErasureOutcome.PENDING, 6, 400)
    assert "Refused for [email removed]" in result.answer

    run()
    proof.refresh_from_db()
    result.refresh_from_db()
    assert proof.status == ErasureStatus.COMPLETE
    assert result.confirmed_at > result.first_attempt_at


def test_an_erasure_started_during_a_push_is_delivered_after_it(erasing, queued, run):
    (contact,) = queued(1)

    pending = []

    def erase_mid_push(items):
        if not items[0].is_removal:
            erasure.start([contact.email], requested_by="alice", via="test")
            pending.append(ContactSync.objects.values_list("operation", "pending_decision").get())
        return answer_all(items)

    pushed = run(erase_mid_push)

    assert pending == [("erase", "erase")]
    assert [(item.operation, item.external_id) for item in pushed] == [("", ""), ("erase", "ext-%d" % contact.pk)]
    assert not Contact.objects.filter(pk=contact.pk).exists()


def test_staff_decisions_skip_a_contact_under_erasure(erasing, queued, run):
    (contact,) = synced(queued, run)
    erasure.start([contact.email], requested_by="alice", via="test")
    everyone = Contact.objects.filter(pk=contact.pk)
    assert selection.select(everyone, ["scripted"]) == 0
    assert selection.unselect(everyone, ["scripted"]) == 0
    assert row(contact).operation == Operation.ERASE


def test_a_cancelled_erasure_stops_and_forgets_the_address(erasing, queued, run):
    (contact,) = synced(queued, run)
    (proof,) = erasure.start([contact.email], requested_by="alice", via="test")

    assert erasure.cancel(Erasure.objects.filter(pk=proof.pk), cancelled_by="carol") == 1

    assert run() == []
    proof.refresh_from_db()
    assert (proof.status, proof.cancelled_by, proof.email) == (ErasureStatus.CANCELLED, "carol", "")
    assert proof.results.get(crm="scripted").outcome == ErasureOutcome.CANCELLED
    assert Contact.objects.filter(pk=contact.pk).exists()
    # Cancelling delivery does not take the person off the suppression list.
    assert suppressed([contact.email]) == {contact.email}


def test_a_contact_deleted_during_its_erasure_is_still_erased(erasing, queued, run):
    (contact,) = synced(queued, run)
    (proof,) = erasure.start([contact.email], requested_by="alice", via="test")
    contact.delete()

    pushed = run()

    assert [(item.operation, item.email) for item in pushed] == [("erase", contact.email)]
    proof.refresh_from_db()
    assert proof.status == ErasureStatus.COMPLETE


# ---------------------------------------------------------------- not in the CRM


def test_a_record_the_crm_no_longer_has_is_not_created_again_until_staff_select_it(queued, run):
    (contact,) = synced(queued, run)
    selection.select(Contact.objects.filter(pk=contact.pk), ["scripted"])

    run(
        lambda items: [
            Outcome.not_in_crm(item, "Scripted has no contact %s any more." % item.external_id) for item in items
        ]
    )

    gone = row(contact)
    assert (gone.sync_status, gone.processing_status, gone.external_id) == (S.SELECTED, P.NOT_IN_CRM, "")
    assert gone.last_error == "Scripted has no contact ext-%d any more." % contact.pk
    contact.first_name = "Changed"
    contact.save()
    assert run() == []  # an edit does not bring it back

    selection.select(Contact.objects.filter(pk=contact.pk), ["scripted"])
    pushed = run()
    assert [item.external_id for item in pushed] == [""]
    assert row(contact).processing_status == P.COMPLETE


def test_an_accepted_push_records_the_email_the_crm_has_and_the_next_push_says_the_previous_one(queued, run):
    (contact,) = synced(queued, run)
    assert row(contact).synced_email == contact.email
    contact.email = "renamed@example.com"
    contact.save()
    selection.select(Contact.objects.filter(pk=contact.pk), ["scripted"])

    (item,) = run()

    assert (item.external_id, item.email, item.previous_email) == (
        "ext-%d" % contact.pk,
        "renamed@example.com",
        "c0@example.com",
    )
    assert row(contact).synced_email == "renamed@example.com"


# ---------------------------------------------------------------- what the CRM tells us


def notice(kind, event_id="e1", **fields):
    return CRMNotice(event_id=event_id, kind=kind, **fields)


def test_an_opt_out_is_recorded_once_and_kept(queued, run):
    contact, other = synced(queued, run, count=2)
    now = timezone.now()

    taken = apply_notices(
        "scripted", "Scripted", [notice(CRMEvent.UNSUBSCRIBED, external_id="ext-%d" % contact.pk)], now
    )
    again = apply_notices(
        "scripted", "Scripted", [notice(CRMEvent.UNSUBSCRIBED, external_id="ext-%d" % contact.pk)], now
    )

    assert (taken, again) == (1, 0)
    opted = row(contact)
    assert (opted.crm_event, opted.opted_out_at) == (CRMEvent.UNSUBSCRIBED, now)
    assert row(other).crm_event == ""
    # A later sync leaves the opt-out as it is, and tells the backend about it.
    selection.select(Contact.objects.filter(pk__in=[contact.pk, other.pk]), ["scripted"])
    pushed = run()
    assert {item.contact.pk: item.opted_out for item in pushed} == {contact.pk: True, other.pk: False}
    assert (row(contact).crm_event, row(contact).opted_out_at) == (CRMEvent.UNSUBSCRIBED, now)


def test_an_event_found_by_email_when_the_crm_sends_no_id(queued, run):
    (contact,) = synced(queued, run)
    apply_notices("scripted", "Scripted", [notice(CRMEvent.HARD_BOUNCE, email=contact.email.upper())], timezone.now())
    assert row(contact).crm_event == CRMEvent.HARD_BOUNCE


def test_a_deletion_in_the_crm_leaves_the_row_not_in_the_crm(queued, run):
    (contact,) = synced(queued, run)
    apply_notices("scripted", "Scripted", [notice(CRMEvent.DELETED, external_id="ext-%d" % contact.pk)], timezone.now())

    gone = row(contact)
    assert (gone.processing_status, gone.external_id, gone.crm_event) == (P.NOT_IN_CRM, "", CRMEvent.DELETED)
    assert "not created again unless you select it again" in gone.last_error
    contact.first_name = "Edited"
    contact.save()
    assert run() == []


def test_a_merge_in_the_crm_points_the_row_at_the_surviving_record(queued, run):
    (contact,) = synced(queued, run)
    apply_notices(
        "scripted",
        "Scripted",
        [notice(CRMEvent.MERGED, external_id="ext-%d" % contact.pk, merged_into="survivor-1")],
        timezone.now(),
    )
    assert (row(contact).external_id, row(contact).crm_event) == ("survivor-1", CRMEvent.MERGED)

    selection.select(Contact.objects.filter(pk=contact.pk), ["scripted"])
    (item,) = run()
    assert item.external_id == "survivor-1"


@pytest.mark.parametrize("decide", [selection.select, selection.skip, selection.unselect])
def test_a_decision_about_no_contact_changes_nothing(scripted_crm, decide):
    assert decide(Contact.objects.filter(pk__in=[]), ["scripted"]) == 0


def test_erasing_an_address_again_while_its_erasure_is_pending_returns_that_erasure(erasing, queued, run):
    (contact,) = synced(queued, run)
    (first,) = erasure.start([contact.email], requested_by="alice", via="test")
    again, other = erasure.start([contact.email.upper(), "other@example.com"], requested_by="bob", via="test")

    assert again.pk == first.pk and other.pk != first.pk
    assert Erasure.objects.count() == 2
    run()
    first.refresh_from_db()
    assert first.status == ErasureStatus.COMPLETE


def test_a_reservation_the_crm_accepted_with_is_kept_as_a_warning_until_a_clean_push(queued, run):
    (contact,) = queued(1)
    run(lambda items: [Outcome.accepted(item, "ext-1", message="Phone left out.") for item in items])
    assert (row(contact).processing_status, row(contact).warning) == (P.COMPLETE, "Phone left out.")

    selection.select(Contact.objects.filter(pk=contact.pk), ["scripted"])
    run()
    assert row(contact).warning == ""
