"""A 429 costs one retried request, not a batch; the CRM's rate-limit headers hold
every worker; the pace keeps a margin below the documented limit. Unit tests with
`responses`, an end-to-end run against the sandbox's strict sliding window over
real sockets, and the shared pacer on PostgreSQL with real connections."""

import itertools
import json
import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connections

from contacts import selection
from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus
from integrations.backends.base import RATE_LIMIT_RETRIES, OutcomeKind
from integrations.backends.brevo import BrevoBackend
from integrations.backends.pacing import (
    BURST,
    LATE_SLOTS_GIVEN_UP,
    PACE_SHARE,
    LocalPacer,
    SlotWindow,
    pace_interval,
    wait_for_slot,
)
from integrations.ratelimit import SharedPacer

from .conftest import make_item, unsaved_contact

API = "https://api.brevo.com/v3"
KEY = "xkeysib-flow-0000000000000000000000"
TOO_MANY = {"code": "too_many_requests", "message": "The expected rate limit is exceeded."}


@pytest.fixture
def brevo(settings):
    settings.BREVO_API_KEY = KEY
    settings.BREVO_REQUESTS_PER_SECOND = 10
    settings.BREVO_CONCURRENCY = 1  # one request at a time: the order is the test's
    return BrevoBackend


def limit_headers(remaining, reset):
    return {
        "x-sib-ratelimit-limit": "10",
        "x-sib-ratelimit-remaining": str(remaining),
        "x-sib-ratelimit-reset": str(reset),
    }


class ScriptedBrevo:
    """Answers POST /contacts per email from a script: a list of statuses, the
    last repeated; 201 with an id for a success."""

    def __init__(self, crm_api, script, reset=2):
        self.script, self.reset, self.sent = script, reset, []
        crm_api.add_callback("POST", API + "/contacts", callback=self.answer)

    def answer(self, request):
        email = json.loads(request.body)["email"]
        self.sent.append(email)
        statuses = self.script.get(email, [201])
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        if status == 429:
            return 429, limit_headers(0, self.reset), json.dumps(TOO_MANY)
        return 201, limit_headers(5, 1), json.dumps({"id": len(self.sent)})


def push(backend, emails):
    return backend.push([make_item(unsaved_contact(email=email), backend) for email in emails])


class TestA429CostsOneRequest:
    def test_only_the_refused_request_is_sent_again_and_the_batch_goes_on(self, brevo, crm_api, no_pacing_sleep):
        crm = ScriptedBrevo(crm_api, {"b@example.com": [429, 201]})
        outcomes = push(brevo(), ["a@example.com", "b@example.com", "c@example.com"])
        assert [o.kind for o in outcomes] == [OutcomeKind.ACCEPTED] * 3
        assert crm.sent == ["a@example.com", "b@example.com", "b@example.com", "c@example.com"]

    def test_the_hold_is_the_wait_brevo_asks_and_moves_every_later_request_back(self, brevo, crm_api, no_pacing_sleep):
        ScriptedBrevo(crm_api, {"a@example.com": [429, 201]}, reset=3)
        backend = brevo()
        push(backend, ["a@example.com", "b@example.com"])
        # Slots: a, then (after the 3 s hold) a again, then b as soon as the window allows.
        first, retried, after = no_pacing_sleep
        assert retried - first == pytest.approx(3, abs=0.05)
        assert after - retried == pytest.approx(pace_interval(10) / BURST, abs=0.01)

    def test_retries_are_bounded_then_the_contacts_wait_and_the_rest_is_not_sent(self, brevo, crm_api, no_pacing_sleep):
        crm = ScriptedBrevo(crm_api, {"a@example.com": [429]}, reset=2)
        outcomes = push(brevo(), ["a@example.com", "b@example.com"])
        assert [(o.kind, o.retry_after) for o in outcomes] == [(OutcomeKind.WAIT, 2.0)] * 2
        assert crm.sent == ["a@example.com"] * (1 + RATE_LIMIT_RETRIES)

    def test_a_wait_too_long_for_a_batch_is_not_slept_out(self, brevo, crm_api, no_pacing_sleep):
        # The hourly quota spent: the contact waits and the engine pauses Brevo.
        crm = ScriptedBrevo(crm_api, {"a@example.com": [429]}, reset=1800)
        [outcome] = push(brevo(), ["a@example.com"])
        assert (outcome.kind, outcome.retry_after, len(crm.sent)) == (OutcomeKind.WAIT, 1800.0, 1)


