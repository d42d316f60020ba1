"""GET /metrics: the bearer token, and every value against the database after real
engine runs (Brevo's API mocked with `responses`)."""

import hmac
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from contacts import selection
from contacts.models import AttemptOutcome, Contact, ContactSync, ProcessingStatus, SyncAttempt
from integrations.backends.brevo import BrevoBackend
from integrations.engine import RunResult, SyncEngine
from integrations.models import AttemptCount, CRMState
from integrations.push_histogram import observe
from integrations.ratelimit import SharedPacer
from integrations.tasks import prune_sync_attempts

from .conftest import in_threads

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-0123456789abcdef"
API = "https://api.brevo.com/v3"
DASHBOARD = Path(django_settings.BASE_DIR) / "deploy" / "grafana" / "crmsync.json"


@pytest.fixture
def token(settings, monkeypatch):
    monkeypatch.delenv("CRMSYNC_METRICS_TOKEN", raising=False)
    settings.CRMSYNC_METRICS_TOKEN = TOKEN
    return TOKEN


@pytest.fixture
def brevo(settings, token):
    settings.BREVO_API_KEY = "test-brevo-key-not-a-real-one"
    settings.BREVO_REQUESTS_PER_SECOND = 1000  # no pacing waits
    settings.BREVO_CONCURRENCY = 1  # the answers below go to the contacts in order
    return BrevoBackend


def scrape(client):
    """{(sample name, frozenset of labels): value} from an authorised scrape."""
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer %s" % TOKEN)
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples, name, **labels):
    return samples[name, frozenset(labels.items())]


def attempts(samples, crm):
    return {outcome: value(samples, "crmsync_attempts_total", crm=crm, outcome=outcome) for outcome in AttemptOutcome}


def orm_attempts(crm):
    return {outcome: SyncAttempt.objects.filter(crm=crm, outcome=outcome).count() for outcome in AttemptOutcome}


def queue(emails, crm="brevo"):
    Contact.objects.bulk_create(Contact(email=email) for email in emails)
    selection.select(Contact.objects.filter(email__in=emails), [crm])


def answer(crm_api, status, body=None, headers=None):
    crm_api.post(API + "/contacts", status=status, json=body or {}, headers=headers or {})


RATE_LIMITED = {"x-sib-ratelimit-limit": "10", "x-sib-ratelimit-remaining": "0", "x-sib-ratelimit-reset": "1"}


