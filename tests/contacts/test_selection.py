"""Every staff transition of DESIGN.md's state machine, through contacts.selection."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from contacts import selection
from contacts.models import Contact, ContactSync, PendingDecision, ProcessingStatus, SyncStatus
from integrations.exceptions import UnknownCRM

P = ProcessingStatus
S = SyncStatus


def sync_of(contact, crm="brevo"):
    return ContactSync.objects.get(contact=contact, crm=crm)


def only(contact):
    return Contact.objects.filter(pk=contact.pk)


@pytest.fixture
def failed_sync(make_contact, make_sync):
    return make_sync(
        make_contact(),
        sync_status=S.ERROR,
        processing_status=P.ERROR,
        attempts=4,
        last_error="Brevo rejected the email address",
        next_attempt_at=None,
    )


class TestSelect:
    def test_creates_selected_queued_rows_due_now_for_every_crm(self, make_contacts):
        contacts = make_contacts(3)
        before = timezone.now()

        changed = selection.select(contacts, ["brevo", "hubspot"])

        assert changed == 6
        rows = ContactSync.objects.filter(contact__in=contacts)
        assert rows.count() == 6
        for row in rows:
            assert (row.sync_status, row.processing_status, row.attempts) == (S.SELECTED, P.QUEUED, 0)
            assert before <= row.next_attempt_at <= timezone.now()
            assert row.last_error == ""

    def test_touches_only_the_given_contacts_and_crms(self, make_contacts, make_contact):
        contacts = make_contacts(2)
        outsider = make_contact()
        selection.select(contacts, ["mautic"])
        assert not ContactSync.objects.filter(contact=outsider).exists()
        assert set(ContactSync.objects.values_list("crm", flat=True)) == {"mautic"}

    @pytest.mark.parametrize(
        "status, processing",
        [(S.COMPLETE, P.COMPLETE), (S.ERROR, P.ERROR), (S.SKIPPED, P.NONE), (S.NEW, P.NONE)],
    )
    def test_requeues_a_settled_row_with_a_fresh_budget(self, make_contact, make_sync, status, processing):
        contact = make_contact()
        make_sync(
            contact,
            sync_status=status,
            processing_status=processing,
            attempts=3,
            last_error="old problem",
            external_id="ext-1",
        )

        assert selection.select(only(contact), ["brevo"]) == 1

        row = sync_of(contact)
        assert (row.sync_status, row.processing_status) == (S.SELECTED, P.QUEUED)
        assert (row.attempts, row.last_error) == (0, "")
        assert row.next_attempt_at is not None
        assert row.external_id == "ext-1", "the CRM's id is kept for the re-sync"

    def test_complete_contact_is_queued_again_for_a_deliberate_resync(self, make_contact, make_sync):
        contact = make_contact()
        make_sync(contact, sync_status=S.COMPLETE, processing_status=P.COMPLETE, synced_hash="abc")
        selection.select(only(contact), ["brevo"])
        assert sync_of(contact).processing_status == P.QUEUED

    def test_leaves_a_row_being_processed_alone(self, make_contact, make_sync):
        contact = make_contact()
        token = uuid.uuid4()
        lease = timezone.now() + timedelta(minutes=5)
        make_sync(
            contact,
            sync_status=S.SELECTED,
            processing_status=P.PROCESSING,
            attempts=1,
            claim_token=token,
            lease_expires_at=lease,
        )

        assert selection.select(only(contact), ["brevo"]) == 0

        row = sync_of(contact)
        assert (row.processing_status, row.attempts, row.claim_token) == (P.PROCESSING, 1, token)
        assert row.pending_decision == PendingDecision.SELECT, "remembered for when the batch records"

    def test_runs_one_statement_whatever_the_number_of_contacts(self, make_contacts, django_assert_num_queries):
        contacts = make_contacts(50)
        with django_assert_num_queries(1):
            selection.select(contacts, ["brevo", "hubspot", "n8n"])
        assert ContactSync.objects.count() == 150

    def test_works_on_a_filtered_queryset(self, make_contact):
        make_contact(email="a@acme.test", company="Acme")
        make_contact(email="b@other.test", company="Other")
        selection.select(Contact.objects.filter(company__icontains="acm"), ["brevo"])
        assert list(ContactSync.objects.values_list("contact__email", flat=True)) == ["a@acme.test"]

    def test_unknown_crm_is_refused_before_anything_changes(self, make_contacts):
        contacts = make_contacts(2)
        with pytest.raises(UnknownCRM, match="Unknown CRM 'salesforce'"):
            selection.select(contacts, ["brevo", "salesforce"])
        assert not ContactSync.objects.exists()

    def test_no_crm_changes_nothing(self, make_contacts):
        assert selection.select(make_contacts(2), []) == 0
        assert not ContactSync.objects.exists()


class TestSkip:
    def test_creates_skipped_rows_with_nothing_queued(self, make_contacts):
        contacts = make_contacts(2)
        assert selection.skip(contacts, ["hubspot"]) == 2
        for row in ContactSync.objects.all():
            assert (row.crm, row.sync_status, row.processing_status) == ("hubspot", S.SKIPPED, P.NONE)
            assert row.next_attempt_at is None

    def test_takes_a_queued_row_out_of_the_queue(self, make_contact, make_sync):
        contact = make_contact()
        make_sync(
            contact,
            sync_status=S.SELECTED,
            processing_status=P.QUEUED,
            next_attempt_at=timezone.now(),
            attempts=2,
        )
        assert selection.skip(only(contact), ["brevo"]) == 1
        row = sync_of(contact)
        assert (row.sync_status, row.processing_status, row.next_attempt_at) == (S.SKIPPED, P.NONE, None)
        assert row.attempts == 2, "the history of attempts is kept"

    def test_leaves_a_row_being_processed_to_finish(self, make_contact, make_sync):
        contact = make_contact()
        make_sync(contact, sync_status=S.SELECTED, processing_status=P.PROCESSING)
        assert selection.skip(only(contact), ["brevo"]) == 0
        row = sync_of(contact)
        assert (row.sync_status, row.processing_status) == (S.SELECTED, P.PROCESSING)
        assert row.pending_decision == PendingDecision.SKIP, "remembered for when the batch records"

    def test_the_latest_decision_in_flight_wins(self, make_contact, make_sync):
        contact = make_contact()
        make_sync(contact, sync_status=S.SELECTED, processing_status=P.PROCESSING)
        selection.skip(only(contact), ["brevo"])
        selection.select(only(contact), ["brevo"])
        assert sync_of(contact).pending_decision == PendingDecision.SELECT

    def test_a_decision_on_a_settled_row_clears_an_old_pending_one(self, make_contact, make_sync):
        contact = make_contact()
        make_sync(contact, sync_status=S.COMPLETE, processing_status=P.COMPLETE, pending_decision=PendingDecision.SKIP)
        assert selection.select(only(contact), ["brevo"]) == 1
        row = sync_of(contact)
        assert (row.processing_status, row.pending_decision) == (P.QUEUED, PendingDecision.NONE)

    def test_runs_one_statement(self, make_contacts, django_assert_num_queries):
        contacts = make_contacts(20)
        with django_assert_num_queries(1):
            selection.skip(contacts, ["brevo", "mautic"])


class TestRetryFailed:
    def test_requeues_an_error_row_with_a_fresh_budget(self, failed_sync):
        changed = selection.retry_failed(only(failed_sync.contact), ["brevo"])
        assert changed == 1
        row = sync_of(failed_sync.contact)
        assert (row.sync_status, row.processing_status) == (S.SELECTED, P.QUEUED)
        assert (row.attempts, row.last_error) == (0, "")
        assert row.next_attempt_at is not None

    @pytest.mark.parametrize(
        "status, processing",
        [(S.COMPLETE, P.COMPLETE), (S.SKIPPED, P.NONE), (S.SELECTED, P.QUEUED), (S.NEW, P.NONE)],
    )
    def test_leaves_rows_that_did_not_fail(self, make_contact, make_sync, status, processing):
        contact = make_contact()
        make_sync(contact, sync_status=status, processing_status=processing, attempts=2)
        assert selection.retry_failed(only(contact), ["brevo"]) == 0
        row = sync_of(contact)
        assert (row.sync_status, row.processing_status, row.attempts) == (status, processing, 2)

    def test_only_for_the_given_crms(self, failed_sync, make_sync):
        make_sync(failed_sync.contact, "hubspot", sync_status=S.ERROR, processing_status=P.ERROR)
        assert selection.retry_failed(only(failed_sync.contact), ["hubspot"]) == 1
        assert sync_of(failed_sync.contact, "brevo").sync_status == S.ERROR
        assert sync_of(failed_sync.contact, "hubspot").sync_status == S.SELECTED

    def test_creates_no_rows(self, make_contacts):
        assert selection.retry_failed(make_contacts(3), ["brevo"]) == 0
        assert not ContactSync.objects.exists()

    def test_retry_syncs_takes_a_queryset_of_sync_rows(self, failed_sync, make_contact, make_sync):
        complete = make_sync(make_contact(), sync_status=S.COMPLETE, processing_status=P.COMPLETE)
        assert selection.retry_syncs(ContactSync.objects.all()) == 1
        complete.refresh_from_db()
        assert complete.sync_status == S.COMPLETE


class TestRequeueChanged:
    def complete(self, make_contact, make_sync, synced_hash="hash-a", **fields):
        fields = {"sync_status": S.COMPLETE, "processing_status": P.COMPLETE, "attempts": 2, **fields}
        return make_sync(make_contact(), synced_hash=synced_hash, **fields)

    def test_queues_complete_rows_whose_synced_hash_differs_from_the_new_one(self, make_contact, make_sync):
        first = self.complete(make_contact, make_sync, external_id="ext-1")
        second = self.complete(make_contact, make_sync, synced_hash="hash-b")
        before = timezone.now()

        assert selection.requeue_changed({first.pk: "hash-new", second.pk: None}) == 2

        for row in ContactSync.objects.all():
            assert (row.sync_status, row.processing_status) == (S.SELECTED, P.QUEUED)
            assert (row.attempts, row.last_error) == (0, "")
            assert before <= row.next_attempt_at <= timezone.now()
        assert sync_of(first.contact).external_id == "ext-1", "the CRM's id is kept for the re-sync"

    def test_leaves_a_row_synced_again_with_the_new_payload(self, make_contact, make_sync):
        row = self.complete(make_contact, make_sync, synced_hash="newer")
        assert selection.requeue_changed({row.pk: "newer"}) == 0
        assert sync_of(row.contact).processing_status == P.COMPLETE

    def test_marks_a_row_in_flight_to_be_queued_again_when_its_batch_records(self, make_contact, make_sync):
        row = self.complete(make_contact, make_sync, sync_status=S.SELECTED, processing_status=P.PROCESSING)
        assert selection.requeue_changed({row.pk: "hash-new"}) == 1
        row.refresh_from_db()
        assert (row.sync_status, row.processing_status, row.attempts) == (S.SELECTED, P.PROCESSING, 2)
        assert row.pending_decision == PendingDecision.SELECT

    def test_a_change_never_overrides_a_skip_taken_in_flight(self, make_contact, make_sync):
        row = self.complete(
            make_contact, make_sync, processing_status=P.PROCESSING, pending_decision=PendingDecision.SKIP
        )
        assert selection.requeue_changed({row.pk: "hash-new"}) == 0
        assert sync_of(row.contact).pending_decision == PendingDecision.SKIP

    @pytest.mark.parametrize(
        "status, processing",
        [(S.SELECTED, P.QUEUED), (S.ERROR, P.ERROR), (S.SKIPPED, P.NONE)],
    )
    def test_leaves_rows_that_are_not_complete(self, make_contact, make_sync, status, processing):
        row = self.complete(make_contact, make_sync, sync_status=status, processing_status=processing)
        assert selection.requeue_changed({row.pk: "hash-new"}) == 0
        row.refresh_from_db()
        assert (row.sync_status, row.processing_status, row.attempts) == (status, processing, 2)

    def test_runs_one_statement_whatever_the_number_of_rows(self, make_contact, make_sync, django_assert_num_queries):
        rows = [self.complete(make_contact, make_sync) for _ in range(30)]
        with django_assert_num_queries(1):
            assert selection.requeue_changed({row.pk: "hash-new" for row in rows}) == 30
        with django_assert_num_queries(0):
            assert selection.requeue_changed({}) == 0
