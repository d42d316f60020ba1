"""The promise under ordinary change and outage: a contact deleted or edited while it
is pushed, a staff decision taken mid-push, a push longer than its lease, and a CRM
that is down for hours. Each case is reproduced over real sockets against the
sandbox on PostgreSQL (and, where time matters, in controlled time)."""

import dataclasses
import threading
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, connections

from contacts import selection
from contacts.models import (
    AttemptOutcome,
    Contact,
    ContactSync,
    PendingDecision,
    SyncAttempt,
)
from contacts.models import (
    ProcessingStatus as P,
)
from contacts.models import (
    SyncStatus as S,
)
from integrations.backends.base import Outcome
from integrations.backends.hubspot import HubSpotBackend
from integrations.checks import check_crm_configuration
from integrations.conf import BreakerPolicy, SyncPolicy
from integrations.engine import SyncEngine
from integrations.models import CRMState

from .conftest import UpperBound
from .doubles import ScriptedBackend

# ---------------------------------------------------------------- helpers


def people(count, prefix="person"):
    Contact.objects.bulk_create(
        Contact(email="%s%d@example.com" % (prefix, i), first_name="Before", last_name="Lee") for i in range(count)
    )
    return Contact.objects.filter(email__startswith=prefix).order_by("pk")


def in_background(target):
    """Run `target` in a thread with its own database connection; returns
    (thread, errors)."""
    errors = []

    def run():
        try:
            target()
        except BaseException as exc:  # the test reports it
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def sync_in_background(crm):
    out, err = StringIO(), StringIO()
    return in_background(lambda: call_command("sync_crm", "--crm", crm, "--until-empty", stdout=out, stderr=err))


