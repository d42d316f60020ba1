"""Each alert is sent once, and its recovery once, when several workers (or web
processes) meet the condition at the same moment: threads with their own
PostgreSQL connections, committing for real."""

import json
import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from integrations import alerts
from integrations.backends.base import Outcome
from integrations.engine import SyncEngine
from integrations.exceptions import CRMUnavailable, RetryableError
from integrations.models import AlertIncident, AlertKind, CRMState
from integrations.schedules import ensure_schedules

from .conftest import UpperBound, in_threads
from .doubles import ScriptedBackend

pytestmark = [pytest.mark.django_db(transaction=True)]

WORKERS = 4
HOOK = "https://hooks.chat.test/services/T0001/B0002/hook-token-4711"


@pytest.fixture
def alerting(on_postgres, settings, scripted_crm, crm_api, mailoutbox):
    settings.ADMINS = [("Ops", "ops@crmsync.test")]
    settings.CRMSYNC_ALERT_WEBHOOK_URL = HOOK
    settings.EMAIL_SUBJECT_PREFIX = "[crmsync] "
    crm_api.add("POST", HOOK, status=200, body="ok")
    return crm_api


def subjects():
    return sorted(message.subject for message in mail.outbox)


def webhook_subjects(crm_api):
    return sorted(json.loads(call.request.body)["text"].split("\n")[0] for call in crm_api.calls)


def workers(respond, policy, clock, batch_size=10):
    backend = ScriptedBackend(respond)

    def work(index):
        SyncEngine(backend, policy(batch_size=batch_size), clock=clock, rng=UpperBound()).run()

    in_threads(WORKERS, work)


def accept_all(items):
    return [Outcome.accepted(item) for item in items]


def all_at_once():
    """A respond() step that holds each worker until every one is in the same place."""
    barrier = threading.Barrier(WORKERS, timeout=30)
    return barrier.wait


def test_opening_and_closing_one_incident_from_many_threads(alerting):
    now = timezone.now()
    opened, closed = [], []
    meet = all_at_once()

    def open_it(index):
        meet()
        opened.append(alerts.open_incident("scripted", AlertKind.PAUSED, alerts.Alert("down", "body"), now=now))

    def close_it(index):
        meet()
        closed.append(
            alerts.resolve_incident("scripted", AlertKind.PAUSED, lambda i, n: alerts.Alert("up", "body"), now=now)
        )

    in_threads(WORKERS, open_it)
    in_threads(WORKERS, close_it)
    assert (sorted(opened), sorted(closed)) == ([False] * 3 + [True], [False] * 3 + [True])
    assert subjects() == ["[crmsync] down", "[crmsync] up"]
    assert AlertIncident.objects.get().resolved_at == now


def test_a_crm_refusing_its_credentials_to_every_worker_alerts_once_and_recovers_once(alerting, queued, policy, clock):
    queued(200)
    meet = all_at_once()

    def reject(items):
        meet()  # every worker has a batch in flight when the CRM refuses
        raise CRMUnavailable("Scripted CRM rejected the API key; check SCRIPTED_API_KEY.", pause_seconds=600)

    workers(reject, policy, clock)
    assert subjects() == ["[crmsync] Scripted CRM paused: credentials or configuration"]

    clock.advance(minutes=11)
    workers(accept_all, policy, clock)
    assert subjects() == [
        "[crmsync] Scripted CRM paused: credentials or configuration",
        "[crmsync] Scripted CRM syncs again",
    ]
    assert webhook_subjects(alerting) == subjects()


def test_the_breaker_opened_by_every_worker_alerts_once_and_recovers_once(alerting, queued, policy, clock):
    queued(400)
    down = threading.Event()
    down.set()

    def respond(items):
        if down.is_set():
            raise RetryableError("Scripted CRM answered 503", status_code=503)
        return accept_all(items)

    workers(respond, policy, clock)
    assert subjects() == ["[crmsync] Scripted CRM circuit breaker open"]
    assert CRMState.objects.get(crm="scripted").next_probe_at is not None

    down.clear()
    clock.advance(minutes=10)
    workers(respond, policy, clock)
    assert subjects() == [
        "[crmsync] Scripted CRM circuit breaker closed",
        "[crmsync] Scripted CRM circuit breaker open",
    ]
    assert webhook_subjects(alerting) == subjects()


def test_failed_contacts_above_the_rate_on_every_worker_alert_once_and_recover_once(alerting, queued, policy, clock):
    queued(400)

    def refuse(items):
        return [Outcome.permanent(item, "Scripted CRM refused it: invalid phone", http_status=400) for item in items]

    workers(refuse, policy, clock, batch_size=25)
    assert subjects() == ["[crmsync] Scripted CRM: 100% of contacts failed"]

    clock.advance(minutes=31)
    queued(400, prefix="later")
    workers(accept_all, policy, clock, batch_size=25)
    assert subjects() == [
        "[crmsync] Scripted CRM: 100% of contacts failed",
        "[crmsync] Scripted CRM: failed contacts back to 0%",
    ]
    assert AlertIncident.objects.filter(kind=AlertKind.ERROR_RATE, resolved_at__isnull=False).count() == 1


def test_a_stale_schedule_seen_by_every_web_process_alerts_once_and_recovers_once(alerting):
    ensure_schedules()
    CRMState.objects.create(crm="scripted", last_run_at=timezone.now() - timedelta(minutes=16))
    meet = all_at_once()
    statuses = []

    def probe(index):
        meet()
        statuses.append(Client().get("/healthz").status_code)

    in_threads(WORKERS, probe)
    alerts.wait_for_background_sends()
    assert statuses == [503] * WORKERS
    assert subjects() == ["[crmsync] Scripted CRM sync schedule stopped"]

    CRMState.objects.filter(crm="scripted").update(last_run_at=timezone.now())
    in_threads(WORKERS, probe)
    alerts.wait_for_background_sends()
    assert subjects() == [
        "[crmsync] Scripted CRM sync schedule runs again",
        "[crmsync] Scripted CRM sync schedule stopped",
    ]
    assert webhook_subjects(alerting) == subjects()
