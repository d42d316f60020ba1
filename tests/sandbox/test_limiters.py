"""The sandbox's limiter models (fixed window, sliding window, token bucket): their
arithmetic on a clock the test moves, and the rate-limit headers and 429 each
emulator answers from their state."""

import json
import random
import threading

import pytest

from crm_sandbox.base import FIXED_WINDOW, SLIDING_WINDOW, TOKEN_BUCKET, Limit, Request
from crm_sandbox.brevo import API_KEY, BrevoEmulator
from crm_sandbox.hubspot import ACCESS_TOKEN, HubSpotEmulator
from crm_sandbox.management.commands.crm_sandbox import Command
from crm_sandbox.server import SandboxOptions, SandboxServer


def let_through(limit, times):
    """Whether each request at `times` passes; a passing one is counted."""
    passed = []
    for now in times:
        allowed = limit.wait(now) == 0
        if allowed:
            limit.take(now)
        passed.append(allowed)
    return passed


class TestFixedWindow:
    def test_counts_start_again_at_each_window_boundary(self):
        limit = Limit(3, 1.0, model=FIXED_WINDOW)
        # Three at the end of one window and three at the start of the next all
        # pass: six within 0.2 s, which a fixed window allows and a sliding one not.
        assert let_through(limit, [10.8, 10.85, 10.9, 10.95, 11.0, 11.05, 11.1, 11.15]) == [
            True,
            True,
            True,
            False,
            True,
            True,
            True,
            False,
        ]

    def test_wait_remaining_and_reset_come_from_the_window_end(self):
        limit = Limit(2, 10.0, model=FIXED_WINDOW)
        let_through(limit, [103.0, 104.0])
        assert limit.remaining(105.0) == 0
        assert limit.wait(105.0) == pytest.approx(5.0)
        assert limit.reset_in(105.0) == pytest.approx(5.0)
        assert (limit.remaining(110.0), limit.wait(110.0)) == (2, 0.0)


class TestSlidingWindow:
    def test_never_more_than_n_in_any_window(self):
        limit = Limit(3, 1.0, model=SLIDING_WINDOW)
        assert let_through(limit, [10.8, 10.85, 10.9, 10.95, 11.0, 11.79, 11.8, 11.86]) == [
            True,
            True,
            True,
            False,
            False,
            False,  # 10.8 is still within the second before 11.79
            True,  # ... and no longer at 11.8
            True,
        ]

    def test_the_wait_is_until_the_oldest_request_leaves_the_window(self):
        limit = Limit(2, 1.0, model=SLIDING_WINDOW)
        let_through(limit, [5.0, 5.4])
        assert limit.wait(5.5) == pytest.approx(0.5)
        assert limit.reset_in(5.5) == pytest.approx(0.5)
        assert limit.until_full(5.5) == pytest.approx(0.9)
        assert (limit.remaining(6.0), limit.remaining(6.4)) == (1, 2)

    def test_rolling_is_the_sliding_window(self):
        assert Limit(100, 10, rolling=True).model == SLIDING_WINDOW


class TestTokenBucket:
    def test_a_full_bucket_allows_a_burst_then_refills_at_the_rate(self):
        limit = Limit(4, 1.0, model=TOKEN_BUCKET)
        assert let_through(limit, [0.0, 0.0, 0.0, 0.0, 0.0]) == [True] * 4 + [False]
        # One token back every 0.25 s.
        assert limit.wait(0.1) == pytest.approx(0.15)
        assert let_through(limit, [0.25, 0.3, 0.5]) == [True, False, True]

    def test_remaining_is_the_whole_tokens_and_reset_the_time_to_full(self):
        limit = Limit(10, 1.0)  # the default model
        let_through(limit, [1.0] * 10)
        assert limit.model == TOKEN_BUCKET
        assert (limit.remaining(1.35), limit.reset_in(1.35)) == (3, pytest.approx(0.65))


def test_an_unknown_model_is_refused():
    with pytest.raises(ValueError, match="fixed, sliding, bucket"):
        Limit(1, 1, model="leaky")


class FakeClock:
    def __init__(self, start=1000.0):
        self.now = start

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    """The emulators' monotonic clock, moved by the test."""
    fake = FakeClock()
    monkeypatch.setattr("crm_sandbox.base.time.monotonic", fake)
    return fake


def emulator(cls, model, requests, seconds):
    crm = cls(random.Random(1), threading.Lock())
    crm.set_primary_limit(requests, seconds)
    assert crm.set_limiter_model(model)
    return crm


def brevo_get(crm):
    return crm.dispatch(Request("GET", "/v3/contacts", "", {"api-key": API_KEY}))


def hubspot_get(crm):
    return crm.dispatch(Request("GET", "/crm/v3/objects/contacts/1", "", {"authorization": "Bearer " + ACCESS_TOKEN}))