class TestToken:
    def test_off_without_a_token(self, client, settings, monkeypatch):
        monkeypatch.delenv("CRMSYNC_METRICS_TOKEN", raising=False)
        if hasattr(settings, "CRMSYNC_METRICS_TOKEN"):
            del settings.CRMSYNC_METRICS_TOKEN
        assert client.get("/metrics").status_code == 404
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404

    @pytest.mark.parametrize(
        "authorization",
        [None, "", "Bearer", "Bearer ", "Bearer wrong", "Bearer %s" % TOKEN[:-1], "Basic %s" % TOKEN, TOKEN],
    )
    def test_no_or_a_wrong_bearer_token_is_refused(self, client, token, authorization):
        headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
        response = client.get("/metrics", **headers)
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert b"crmsync_" not in response.content

    def test_the_right_token_gets_the_prometheus_text_format(self, client, token):
        response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer %s" % TOKEN)
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain; version=")
        assert "no-cache" in response["Cache-Control"]
        assert b"# TYPE crmsync_attempts_total counter" in response.content

    def test_the_scheme_is_case_insensitive_and_only_get_and_head_are_answered(self, client, token):
        assert client.get("/metrics", HTTP_AUTHORIZATION="bearer %s" % TOKEN).status_code == 200
        assert client.head("/metrics", HTTP_AUTHORIZATION="Bearer %s" % TOKEN).status_code == 200
        assert client.post("/metrics", HTTP_AUTHORIZATION="Bearer %s" % TOKEN).status_code == 405

    def test_the_token_is_compared_in_constant_time(self, client, token, monkeypatch):
        compared = []
        real = hmac.compare_digest

        def spy(given, expected):
            compared.append((given, expected))
            return real(given, expected)

        monkeypatch.setattr(hmac, "compare_digest", spy)
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer guess").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer %s" % TOKEN).status_code == 200
        assert compared == [(b"guess", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]

    def test_the_token_is_read_from_the_environment(self, client, settings, monkeypatch):
        if hasattr(settings, "CRMSYNC_METRICS_TOKEN"):
            del settings.CRMSYNC_METRICS_TOKEN
        monkeypatch.setenv("CRMSYNC_METRICS_TOKEN", "from-the-environment-token")
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer %s" % TOKEN).status_code == 401
        ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer from-the-environment-token")
        assert ok.status_code == 200


class TestAfterASync:
    def test_values_agree_with_the_database(self, client, brevo, crm_api, no_pacing_sleep):
        queue(["a@example.com", "b@example.com", "c@example.com", "d@example.com"])
        answer(crm_api, 429, {"code": "too_many_requests"}, RATE_LIMITED)  # a: held, sent again
        answer(crm_api, 201, {"id": 1})
        answer(crm_api, 201, {"id": 2})
        answer(crm_api, 400, {"code": "invalid_parameter", "message": "Invalid phone number"})
        answer(crm_api, 500, {"message": "oops"})
        first = SyncEngine(BrevoBackend()).run()
        queue(["e@example.com", "f@example.com"])
        answer(crm_api, 429, {"code": "too_many_requests"}, RATE_LIMITED)  # every try: they wait
        second = SyncEngine(BrevoBackend()).run()

        samples = scrape(client)
        assert first.accepted == 2 and (second.waited, second.accepted) == (2, 0)
        assert attempts(samples, "brevo") == orm_attempts("brevo")
        assert set(orm_attempts("brevo").values()) != {0} and min(orm_attempts("brevo").values()) >= 1
        assert value(samples, "crmsync_requests_total", crm="brevo") == len(crm_api.calls)
        rate_limited = [call for call in crm_api.calls if call.response.status_code == 429]
        assert value(samples, "crmsync_rate_limited_responses_total", crm="brevo") == len(rate_limited) == 5
        in_queue = ContactSync.objects.filter(
            crm="brevo", processing_status__in=[ProcessingStatus.QUEUED, ProcessingStatus.PROCESSING]
        )
        assert value(samples, "crmsync_queue_depth", crm="brevo") == in_queue.count() == 3
        state = CRMState.objects.get(crm="brevo")
        assert value(samples, "crmsync_last_success_timestamp_seconds", crm="brevo") == pytest.approx(
            state.last_success_at.timestamp()
        )
        assert value(samples, "crmsync_last_run_timestamp_seconds", crm="brevo") == pytest.approx(
            state.last_run_at.timestamp()
        )
        self.assert_push_histogram(samples)

    @staticmethod
    def assert_push_histogram(samples):
        # Each pushed batch wrote its attempts with one time and its push's duration.
        batches = SyncAttempt.objects.filter(crm="brevo").values("attempted_at", "duration_ms").order_by().distinct()
        assert value(samples, "crmsync_push_duration_seconds_count", crm="brevo") == len(batches) == 2
        assert value(samples, "crmsync_push_duration_seconds_sum", crm="brevo") == pytest.approx(
            sum(batch["duration_ms"] for batch in batches) / 1000, abs=0.002
        )
        assert value(samples, "crmsync_push_duration_seconds_bucket", crm="brevo", le="+Inf") == 2

    def test_a_crm_that_never_ran_reports_zeros(self, client, brevo):
        samples = scrape(client)
        assert attempts(samples, "brevo") == dict.fromkeys(AttemptOutcome, 0)
        assert value(samples, "crmsync_requests_total", crm="brevo") == 0
        assert value(samples, "crmsync_push_duration_seconds_count", crm="brevo") == 0
        assert ("crmsync_last_success_timestamp_seconds", frozenset({("crm", "brevo")})) not in samples


class TestTotalsNeverGoDown:
    def test_pruning_old_attempts_does_not_lower_the_totals(self, client, brevo, make_contact, settings):
        settings.CRMSYNC_ATTEMPT_RETENTION_DAYS = 7
        contact, now = make_contact(), timezone.now()
        SyncAttempt.objects.bulk_create(
            SyncAttempt(contact=contact, crm="brevo", attempted_at=at, outcome=outcome)
            for at, outcome in [(now - timedelta(days=9), AttemptOutcome.ACCEPTED)] * 3
            + [(now - timedelta(days=8), AttemptOutcome.FAILED), (now, AttemptOutcome.ACCEPTED)]
        )
        before = attempts(scrape(client), "brevo")
        assert prune_sync_attempts() == 4
        assert AttemptCount.objects.filter(crm="brevo").aggregate(n=Sum("number"))["n"] == 1
        assert attempts(scrape(client), "brevo") == before
        assert before[AttemptOutcome.ACCEPTED] == 4 and before[AttemptOutcome.FAILED] == 1

    def test_deleting_contacts_does_not_lower_the_totals(self, client, brevo, make_contacts):
        contacts = list(make_contacts(3))
        SyncAttempt.objects.bulk_create(
            SyncAttempt(contact=contact, crm="brevo", attempted_at=timezone.now(), outcome=AttemptOutcome.RETRY)
            for contact in contacts
            for _ in range(2)
        )
        before = attempts(scrape(client), "brevo")
        Contact.objects.filter(pk__in=[c.pk for c in contacts[:2]]).delete()
        contacts[2].delete()
        assert SyncAttempt.objects.count() == 0
        assert attempts(scrape(client), "brevo") == before
        assert before[AttemptOutcome.RETRY] == 6

    def test_a_delete_that_fails_counts_nothing(self, client, brevo, make_contact, monkeypatch):
        contact = make_contact()
        SyncAttempt.objects.create(contact=contact, crm="brevo", attempted_at=timezone.now(), outcome="accepted")

        def refuse(*args, **kwargs):
            raise RuntimeError("the delete failed")

        monkeypatch.setattr("django.db.models.deletion.Collector.delete", refuse)
        with pytest.raises(RuntimeError):
            Contact.objects.filter(pk=contact.pk).delete()
        monkeypatch.undo()
        assert value(scrape(client), "crmsync_attempts_total", crm="brevo", outcome="accepted") == 1


class TestState:
    def test_queue_pauses_and_breaker(self, client, brevo, make_contacts):
        contacts = list(make_contacts(3))
        now = timezone.now()
        ContactSync.objects.bulk_create(
            ContactSync(
                contact=contact,
                crm="brevo",
                sync_status="selected",
                processing_status=ProcessingStatus.QUEUED,
                next_attempt_at=now + due_in,
            )
            for contact, due_in in zip(contacts, [-timedelta(minutes=10), -timedelta(minutes=1), timedelta(hours=1)])
        )
        CRMState.objects.create(
            crm="brevo",
            paused_at=now,
            paused_by="staff@example.com",
            next_probe_at=now + timedelta(seconds=30),
            failing_since=now,
        )
        samples = scrape(client)
        assert (
            value(samples, "crmsync_queue_depth", crm="brevo"),
            value(samples, "crmsync_queue_due", crm="brevo"),
        ) == (3, 2)
        assert 600 <= value(samples, "crmsync_oldest_due_age_seconds", crm="brevo") < 700
        assert value(samples, "crmsync_paused", crm="brevo", by="staff") == 1
        assert value(samples, "crmsync_paused", crm="brevo", by="crm") == 0
        assert value(samples, "crmsync_breaker_open", crm="brevo") == 1

        CRMState.objects.filter(crm="brevo").update(
            paused_at=None, paused_until=now + timedelta(minutes=5), next_probe_at=None
        )
        samples = scrape(client)
        assert value(samples, "crmsync_paused", crm="brevo", by="staff") == 0
        assert value(samples, "crmsync_paused", crm="brevo", by="crm") == 1
        assert value(samples, "crmsync_breaker_open", crm="brevo") == 0

    def test_a_fixed_number_of_queries_whatever_the_crms(self, client, brevo, settings, scripted_crm):
        from django.db import connection

        with CaptureQueriesContext(connection) as one_more:
            scrape(client)
        settings.HUBSPOT_API_KEY = "test-hubspot-token-not-a-real-one"
        settings.OTHER_TOKEN = "other-token-0000000000"
        with CaptureQueriesContext(connection) as more:
            samples = scrape(client)
        assert {"hubspot", "other"} <= {dict(labels).get("crm") for _name, labels in samples}
        assert len(more) == len(one_more) == 4

    def test_labels_hold_crm_names_and_outcomes_only(self, client, brevo, settings):
        labels = {key for _name, pairs in scrape(client) for key, _v in pairs}
        assert labels <= {"crm", "outcome", "by", "le"}


class TestDashboard:
    def test_every_expression_names_a_metric_metrics_exposes(self, client, brevo):
        CRMState.objects.create(crm="brevo", last_run_at=timezone.now(), last_success_at=timezone.now())
        exposed = {name for name, _labels in scrape(client)}
        dashboard = json.loads(DASHBOARD.read_text())
        expressions = list(_expressions(dashboard))
        assert len(expressions) >= 10
        named = set()
        for expression in expressions:
            names = set(re.findall(r"\bcrmsync_[a-z_]+\b", expression))
            assert names, expression
            named |= names
        assert named - exposed == set()
        # Every metric family has a panel.
        families = {re.sub(r"_(bucket|count|sum)$", "", name) for name in exposed}
        assert {re.sub(r"_(bucket|count|sum)$", "", name) for name in named} == families


def _expressions(dashboard):
    """Every PromQL expression: the panels' targets and the query variables."""
    for panel in dashboard["panels"]:
        yield from (target["expr"] for target in panel["targets"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield variable["query"]


class TestSharedAcrossWorkers:
    """Workers with their own connections: nothing counted is lost (PostgreSQL)."""

    def test_request_counts_from_many_workers_add_up(self, on_postgres, transactional_db):
        def worker(index):
            pacer = SharedPacer("paced", 10_000)
            for _ in range(20):
                pacer.tally.note_request()
                if index % 2:
                    pacer.tally.note_rate_limited()
                pacer.reserve(1)

        in_threads(4, worker)
        state = CRMState.objects.get(crm="paced")
        # Each reservation carries the requests noted before it into its update.
        assert (state.requests_sent, state.rate_limited_responses) == (4 * 20, 2 * 20)

    def test_runs_ending_side_by_side_all_add_their_push_times(self, on_postgres, transactional_db, brevo):
        def worker(index):
            result = RunResult("brevo")
            observe(result.push_durations, 0.2 * (index + 1))
            SyncEngine(BrevoBackend())._note_run(result)

        in_threads(8, worker)
        histogram = CRMState.objects.get(crm="brevo").push_durations
        assert sum(histogram["buckets"].values()) == 8
        assert histogram["sum"] == pytest.approx(sum(0.2 * (i + 1) for i in range(8)))
