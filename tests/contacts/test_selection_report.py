"""contacts.selection's unselect, and decide(): the same decisions with a per-CRM
report of what they did, for the HTTP API."""

import uuid

import pytest
from django.utils import timezone

from contacts import selection
from contacts.models import Contact, ContactSync, PendingDecision, ProcessingStatus, SyncStatus
from integrations.exceptions import UnknownCRM

P, S = ProcessingStatus, SyncStatus


def only(*contacts):
    return Contact.objects.filter(pk__in=[contact.pk for contact in contacts])


class TestUnselect:
    @pytest.mark.parametrize(
        "status, processing",
        [(S.SELECTED, P.QUEUED), (S.COMPLETE, P.COMPLETE), (S.ERROR, P.ERROR), (S.SKIPPED, P.NONE)],
    )
    def test_sets_a_settled_row_back_to_new_and_clears_its_processing(
        self, make_contact, make_sync, status, processing
    ):
        contact = make_contact()
        make_sync(
            contact,
            sync_status=status,
            processing_status=processing,
            next_attempt_at=timezone.now(),
            last_error="old problem",
            first_failed_at=timezone.now(),
            external_id="ext-1",
            attempts=2,
        )

        assert selection.unselect(only(contact), ["brevo"]) == 1

        row = ContactSync.objects.get()
        assert (row.sync_status, row.processing_status, row.next_attempt_at) == (S.NEW, P.NONE, None)
        assert (row.last_error, row.first_failed_at, row.claim_token) == ("", None, None)
        assert row.external_id == "ext-1", "nothing is deleted in the CRM; a later select updates its record"

    def test_new_rows_and_contacts_without_a_row_are_left_alone(self, make_contact, make_sync):
        new, without = make_contact(), make_contact()
        make_sync(new)
        assert selection.unselect(only(new, without), ["brevo"]) == 0
        assert ContactSync.objects.count() == 1

    def test_only_the_given_crms(self, make_contact, make_sync):
        contact = make_contact()
        make_sync(contact, sync_status=S.SELECTED, processing_status=P.QUEUED)
        make_sync(contact, crm="hubspot", sync_status=S.SELECTED, processing_status=P.QUEUED)
        selection.unselect(only(contact), ["hubspot"])
        assert ContactSync.objects.get(crm="brevo").sync_status == S.SELECTED

    def test_a_row_in_flight_is_remembered_not_changed(self, make_contact, make_sync):
        contact = make_contact()
        token = uuid.uuid4()
        make_sync(contact, sync_status=S.SELECTED, processing_status=P.PROCESSING, claim_token=token)
        assert selection.unselect(only(contact), ["brevo"]) == 0
        row = ContactSync.objects.get()
        assert (row.processing_status, row.claim_token) == (P.PROCESSING, token)
        assert row.pending_decision == PendingDecision.UNSELECT

    def test_one_statement(self, make_contacts, django_assert_num_queries):
        contacts = make_contacts(30)
        selection.select(contacts, ["brevo", "mautic"])
        with django_assert_num_queries(1):
            assert selection.unselect(contacts, ["brevo", "mautic"]) == 60

    def test_unknown_crm_changes_nothing(self, make_contact, make_sync):
        contact = make_contact()
        make_sync(contact, sync_status=S.SELECTED, processing_status=P.QUEUED)
        with pytest.raises(UnknownCRM):
            selection.unselect(only(contact), ["brevo", "salesforce"])
        assert ContactSync.objects.get().sync_status == S.SELECTED


class TestDecide:
    def test_select_counts_add_up_to_the_contacts_found_per_crm(self, make_contact, make_sync):
        new, queued, pushing = make_contact(), make_contact(), make_contact()
        make_sync(queued, sync_status=S.SELECTED, processing_status=P.QUEUED)
        make_sync(pushing, sync_status=S.SELECTED, processing_status=P.PROCESSING)

        decision = selection.decide(selection.SELECT, only(new, queued, pushing), ["hubspot", "brevo"])

        assert (decision.found, decision.queued, decision.changed) == (3, 5, 4)
        assert decision.crms == [
            selection.CRMReport("brevo", changed=1, already=1, in_flight=1),
            selection.CRMReport("hubspot", changed=3),
        ]

    def test_select_answers_what_select_returns(self, make_contacts):
        contacts = make_contacts(4)
        selection.select(contacts.filter(pk__in=contacts.values("pk")[:2]), ["brevo"])
        assert selection.decide(selection.SELECT, contacts, ["brevo"]).queued == selection.select(contacts, ["brevo"])

    def test_retry_reports_the_pairs_not_in_error(self, make_contact, make_sync):
        failed, fine = make_contact(), make_contact()
        make_sync(failed, sync_status=S.ERROR, processing_status=P.ERROR)
        decision = selection.decide(selection.RETRY, only(failed, fine), ["brevo"])
        assert decision.crms == [selection.CRMReport("brevo", changed=1, not_in_error=1)]
        assert decision.queued == 1

    def test_unselect_counts_contacts_without_a_row_as_new_already(self, make_contact, make_sync):
        queued, without = make_contact(), make_contact()
        make_sync(queued, sync_status=S.SELECTED, processing_status=P.QUEUED)
        decision = selection.decide(selection.UNSELECT, only(queued, without), ["brevo"])
        assert decision.crms == [selection.CRMReport("brevo", changed=1, already=1)]
        assert decision.queued == 0

    def test_nothing_found_writes_nothing(self, db):
        decision = selection.decide(selection.SELECT, Contact.objects.none(), ["brevo"])
        assert (decision.found, decision.crms) == (0, [])
        assert not ContactSync.objects.exists()

    def test_statements_do_not_grow_with_the_contacts(self, make_contacts, django_assert_max_num_queries):
        contacts = make_contacts(100)
        # The count, the already-queued count and the upsert, plus the transaction's savepoint.
        with django_assert_max_num_queries(5):
            selection.decide(selection.SELECT, contacts, ["brevo", "hubspot", "n8n"])
