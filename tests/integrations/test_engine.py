"""The worker's transitions of DESIGN.md's state machine, with a scripted backend
and a clock moved by hand. These run on SQLite and PostgreSQL alike."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from contacts import selection
from contacts.models import AttemptOutcome, ContactSync, ProcessingStatus, SyncAttempt, SyncStatus
from integrations.backends.base import Outcome
from integrations.engine import Pause, SyncEngine, payload_hash
from integrations.exceptions import CRMUnavailable, PermanentError, RateLimited, RetryableError
from integrations.models import CRMState

from .conftest import UpperBound
from .doubles import ScriptedBackend

pytestmark = pytest.mark.django_db
P, S = ProcessingStatus, SyncStatus


def engine(policy, clock, respond=None, **policy_changes):
    return SyncEngine(ScriptedBackend(respond), policy(**policy_changes), clock=clock, rng=UpperBound())


def rows():
    return ContactSync.objects.filter(crm="scripted").order_by("contact__email")


def retry_all(message="CRM answered 503", retry_after=None):
    return lambda items: [Outcome.retry(i, message, retry_after=retry_after, http_status=503) for i in items]


def raise_(error):
    def respond(items):
        raise error

    return respond


class TestAccepted:
    def test_completes_rows_with_external_id_hash_and_attempt(self, queued, policy, clock):
        contacts = queued(3)
        result = engine(policy, clock).run()

        assert (result.claimed, result.accepted, result.failed) == (3, 3, 0)
        for row in rows().select_related("contact"):
            assert (row.sync_status, row.processing_status) == (S.COMPLETE, P.COMPLETE)
            assert row.external_id == "ext-%d" % row.contact_id
            assert row.synced_at == clock.now
            expected = payload_hash({"email": row.contact.email, "first_name": row.contact.first_name})
            assert row.synced_hash == expected
            assert (row.attempts, row.claim_token, row.lease_expires_at, row.last_error) == (1, None, None, "")
        assert SyncAttempt.objects.filter(contact__in=contacts, outcome=AttemptOutcome.ACCEPTED).count() == 3

    def test_an_accepted_row_without_an_id_keeps_the_one_it_had(self, queued, policy, clock):
        queued(1)
        rows().update(external_id="known-id")
        engine(policy, clock, lambda items: [Outcome.accepted(i) for i in items]).run()
        assert rows().get().external_id == "known-id"

    def test_claims_only_due_rows_of_its_own_crm(self, queued, policy, clock, settings):
        settings.OTHER_TOKEN = "x"
        contacts = queued(4)
        later, skipped, other = contacts.order_by("pk")[:3]
        rows().filter(contact=later).update(next_attempt_at=clock.now + timedelta(minutes=10))
        selection.skip(contacts.filter(pk=skipped.pk), ["scripted"])
        selection.select(contacts.filter(pk=other.pk), ["other"])

        result = engine(policy, clock).run()

        assert result.claimed == 2
        assert rows().get(contact=later).processing_status == P.QUEUED
        assert rows().get(contact=skipped).sync_status == S.SKIPPED
        assert ContactSync.objects.get(crm="other").processing_status == P.QUEUED

    def test_batches_and_limits(self, queued, policy, clock):
        queued(25)
        scripted = ScriptedBackend()
        result = SyncEngine(scripted, policy(batch_size=10), clock=clock).run(max_contacts=22)
        assert (result.claimed, result.batches) == (22, 3)
        assert [len(items) for items in _batches(scripted.pushed, 10)] == [10, 10, 2]
        assert rows().filter(processing_status=P.QUEUED).count() == 3

    def test_recording_is_set_based(self, queued, policy, clock):
        def queries_for_batch(count, prefix):
            queued(count, prefix=prefix)
            with CaptureQueriesContext(connection) as queries:
                engine(policy, clock, batch_size=500).run_batch(500)
            return len(queries)

        assert queries_for_batch(3, "few") == queries_for_batch(120, "many")


class TestFailures:
    def test_retryable_failure_requeues_with_backoff_and_keeps_the_message(self, queued, policy, clock):
        queued(1)
        result = engine(policy, clock, retry_all()).run()

        row = rows().get()
        assert result.retry_scheduled == 1
        assert (row.sync_status, row.processing_status, row.attempts) == (S.SELECTED, P.QUEUED, 1)
        assert row.next_attempt_at == clock.now + timedelta(minutes=5)
        assert row.last_error == "CRM answered 503"
        assert SyncAttempt.objects.get().outcome == AttemptOutcome.RETRY

    def test_backoff_doubles_from_the_base_and_is_capped(self, queued, policy, clock):
        queued(1)
        sync = engine(policy, clock, retry_all(), max_retries=10, retry_max_delay_minutes=30)
        delays = []
        for _ in range(5):
            sync.run()
            row = rows().get()
            delays.append((row.next_attempt_at - clock.now).total_seconds() / 60)
            clock.now = row.next_attempt_at
        assert delays == [5, 10, 20, 30, 30]

    def test_backoff_is_fixed_when_not_exponential(self, queued, policy, clock):
        queued(1)
        sync = engine(policy, clock, retry_all(), retry_exponential=False)
        for _ in range(3):
            sync.run()
            row = rows().get()
            assert row.next_attempt_at - clock.now == timedelta(minutes=5)
            clock.now = row.next_attempt_at

    def test_jitter_spreads_retries_below_the_ceiling(self, queued, policy, clock):
        queued(40)
        SyncEngine(ScriptedBackend(retry_all()), policy(), clock=clock).run()
        delays = {(row.next_attempt_at - clock.now).total_seconds() for row in rows()}
        assert len(delays) > 30
        assert all(0 <= delay <= 300 for delay in delays)

    def test_the_crms_retry_after_wins(self, queued, policy, clock):
        queued(1)
        engine(policy, clock, retry_all(retry_after=42)).run()
        assert rows().get().next_attempt_at == clock.now + timedelta(seconds=42)

    def test_gives_up_after_the_last_attempt(self, queued, policy, clock):
        queued(1)
        sync = engine(policy, clock, retry_all("CRM answered 503"), max_retries=2)
        for _ in range(3):
            sync.run()
            clock.advance(days=1)
        row = rows().get()
        assert (row.sync_status, row.processing_status, row.attempts) == (S.ERROR, P.ERROR, 3)
        assert row.last_error == (
            "Gave up after 3 attempts over 48.0 hours. Last error: CRM answered 503. Once Scripted CRM answers again, "
            'use "Retry failed syncs".'
        )
        assert list(SyncAttempt.objects.values_list("outcome", flat=True).order_by("id")) == [
            "retry",
            "retry",
            "failed",
        ]
        assert sync.run().claimed == 0

    def test_permanent_failure_goes_straight_to_error(self, queued, policy, clock):
        queued(2)
        first, second = rows()

        def respond(items):
            return [
                Outcome.permanent(i, "Email is blacklisted", http_status=400)
                if i.key == first.pk
                else Outcome.accepted(i)
                for i in items
            ]

        engine(policy, clock, respond).run()
        first.refresh_from_db()
        second.refresh_from_db()
        assert (first.sync_status, first.processing_status, first.attempts) == (S.ERROR, P.ERROR, 1)
        assert first.last_error == "Email is blacklisted"
        assert second.sync_status == S.COMPLETE, "one bad record never fails its neighbours"
        assert SyncAttempt.objects.get(outcome=AttemptOutcome.FAILED).http_status == 400

    def test_invalid_contact_is_not_sent(self, queued, scripted_crm, policy, clock):
        queued(1)
        queued(1, prefix="invalid")
        scripted = ScriptedBackend()
        SyncEngine(scripted, policy(), clock=clock).run()
        assert [item.contact.email for item in scripted.pushed] == ["c0@example.com"]
        bad = rows().get(contact__email="invalid0@example.com")
        assert (bad.sync_status, bad.last_error) == (S.ERROR, "Scripted CRM cannot take invalid0@example.com")

    @pytest.mark.parametrize(
        "error, status, message",
        [
            (RetryableError("Scripted CRM timed out"), S.SELECTED, "Scripted CRM timed out"),
            (
                PermanentError("Scripted CRM refused the batch", status_code=400),
                S.ERROR,
                "Scripted CRM refused the batch (HTTP 400)",
            ),
        ],
    )
    def test_a_whole_batch_error_applies_to_every_contact(self, queued, policy, clock, error, status, message):
        queued(3)
        engine(policy, clock, raise_(error)).run()
        assert set(rows().values_list("sync_status", "last_error")) == {(status, message)}

    def test_an_unexpected_backend_bug_is_retried_without_leaking_its_text(self, queued, policy, clock, caplog):
        queued(2)
        engine(policy, clock, raise_(KeyError("api-key=scripted-secret-key"))).run()
        assert set(rows().values_list("processing_status", "last_error")) == {
            (P.QUEUED, "Unexpected error in the Scripted CRM backend; see the worker log.")
        }
        assert "the backend failed unexpectedly" in caplog.text

    def test_a_crash_while_building_one_payload_retries_that_contact_only(self, queued, policy, clock, monkeypatch):
        queued(2)
        original = ScriptedBackend.build_payload

        def build(self, contact):
            if contact.email == "c0@example.com":
                raise ValueError("api-key=scripted-secret-key")
            return original(self, contact)

        monkeypatch.setattr(ScriptedBackend, "build_payload", build)
        engine(policy, clock).run()
        crashed = rows().get(contact__email="c0@example.com")
        assert (crashed.processing_status, crashed.attempts) == (P.QUEUED, 1)
        assert "scripted-secret-key" not in crashed.last_error
        assert rows().get(contact__email="c1@example.com").sync_status == S.COMPLETE

    def test_a_contact_the_backend_forgot_is_retried(self, queued, policy, clock):
        queued(2)
        engine(policy, clock, lambda items: [Outcome.accepted(items[0])]).run()
        assert sorted(rows().values_list("processing_status", flat=True)) == [P.COMPLETE, P.QUEUED]
        assert (
            rows().get(processing_status=P.QUEUED).last_error
            == "The Scripted CRM backend reported no result for this contact."
        )


class TestRateLimits:
    def test_rate_limit_requeues_without_using_an_attempt_and_pauses_the_crm(self, queued, policy, clock):
        queued(3)
        result = engine(policy, clock, raise_(RateLimited("Scripted CRM: too many requests", retry_after=30))).run()

        assert (result.claimed, result.waited, result.failed) == (3, 3, 0)
        assert result.paused_until == clock.now + timedelta(seconds=30)
        for row in rows():
            assert (row.sync_status, row.processing_status, row.attempts) == (S.SELECTED, P.QUEUED, 0)
            assert row.next_attempt_at == clock.now + timedelta(seconds=30)
        state = CRMState.objects.get(crm="scripted")
        assert state.paused_until == clock.now + timedelta(seconds=30)
        assert state.pause_reason == "Scripted CRM: too many requests"
        # The history says the contacts waited, not that an attempt failed.
        assert set(SyncAttempt.objects.values_list("outcome", flat=True)) == {AttemptOutcome.WAITED}

    def test_a_second_worker_holds_back_while_paused_and_resumes_after(self, queued, policy, clock):
        queued(3)
        engine(policy, clock, raise_(RateLimited("slow down", retry_after=30))).run()

        second = engine(policy, clock)
        clock.advance(seconds=29)
        held = second.run()
        assert held.claimed == 0 and held.paused_until is not None
        clock.advance(seconds=2)
        assert second.run().accepted == 3

    def test_rate_limit_waits_never_use_up_attempts(self, queued, policy, clock):
        queued(1)
        limited = engine(policy, clock, raise_(RateLimited("slow down", retry_after=10)), max_retries=1)
        for _ in range(6):
            limited.run()
            clock.advance(seconds=11)
        assert rows().get().attempts == 0
        engine(policy, clock, max_retries=1).run()
        row = rows().get()
        assert (row.sync_status, row.attempts) == (S.COMPLETE, 1)

    def test_a_longer_pause_is_not_shortened(self, queued, policy, clock):
        queued(1)
        sync = engine(policy, clock)
        sync.pause(clock.now + timedelta(minutes=10), "long pause")
        sync.pause(clock.now + timedelta(minutes=1), "short pause")
        assert sync.paused() == Pause(clock.now + timedelta(minutes=10), "long pause")

    def test_an_unavailable_crm_can_fail_the_batch_with_an_actionable_message(self, queued, policy, clock):
        queued(2)
        error = CRMUnavailable("Scripted CRM rejected the API key; check SCRIPTED_API_KEY", fail_contacts=True)
        result = engine(policy, clock, raise_(error)).run()
        assert result.failed == 2
        assert set(rows().values_list("sync_status", "last_error")) == {
            (S.ERROR, "Scripted CRM rejected the API key; check SCRIPTED_API_KEY")
        }
        assert engine(policy, clock).paused()[1] == "Scripted CRM rejected the API key; check SCRIPTED_API_KEY"

    def test_an_unavailable_crm_is_paused_and_contacts_keep_their_attempts(self, queued, policy, clock):
        queued(2)
        error = CRMUnavailable("Scripted CRM rejected the API key; check SCRIPTED_API_KEY", pause_seconds=900)
        result = engine(policy, clock, raise_(error)).run()
        assert result.paused_until == clock.now + timedelta(seconds=900)
        assert set(rows().values_list("processing_status", "attempts")) == {(P.QUEUED, 0)}
        assert "check SCRIPTED_API_KEY" in CRMState.objects.get().pause_reason


class TestLeases:
    def test_a_dead_workers_rows_are_claimed_again_and_its_late_result_refused(self, queued, policy, clock):
        queued(4)
        dead = engine(policy, clock)
        abandoned = dead.claim(10)
        dead.push(abandoned)  # pushed, then the worker "dies" before recording
        assert set(rows().values_list("processing_status", flat=True)) == {P.PROCESSING}

        clock.advance(seconds=301)
        survivor = engine(policy, clock, lambda items: [Outcome.accepted(i, external_id="new") for i in items])
        result = survivor.run()
        assert result.accepted == 4
        assert set(rows().values_list("sync_status", "external_id", "attempts")) == {(S.COMPLETE, "new", 2)}

        from integrations.engine import RunResult

        late = RunResult("scripted")
        dead.record(abandoned, late)
        assert late.discarded == 4
        assert set(rows().values_list("sync_status", "external_id")) == {(S.COMPLETE, "new")}

    def test_rows_are_not_reclaimed_while_their_lease_holds(self, queued, policy, clock):
        queued(2)
        engine(policy, clock).claim(10)
        clock.advance(seconds=299)
        assert engine(policy, clock).claim(10).rows == []

    def test_a_lost_last_attempt_ends_in_error(self, queued, policy, clock):
        queued(1)
        sync = engine(policy, clock, max_retries=0)
        sync.claim(10)
        clock.advance(seconds=301)
        sync.run()
        row = rows().get()
        assert (row.sync_status, row.processing_status) == (S.ERROR, P.ERROR)
        assert "did not finish" in row.last_error

    def test_claim_is_a_compare_and_set(self, queued, policy, clock, monkeypatch):
        """Where row locks do not exist (SQLite), a row another worker claimed between
        our SELECT and our UPDATE is left to it."""
        if connection.features.has_select_for_update_skip_locked:
            pytest.skip("PostgreSQL relies on row locks; the 8-worker test proves them")
        queued(3)
        taken_by_other = engine(policy, clock).claim(1).rows[0]
        every_id = list(rows().values_list("pk", flat=True))
        monkeypatch.setattr(SyncEngine, "_lock_due_ids", staticmethod(lambda queryset, limit: every_id[:limit]))

        batch = engine(policy, clock).claim(10)

        assert taken_by_other.pk not in {row.pk for row in batch.rows}
        assert len(batch.rows) == 2
        taken_by_other.refresh_from_db()
        assert taken_by_other.attempts == 1


def _batches(items, size):
    return [items[i : i + size] for i in range(0, len(items), size)]