class TestHeadersHoldThePacer:
    @pytest.mark.parametrize("remaining, reset, held", [("0", "5", 5.0), ("0", "1", 0.0), ("3", "5", 0.0)])
    def test_a_brevo_window_spent_for_longer_than_a_second_holds(self, brevo, crm_api, remaining, reset, held):
        crm_api.post(API + "/contacts", status=201, json={"id": 1}, headers=limit_headers(remaining, reset))
        backend = brevo()
        push(backend, ["a@example.com"])
        next_slot = backend.pacer.reserve(1)[0] - time.monotonic()
        assert next_slot == pytest.approx(max(held, pace_interval(10) / BURST), abs=0.05)


class TestPace:
    def test_slots_keep_the_margin_below_the_documented_rate(self):
        slots = LocalPacer(20).reserve(100)
        window = 1 / PACE_SHARE
        # No window a little longer than the documented second holds more than 20.
        assert max(sum(1 for later in slots[i:] if later < start + window) for i, start in enumerate(slots)) == 20
        assert slots[20] - slots[0] == pytest.approx(window)
        assert min(b - a for a, b in itertools.pairwise(slots)) == pytest.approx(pace_interval(20) / BURST)
        assert 0.95 <= PACE_SHARE < 1

    def test_a_window_of_many_requests_leaves_one_of_them(self):
        # HubSpot: 100 in any rolling 10 s. crmsync takes 99 of them in 10 s / PACE_SHARE,
        # so HubSpot's Remaining never reads 0 because of crmsync alone; the 100th
        # waits for the first's window.
        window = SlotWindow(10, window_seconds=10)
        recent, slots = [], []
        for _ in range(100):
            slot, recent = window.take(0.0, 0.0, recent)
            slots.append(slot)
        assert len(recent) == 99
        assert slots[99] - slots[0] == pytest.approx(10 / PACE_SHARE)

    def test_slots_left_unused_by_a_pause_are_caught_up_within_the_window(self):
        window = SlotWindow(10)
        recent = []
        first, recent = window.take(0.0, 0.0, recent)
        # Nothing asked for 0.5 s (a worker recording its batch), then nine at once:
        # they come at BURST times the average rate, not one every tenth of a second.
        later = []
        for _ in range(9):
            slot, recent = window.take(0.5, 0.0, recent)
            later.append(slot)
        assert later[0] == 0.5
        assert later[-1] - later[0] == pytest.approx(8 * pace_interval(10) / BURST)
        # The eleventh waits for the window of the first.
        eleventh, recent = window.take(0.5, 0.0, recent)
        assert eleventh == pytest.approx(first + 1 / PACE_SHARE)

    def test_a_hold_comes_before_every_slot(self):
        slot, _ = SlotWindow(10).take(1.0, 4.0, [0.5])
        assert slot == 4.0

    def test_a_crm_without_a_pace_still_waits_out_a_hold(self):
        # Mautic and n8n document no limit, but a 429 still holds their requests.
        assert SlotWindow(None).take(1.0, 4.0, []) == (4.0, [])
        assert SlotWindow(None).take(1.0, 0.0, []) == (1.0, [])

    def test_a_slot_a_hold_covers_while_waiting_for_it_is_given_up(self, monkeypatch):
        pacer = LocalPacer(10)
        slept_until = []

        def sleep_until(moment):
            slept_until.append(moment)
            if len(slept_until) == 1:
                pacer.hold(2)  # another thread met a 429 meanwhile

        monkeypatch.setattr("integrations.backends.pacing.wait_until", sleep_until)
        wait_for_slot(pacer)
        assert len(slept_until) == 2 and slept_until[1] - slept_until[0] >= 1.9

    def test_a_slot_woken_too_late_for_is_given_up_for_a_new_one(self, monkeypatch):
        """A request whose thread woke past half the window's margin would reach the
        CRM later than its window counts it: it takes a fresh slot instead."""
        pacer = LocalPacer(10)
        margin = pacer.window.span - 1.0
        given = [time.monotonic() - margin, time.monotonic() + 3600]
        reserved = []

        def reserve(count):
            reserved.append(given[len(reserved)])
            return [reserved[-1]]

        monkeypatch.setattr(pacer, "reserve", reserve)
        monkeypatch.setattr("integrations.backends.pacing.wait_until", lambda moment: None)
        wait_for_slot(pacer)
        assert reserved == given
        # A slot on time (woken within half the margin) is used.
        assert not pacer.window.too_late(100.0, 100.0 + margin / 2 - 0.001)
        assert pacer.window.too_late(100.0, 100.0 + margin / 2 + 0.001)

    def test_a_thread_late_for_every_slot_still_sends_after_a_few(self, monkeypatch):
        pacer = LocalPacer(10)
        reserved = []

        def reserve(count):
            reserved.append(time.monotonic() - 1.0)  # always a second late
            return [reserved[-1]]

        monkeypatch.setattr(pacer, "reserve", reserve)
        monkeypatch.setattr("integrations.backends.pacing.wait_until", lambda moment: None)
        wait_for_slot(pacer)
        assert len(reserved) == 1 + LATE_SLOTS_GIVEN_UP

    def test_without_a_pace_no_slot_is_late(self):
        assert not LocalPacer(None).window.too_late(0.0, 60.0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_strict_sliding_window_takes_every_contact_in_one_run_with_few_429(sandbox, settings):
    """Against at most 20 requests in any second (no burst allowance) with jitter,
    every contact is accepted in one run, each email once, and a 429 costs one
    request: the old flow lost the rest of a batch to each."""
    settings.BREVO_API_KEY = "xkeysib-e2e-000000000000000000000"
    settings.BREVO_REQUESTS_PER_SECOND = 20
    settings.BREVO_CONCURRENCY = 4
    settings.BREVO_IMPORT_THRESHOLD = 0
    settings.BREVO_SYNC_SCHEDULER_BATCH_SIZE = 30
    sandbox.faults("brevo", rate_limit={"requests": 20, "seconds": 1, "model": "sliding"}, latency_ms=20, jitter_ms=10)
    Contact.objects.bulk_create(Contact(email="strict%d@example.com" % i, first_name="S") for i in range(60))
    selection.select(Contact.objects.all(), ["brevo"])

    call_command("sync_crm", "--crm", "brevo", "--until-empty", stdout=StringIO(), stderr=StringIO())

    rows = ContactSync.objects.filter(crm="brevo")
    assert {(r.sync_status, r.processing_status) for r in rows} == {(SyncStatus.COMPLETE, ProcessingStatus.COMPLETE)}
    in_crm = sorted(contact["email"] for contact in sandbox.contacts("brevo"))
    assert in_crm == sorted(Contact.objects.values_list("email", flat=True))
    statuses = [entry["status"] for entry in sandbox.requests("brevo") if entry["path"] == "/v3/contacts"]
    # Each contact is one POST, plus one per 429 it met; a handful at most.
    assert statuses.count(201) == 60
    assert statuses.count(429) <= 5, statuses


def test_workers_on_postgres_share_one_pace_with_holds(on_postgres, transactional_db):
    """Four threads, each with its own connection, reserve slots at once: every
    slot is distinct and one pace interval from the next, and a hold by one moves
    the next slot of every other behind it."""
    interval = pace_interval(100)
    slots, lock = [], threading.Lock()
    # Slots from a second on, so that none starts at "now" for lack of a queue.
    SharedPacer("paced", 100).hold(1)

    def reserve_some():
        pacer = SharedPacer("paced", 100)
        try:
            for _ in range(10):
                slot = pacer.reserve(1)[0]
                with lock:
                    slots.append(slot)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=reserve_some) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    slots.sort()
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert len(slots) == 40
    # One window of 100 shared by all four: distinct slots at the catch-up gap.
    assert gaps == pytest.approx([interval / BURST] * 39, abs=0.002)

    SharedPacer("paced", 100).hold(5)
    other_worker = threading.Thread(target=lambda: slots.append(SharedPacer("paced", 100).reserve(1)[0]))
    other_worker.start()
    other_worker.join()
    assert slots[-1] - time.monotonic() == pytest.approx(5, abs=0.3)