def wait_for(condition, what, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    pytest.fail("waited %d s for %s" % (seconds, what))


def finish(thread, errors, seconds=90):
    thread.join(seconds)
    assert not thread.is_alive(), "the sync did not end"
    assert errors == [], "the sync stopped on %r" % errors


def in_flight(crm, count=1):
    return lambda: ContactSync.objects.filter(crm=crm, processing_status=P.PROCESSING).count() >= count


def posts(sandbox, crm):
    return [r for r in sandbox.requests(crm) if r["method"] == "POST"]


# ---------------------------------------------------------------- 1. deleted mid-push


def delete_instance(contact):
    contact.delete()


def delete_queryset(contact):
    Contact.objects.filter(pk__in=[contact.pk]).delete()


def delete_in_sql(contact):
    # Any other path (a cascade the database performs, another program) looks like this.
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM contacts_contact WHERE id = %s", [contact.pk])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("delete", [delete_instance, delete_queryset, delete_in_sql])
def test_a_contact_deleted_while_pushed_drops_its_rows_and_the_rest_of_the_batch_records(
    on_postgres, sandbox, settings, delete
):
    sandbox.faults("n8n", latency_ms=1500)
    contacts = people(3)
    selection.select(contacts, ["n8n"])
    victim, survivors = contacts[1], [contacts[0].pk, contacts[2].pk]

    thread, errors = sync_in_background("n8n")
    wait_for(in_flight("n8n", 3), "the batch to be claimed")
    delete(victim)
    finish(thread, errors)

    rows = ContactSync.objects.filter(crm="n8n")
    assert sorted(rows.values_list("contact_id", "sync_status", "processing_status")) == [
        (pk, S.COMPLETE, P.COMPLETE) for pk in survivors
    ]
    attempts = SyncAttempt.objects.filter(crm="n8n")
    assert sorted(attempts.values_list("contact_id", "outcome")) == [(pk, AttemptOutcome.ACCEPTED) for pk in survivors]
    assert not Contact.objects.filter(pk=victim.pk).exists()
    assert len(posts(sandbox, "n8n")) == 3, "nothing pushed again"


# ---------------------------------------------------------------- 4. edits and decisions mid-push


def hubspot_contact(sandbox, email):
    return next(c for c in sandbox.contacts("hubspot") if c["properties"]["email"] == email)


def edit_with_save(contact):
    contact.first_name = "After"
    contact.save()


def edit_without_signals(contact):
    Contact.objects.filter(pk=contact.pk).update(first_name="After")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("edit", [edit_with_save, edit_without_signals])
def test_an_edit_saved_during_a_push_reaches_the_crm(on_postgres, sandbox, edit):
    sandbox.faults("hubspot", latency_ms=1500)
    contact = people(1).get()
    selection.select(Contact.objects.filter(pk=contact.pk), ["hubspot"])

    thread, errors = sync_in_background("hubspot")
    wait_for(in_flight("hubspot"), "the push to start")
    edit(contact)
    finish(thread, errors)

    assert hubspot_contact(sandbox, contact.email)["properties"]["firstname"] == "After"
    row = ContactSync.objects.get(crm="hubspot")
    assert (row.sync_status, row.processing_status, row.pending_decision) == (S.COMPLETE, P.COMPLETE, "")
    assert len(posts(sandbox, "hubspot")) == 2, "pushed once more, with the edit"


@pytest.mark.django_db(transaction=True)
def test_an_edit_is_not_pushed_again_when_the_crm_does_not_sync_on_change(on_postgres, sandbox, settings):
    settings.HUBSPOT_SYNC_ON_CHANGE = False
    sandbox.faults("hubspot", latency_ms=1500)
    contact = people(1).get()
    selection.select(Contact.objects.filter(pk=contact.pk), ["hubspot"])

    thread, errors = sync_in_background("hubspot")
    wait_for(in_flight("hubspot"), "the push to start")
    edit_without_signals(contact)
    finish(thread, errors)

    assert hubspot_contact(sandbox, contact.email)["properties"]["firstname"] == "Before"
    assert ContactSync.objects.get(crm="hubspot").processing_status == P.COMPLETE


def push_one_slowly_to_hubspot(sandbox):
    """Queue one contact for HubSpot and start a sync whose push takes 1.5 s; return
    (the contact as a queryset, thread, errors) once the push has started."""
    sandbox.faults("hubspot", latency_ms=1500)
    only = Contact.objects.filter(pk=people(1).get().pk)
    selection.select(only, ["hubspot"])
    thread, errors = sync_in_background("hubspot")
    wait_for(in_flight("hubspot"), "the push to start")
    return only, thread, errors


@pytest.mark.django_db(transaction=True)
def test_a_skip_taken_during_a_push_leaves_the_row_skipped(on_postgres, sandbox):
    only, thread, errors = push_one_slowly_to_hubspot(sandbox)
    assert selection.skip(only, ["hubspot"]) == 0, "in flight: not applied yet"
    assert ContactSync.objects.get(crm="hubspot").pending_decision == PendingDecision.SKIP
    finish(thread, errors)

    row = ContactSync.objects.get(crm="hubspot")
    assert (row.sync_status, row.processing_status, row.pending_decision) == (S.SKIPPED, P.NONE, "")
    assert row.external_id, "what the push achieved is kept"
    assert len(posts(sandbox, "hubspot")) == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_select_taken_during_a_push_pushes_again_after_the_record(on_postgres, sandbox):
    only, thread, errors = push_one_slowly_to_hubspot(sandbox)
    selection.select(only, ["hubspot"])
    finish(thread, errors)

    row = ContactSync.objects.get(crm="hubspot")
    assert (row.sync_status, row.processing_status, row.attempts) == (S.COMPLETE, P.COMPLETE, 1)
    assert len(posts(sandbox, "hubspot")) == 2
    assert SyncAttempt.objects.filter(outcome=AttemptOutcome.ACCEPTED).count() == 2


# ---------------------------------------------------------------- 2. a push longer than its lease


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_live_worker_keeps_its_lease_through_a_push_longer_than_the_lease(on_postgres, sandbox):
    sandbox.faults("hubspot", latency_ms=2500)
    selection.select(people(1), ["hubspot"])
    policy = dataclasses.replace(SyncPolicy.for_backend(HubSpotBackend), lease_seconds=1)

    thread, errors = in_background(lambda: SyncEngine(HubSpotBackend(), policy).run())
    wait_for(in_flight("hubspot"), "the push to start")
    other = SyncEngine(HubSpotBackend(), policy)
    tries = 0
    while thread.is_alive():
        _token, ids = other.claim_ids(10)
        assert ids == [], "another worker took over a batch whose worker is alive"
        tries += 1
        time.sleep(0.1)
    finish(thread, errors)

    assert tries > 15, "the other worker kept trying well past the 1 s lease"
    row = ContactSync.objects.get(crm="hubspot")
    assert (row.processing_status, row.attempts) == (P.COMPLETE, 1)
    assert len(posts(sandbox, "hubspot")) == 1


@pytest.mark.django_db(transaction=True)
def test_a_worker_that_lost_its_batch_sends_nothing_more_of_it(on_postgres, scripted_crm, queued, policy):
    import uuid

    queued(3)
    seen = {}

    def respond(items):
        # Another worker takes the batch over (as after a lease it could not renew).
        ContactSync.objects.filter(pk__in=[i.key for i in items]).update(claim_token=uuid.uuid4())
        seen["stopped"] = backend.stop_sending.wait(5)
        return [Outcome.retry(i, "not sent") for i in items]

    backend = ScriptedBackend(respond)
    result = SyncEngine(backend, policy(lease_seconds=0.3)).run()

    assert seen["stopped"], "the renewal found the rows gone and told the backend to stop"
    assert not backend.stop_sending.is_set(), "cleared for the next batch"
    assert result.discarded == 3, "the other worker's rows are left alone"


def test_a_backend_told_to_stop_sends_no_request(db, crm_api, settings):
    from integrations.backends.base import SyncItem

    settings.HUBSPOT_API_KEY = "pat-na1-stop-token"
    backend = HubSpotBackend()
    backend.stop_sending.set()
    contact = Contact(pk=1, email="ann@example.com")
    outcomes = backend.push([SyncItem(key=1, contact=contact, payload=backend.build_payload(contact))])
    assert [o.kind.value for o in outcomes] == ["retry"]
    assert "lost its hold on the batch" in outcomes[0].message
    assert len(crm_api.calls) == 0


def test_check_refuses_a_lease_shorter_than_a_request_may_last(settings, db):
    settings.HUBSPOT_API_KEY = "pat-na1-check-token"
    settings.CRMSYNC_LEASE_SECONDS = 30
    settings.HUBSPOT_TIMEOUT_SECONDS = 30
    errors = [m for m in check_crm_configuration() if m.id == "integrations.E002"]
    assert len(errors) == 1
    assert "HUBSPOT_TIMEOUT_SECONDS" in errors[0].msg and "at least 46" in errors[0].hint

    settings.CRMSYNC_LEASE_SECONDS = 46
    assert not [m for m in check_crm_configuration() if m.id == "integrations.E002"]


# ---------------------------------------------------------------- 5. outages


def probes_within(rules, seconds):
    """The most probes the schedule allows in `seconds` after the breaker opened."""
    count, elapsed, interval = 0, 0.0, 0
    while True:
        interval = rules.next_interval(interval)
        elapsed += interval
        if elapsed > seconds:
            return count + 1  # one more may start as the outage ends
        count += 1


class Outage:
    """A scripted CRM that answers 503 to everything between two moments of the
    test's clock, refuses `refused` emails with a 400 at all times, and accepts
    the rest."""

    def __init__(self, clock, start, end, refused=()):
        self.clock, self.start, self.end, self.refused = clock, start, end, set(refused)
        self.pushes_during = 0

    def down(self):
        return self.start <= self.clock.now < self.end

    def respond(self, items):
        self.pushes_during += self.down()
        outcomes = []
        for item in items:
            if item.contact.email in self.refused:
                outcomes.append(Outcome.permanent(item, "CRM refused it: invalid phone", http_status=400))
            elif self.down():
                outcomes.append(Outcome.retry(item, "CRM answered 503", http_status=503))
            else:
                outcomes.append(Outcome.accepted(item, "ext-%d" % item.contact.pk))
        return outcomes


def run_through(sync, clock, until, step_seconds, on_tick=None):
    while clock.now < until:
        sync.run()
        if on_tick:
            on_tick()
        clock.advance(seconds=step_seconds)


@pytest.mark.slow
def test_a_two_hour_outage_in_controlled_time_costs_no_contact(db, queued, policy, clock):
    queued(200)
    rules = BreakerPolicy()
    start = clock.now
    outage = Outage(clock, start, start + timedelta(hours=2))
    sync = SyncEngine(
        ScriptedBackend(outage.respond), policy(retry_delay_minutes=1, max_retries=3), clock=clock, rng=UpperBound()
    )
    rows = ContactSync.objects.filter(crm="scripted")
    done = {}

    def note_last_complete():
        if "at" not in done and not rows.exclude(processing_status=P.COMPLETE).exists():
            done["at"] = clock.now

    run_through(sync, clock, outage.end + timedelta(hours=1), step_seconds=5, on_tick=note_last_complete)

    assert rows.filter(processing_status=P.ERROR).count() == 0
    assert rows.filter(sync_status=S.COMPLETE, processing_status=P.COMPLETE).count() == 200
    bound = rules.failures + probes_within(rules, 7200)
    assert 0 < outage.pushes_during <= bound, (outage.pushes_during, bound)
    recovered_after = (done["at"] - outage.end).total_seconds()
    print(
        "two-hour outage, controlled time: %d pushes during it (bound %d), last Complete %.0f s after recovery"
        % (outage.pushes_during, bound, recovered_after)
    )
    assert recovered_after <= rules.probe_max_seconds + 5, recovered_after
    assert max(rows.values_list("attempts", flat=True)) <= 2, "only the batches before it opened spent one"
    assert SyncAttempt.objects.filter(outcome=AttemptOutcome.WAITED).exists()
    state = CRMState.objects.get(crm="scripted")
    assert (state.failed_batches, state.failing_since, state.next_probe_at) == (0, None, None)


def test_the_breaker_stops_claims_between_probes_for_every_worker(db, queued, policy, clock):
    queued(100)
    outage = Outage(clock, clock.now, clock.now + timedelta(hours=1))
    workers = [
        SyncEngine(ScriptedBackend(outage.respond), policy(batch_size=10), clock=clock, rng=UpperBound())
        for _ in range(3)
    ]
    workers[0].run()
    assert outage.pushes_during == 3, "three failed batches in a row open it"
    state = CRMState.objects.get(crm="scripted")
    assert state.next_probe_at == clock.now + timedelta(seconds=30)
    for worker in workers:
        assert worker.run().claimed == 0, "nobody claims before the probe"
        assert worker.paused().until == state.next_probe_at

    clock.advance(seconds=30)
    results = [worker.run() for worker in workers]
    assert sorted(r.claimed for r in results) == [0, 0, 10], "one probe batch, by one worker"
    assert CRMState.objects.get(crm="scripted").next_probe_at == clock.now + timedelta(seconds=60), "doubled"


def test_a_contact_specific_refusal_fails_that_contact_alone_outage_or_not(db, queued, policy, clock):
    contacts = queued(30)
    refused = [c.email for c in contacts[:2]]
    start = clock.now
    outage = Outage(clock, start, start + timedelta(minutes=30), refused=refused)
    sync = SyncEngine(ScriptedBackend(outage.respond), policy(batch_size=10), clock=clock, rng=UpperBound())

    run_through(sync, clock, outage.end + timedelta(minutes=30), step_seconds=10)

    rows = ContactSync.objects.filter(crm="scripted")
    failed = rows.filter(processing_status=P.ERROR)
    assert sorted(failed.values_list("contact__email", flat=True)) == sorted(refused)
    assert {row.last_error for row in failed} == {"CRM refused it: invalid phone"}
    assert rows.filter(processing_status=P.COMPLETE).count() == 28


def test_an_isolated_failed_batch_still_spends_an_attempt(db, queued, policy, clock):
    queued(10)
    failing = {"once": True}

    def respond(items):
        if failing.pop("once", False):
            return [Outcome.retry(i, "CRM answered 502", http_status=502) for i in items]
        return ScriptedBackend.accept_all(items)

    sync = SyncEngine(ScriptedBackend(respond), policy(retry_delay_minutes=1), clock=clock, rng=UpperBound())
    sync.run()
    rows = ContactSync.objects.filter(crm="scripted")
    assert set(rows.values_list("processing_status", "attempts")) == {(P.QUEUED, 1)}
    assert SyncAttempt.objects.filter(outcome=AttemptOutcome.RETRY).count() == 10
    assert all(row.first_failed_at == clock.now for row in rows)
    clock.advance(minutes=1)
    sync.run()
    assert set(rows.values_list("processing_status", "attempts", "first_failed_at")) == {(P.COMPLETE, 2, None)}


def test_giving_up_needs_the_attempts_and_the_time(db, queued, policy, clock):
    queued(1)
    sync = SyncEngine(
        ScriptedBackend(lambda items: [Outcome.retry(i, "CRM answered 500", http_status=500) for i in items]),
        policy(max_retries=1, retry_delay_minutes=1, retry_max_delay_minutes=10, give_up_after_hours=1),
        clock=clock,
        rng=UpperBound(),
    )
    row = ContactSync.objects.filter(crm="scripted")
    first = clock.now
    while clock.now - first < timedelta(minutes=59):
        sync.run()
        assert row.get().processing_status == P.QUEUED, "attempts used, but not yet an hour"
        clock.advance(minutes=10)
    assert row.get().attempts > 2
    clock.advance(minutes=10)
    sync.run()
    last = row.get()
    assert (last.sync_status, last.processing_status) == (S.ERROR, P.ERROR)
    assert last.last_error.startswith("Gave up after %d attempts over 1." % last.attempts)


def test_delays_accept_decimals(settings, scripted_crm):
    settings.SCRIPTED_SYNC_RETRY_DELAY_MINUTES = "0.05"
    settings.CRMSYNC_RETRY_MAX_DELAY_MINUTES = "0.5"
    policy = SyncPolicy.for_backend(ScriptedBackend)
    sync = SyncEngine(ScriptedBackend(), policy, rng=UpperBound())
    assert sync.retry_delay(1) == timedelta(seconds=3)
    assert sync.retry_delay(10) == timedelta(seconds=30)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_outage_over_real_sockets_ends_with_every_contact_complete(on_postgres, sandbox, settings):
    settings.CRMSYNC_BREAKER_PROBE_SECONDS = 0.3
    settings.CRMSYNC_BREAKER_PROBE_MAX_SECONDS = 1.0
    # Without the breaker, three attempts and no grace would end them all in Error.
    settings.CRMSYNC_GIVE_UP_AFTER_HOURS = 0
    settings.HUBSPOT_SYNC_MAX_RETRIES = 2
    settings.HUBSPOT_SYNC_RETRY_DELAY_MINUTES = 0.005
    settings.HUBSPOT_SYNC_SCHEDULER_BATCH_SIZE = 20
    settings.HUBSPOT_TIMEOUT_SECONDS = 2
    contacts = people(200)
    selection.select(contacts, ["hubspot"])
    sandbox.faults("hubspot", error_rate=1.0)

    thread, errors = sync_in_background("hubspot")
    wait_for(lambda: CRMState.objects.filter(crm="hubspot", next_probe_at__isnull=False).exists(), "the breaker")
    opened = time.monotonic()
    time.sleep(4)
    sandbox.faults("hubspot", error_rate=0)
    outage_seconds = time.monotonic() - opened
    finish(thread, errors)
    recovered_after = time.monotonic() - opened - outage_seconds

    rows = ContactSync.objects.filter(crm="hubspot")
    assert rows.filter(processing_status=P.ERROR).count() == 0
    assert rows.filter(processing_status=P.COMPLETE).count() == 200
    emails = sorted(c["properties"]["email"] for c in sandbox.contacts("hubspot"))
    assert emails == sorted(contacts.values_list("email", flat=True)), "each email once"
    failed = [r for r in sandbox.requests("hubspot") if (r["status"] or 0) >= 500]
    rules = BreakerPolicy.from_settings()
    # The batches before it opened, then one probe per interval of the schedule
    # (plus one for the probe that may be on its way as the outage is measured).
    bound = rules.failures + probes_within(rules, outage_seconds) + 1
    print(
        "outage over real sockets: %.1f s, %d requests answered 5xx (bound %d), sync ended %.1f s after recovery"
        % (outage_seconds, len(failed), bound, recovered_after)
    )
    assert len(failed) <= bound, len(failed)