class TestBrevoHeaders:
    @pytest.mark.parametrize(
        "model, reset_after_two",
        [(FIXED_WINDOW, "1"), (SLIDING_WINDOW, "1"), (TOKEN_BUCKET, "1")],
    )
    def test_limit_remaining_and_reset_follow_the_model(self, clock, model, reset_after_two):
        crm = emulator(BrevoEmulator, model, 3, 1.0)
        answers = [brevo_get(crm), brevo_get(crm)]
        headers = answers[-1].headers
        assert (headers["x-sib-ratelimit-limit"], headers["x-sib-ratelimit-remaining"]) == ("3", "1")
        assert headers["x-sib-ratelimit-reset"] == reset_after_two

    @pytest.mark.parametrize("model", [FIXED_WINDOW, SLIDING_WINDOW, TOKEN_BUCKET])
    def test_the_429_is_brevos_with_the_wait_in_whole_seconds(self, clock, model):
        crm = emulator(BrevoEmulator, model, 2, 5.0)
        clock.now = 1000.5  # half way through a fixed window of 5 s (1000 to 1005)
        brevo_get(crm), brevo_get(crm)
        clock.now = 1002.2
        refused = brevo_get(crm)
        assert refused.status == 429
        assert json.loads(refused.body) == {
            "code": "too_many_requests",
            "message": "The expected rate limit is exceeded.",
        }
        # fixed: until 1005 (2.8 s); sliding: until 1000.5 leaves (3.3 s); bucket: a token in 2.5 - 1.7 = 0.8 s.
        expected = {FIXED_WINDOW: "3", SLIDING_WINDOW: "4", TOKEN_BUCKET: "1"}[model]
        assert (refused.headers["x-sib-ratelimit-remaining"], refused.headers["x-sib-ratelimit-reset"]) == (
            "0",
            expected,
        )
        assert "Retry-After" not in refused.headers


class TestHubSpotHeaders:
    @pytest.mark.parametrize("model", [FIXED_WINDOW, SLIDING_WINDOW, TOKEN_BUCKET])
    def test_max_remaining_and_interval_follow_the_model(self, clock, model):
        crm = emulator(HubSpotEmulator, model, 5, 10.0)
        for _ in range(5):
            answer = hubspot_get(crm)
        headers = answer.headers
        assert (headers["X-HubSpot-RateLimit-Max"], headers["X-HubSpot-RateLimit-Remaining"]) == ("5", "0")
        assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
        refused = hubspot_get(crm)
        assert refused.status == 429 and json.loads(refused.body)["policyName"] == "TEN_SECONDLY_ROLLING"
        clock.now += 10
        assert hubspot_get(crm).headers["X-HubSpot-RateLimit-Remaining"] == "4"


class TestChoosingTheModel:
    def test_options_pick_a_model_per_crm_and_keep_the_vendor_default_elsewhere(self):
        options = SandboxOptions(limiters={"brevo": SLIDING_WINDOW, "hubspot": FIXED_WINDOW})
        with SandboxServer(port=0, options=options) as server:
            assert server.emulator("brevo").limits["second"].model == SLIDING_WINDOW
            assert server.emulator("hubspot").limits["window"].model == FIXED_WINDOW
            server.sandbox.reset()  # back to the start-up options, models included
            assert server.emulator("brevo").limits["second"].model == SLIDING_WINDOW
        with SandboxServer(port=0) as server:
            assert server.emulator("brevo").limits["second"].model == TOKEN_BUCKET
            assert server.emulator("hubspot").limits["window"].model == SLIDING_WINDOW

    def test_the_control_api_sets_a_model_with_or_without_new_numbers(self, sandbox, control):
        answer = control("POST", "/brevo/faults", json={"limiter": FIXED_WINDOW})
        assert answer.json()["limiter"] == FIXED_WINDOW
        assert sandbox.emulator("brevo").limits["second"].view() == {"requests": 10, "seconds": 1, "model": "fixed"}
        control("POST", "/brevo/faults", json={"rate_limit": {"requests": 50, "seconds": 1, "model": "sliding"}})
        assert sandbox.emulator("brevo").limits["second"].view() == {"requests": 50, "seconds": 1, "model": "sliding"}

    @pytest.mark.parametrize(
        "crm, body",
        [
            ("brevo", {"limiter": "leaky"}),
            ("mautic", {"limiter": "fixed"}),
            ("brevo", {"rate_limit": {"requests": 1, "seconds": 1, "model": "x"}}),
        ],
    )
    def test_the_control_api_refuses_an_unknown_model_or_a_crm_without_a_limit(self, control, crm, body):
        assert control("POST", "/%s/faults" % crm, json=body).status_code == 400

    def test_the_command_takes_limiters_and_jitter(self):
        parser = Command().create_parser("manage.py", "crm_sandbox")
        options = vars(parser.parse_args(["--limiter", "brevo=sliding", "--jitter-ms", "15"]))
        built = Command().sandbox_options(options)
        assert (built.limiters, built.jitter_ms) == ({"brevo": "sliding"}, 15)

    @pytest.mark.parametrize("spec", ["brevo=leaky", "mautic=fixed", "nope=sliding"])
    def test_the_command_refuses_a_bad_limiter(self, spec):
        from django.core.management.base import CommandError

        parser = Command().create_parser("manage.py", "crm_sandbox")
        with pytest.raises(CommandError, match="--limiter"):
            Command().sandbox_options(vars(parser.parse_args(["--limiter", spec])))
