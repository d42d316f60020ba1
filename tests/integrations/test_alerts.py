"""Alerts to staff (integrations.alerts): one per incident, a recovery notice when
it ends, by mail to ADMINS and by a Slack-compatible webhook; never contact data
or a secret. Several workers at once: test_alerts_concurrency.py (PostgreSQL)."""

import json
from datetime import UTC, datetime, timedelta

import pytest
import requests
from django.core import mail
from django.core.management import call_command
from django.utils import timezone

from contacts.models import AttemptOutcome, SyncAttempt
from integrations import alerts
from integrations.backends.base import Outcome
from integrations.checks import check_alert_settings
from integrations.engine import SyncEngine
from integrations.exceptions import CRMUnavailable, RetryableError
from integrations.models import AlertIncident, AlertKind, CRMState
from integrations.schedules import ensure_schedules

from .conftest import UpperBound
from .doubles import ScriptedBackend

pytestmark = pytest.mark.django_db

HOOK = "https://hooks.chat.test/services/T0001/B0002/hook-token-4711"
ADMIN = ("Ops", "ops@crmsync.test")
KEY = "scripted-secret-key"


@pytest.fixture
def alerting(settings, scripted_crm, crm_api, mailoutbox):
    """ADMINS and the webhook set; the webhook answers 200 unless a test says otherwise."""
    settings.ADMINS = [ADMIN]
    settings.CRMSYNC_ALERT_WEBHOOK_URL = HOOK
    settings.EMAIL_SUBJECT_PREFIX = "[crmsync] "
    crm_api.add("POST", HOOK, status=200, body="ok")
    return crm_api


def posted(crm_api):
    return [json.loads(call.request.body) for call in crm_api.calls if call.request.url == HOOK]


def subjects():
    return [message.subject for message in mail.outbox]


def accept_all(items):
    return [Outcome.accepted(item, external_id="ext-%d" % item.key) for item in items]


def refuse_all(items):
    return [Outcome.permanent(item, "Scripted CRM refused it: invalid phone", http_status=400) for item in items]


def engine(respond, policy, clock, **changes):
    return SyncEngine(ScriptedBackend(respond), policy(**changes), clock=clock, rng=UpperBound())


def test_the_webhook_body_is_slack_compatible_text(alerting, django_capture_on_commit_callbacks):
    now = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)
    with django_capture_on_commit_callbacks(execute=True):
        assert alerts.crm_paused("scripted", "Scripted CRM rejected the API key; check SCRIPTED_API_KEY.", now)
    assert posted(alerting) == [
        {
            "text": "[crmsync] Scripted CRM paused: credentials or configuration\n"
            "Every worker stopped sending to Scripted CRM at 2026-12-05 09:30 UTC: Scripted CRM rejected the "
            "API key; check SCRIPTED_API_KEY.\nA notice follows once it accepts contacts again."
        }
    ]
    assert alerting.calls[0].request.headers["Content-Type"] == "application/json"
    [message] = mail.outbox
    assert message.to == ["ops@crmsync.test"]
    assert message.subject == "[crmsync] Scripted CRM paused: credentials or configuration"
    assert message.body == posted(alerting)[0]["text"].split("\n", 1)[1]


def test_without_a_webhook_url_only_the_mail_goes(alerting, settings, django_capture_on_commit_callbacks):
    settings.CRMSYNC_ALERT_WEBHOOK_URL = ""
    with django_capture_on_commit_callbacks(execute=True):
        alerts.crm_paused("scripted", "Scripted CRM rejected the API key.", timezone.now())
    assert (len(mail.outbox), posted(alerting)) == (1, [])


def test_an_incident_rolled_back_is_never_announced(alerting, django_capture_on_commit_callbacks):
    from django.db import transaction

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        alerts.crm_paused("scripted", "Scripted CRM rejected the API key.", timezone.now())
        raise RuntimeError("the caller's transaction fails")
    assert (callbacks, mail.outbox, AlertIncident.objects.count()) == ([], [], 0)


class TestPausedForCredentials:
    def test_alerted_once_while_paused_and_recovered_when_the_crm_accepts_again(
        self, alerting, queued, policy, clock, django_capture_on_commit_callbacks
    ):
        queued(30)
        refused = CRMUnavailable("Scripted CRM rejected the API key; check SCRIPTED_API_KEY.", pause_seconds=600)

        def reject(items):
            raise refused

        with django_capture_on_commit_callbacks(execute=True):
            engine(reject, policy, clock, batch_size=10).run()
            clock.advance(minutes=11)
            engine(reject, policy, clock, batch_size=10).run()
        assert subjects() == ["[crmsync] Scripted CRM paused: credentials or configuration"]
        assert AlertIncident.objects.get().kind == AlertKind.PAUSED

        clock.advance(minutes=11)
        with django_capture_on_commit_callbacks(execute=True):
            engine(accept_all, policy, clock, batch_size=10).run()
            engine(accept_all, policy, clock, batch_size=10).run()
        assert subjects()[1:] == ["[crmsync] Scripted CRM syncs again"]
        assert "after 22 minutes paused" in mail.outbox[1].body  # since the first refusal
        assert [p["text"].split("\n")[0] for p in posted(alerting)] == [
            "[crmsync] Scripted CRM paused: credentials or configuration",
            "[crmsync] Scripted CRM syncs again",
        ]
        assert AlertIncident.objects.get().resolved_at == clock.now

    def test_a_rate_limit_is_no_alert(self, alerting, queued, policy, clock, django_capture_on_commit_callbacks):
        from integrations.exceptions import RateLimited

        queued(10)

        def limited(items):
            raise RateLimited("Scripted CRM: too many requests", retry_after=60)

        with django_capture_on_commit_callbacks(execute=True):
            engine(limited, policy, clock).run()
        assert (mail.outbox, AlertIncident.objects.count()) == ([], 0)

    def test_a_staff_pause_is_no_alert(self, alerting, queued, policy, clock, django_capture_on_commit_callbacks):
        queued(10)
        CRMState.objects.pause_by_staff("scripted", by="alice")
        with django_capture_on_commit_callbacks(execute=True):
            engine(accept_all, policy, clock).run()
        assert mail.outbox == []


@pytest.mark.logs_secrets_on_purpose(KEY)
def test_no_alert_holds_contact_data_or_a_secret(alerting, queued, policy, clock, django_capture_on_commit_callbacks):
    """A run where the contacts and the key are known: the CRM even quotes both in
    its refusal, and neither reaches any alert, nor the webhook's address."""
    contacts = queued(60)
    emails = [c.email for c in contacts] + [c.email.upper() for c in contacts]

    def leaky(items):
        raise CRMUnavailable("Scripted CRM: key %s refused for %s" % (KEY, items[0].contact.email), pause_seconds=60)

    with django_capture_on_commit_callbacks(execute=True):
        engine(leaky, policy, clock, batch_size=10).run()
        clock.advance(minutes=2)
        engine(refuse_all, policy, clock, batch_size=60).run()  # 60 contacts in Error: the rate alert
        clock.advance(minutes=31)
        engine(accept_all, policy, clock, batch_size=60).run()
    texts = [m.subject + m.body for m in mail.outbox] + [p["text"] for p in posted(alerting)]
    texts += list(AlertIncident.objects.values_list("summary", flat=True))
    assert len(mail.outbox) == 3, subjects()
    assert [t for t in texts for secret in [KEY, HOOK, "hook-token-4711", *emails] if secret in t] == []
    assert "Scripted CRM: key [Filtered] refused for [email removed]" in mail.outbox[0].body


class TestCircuitBreaker:
    def test_opening_alerts_once_and_closing_sends_the_recovery(
        self, alerting, queued, policy, clock, django_capture_on_commit_callbacks
    ):
        queued(100)
        down = {"now": True}

        def respond(items):
            if down["now"]:
                raise RetryableError("Scripted CRM answered 503", status_code=503)
            return accept_all(items)

        sync = engine(respond, policy, clock, batch_size=10)
        with django_capture_on_commit_callbacks(execute=True):
            sync.run()
            for _ in range(3):  # failing probes: the same incident
                clock.advance(seconds=301)
                sync.run()
        assert subjects() == ["[crmsync] Scripted CRM circuit breaker open"]
        assert mail.outbox[0].body.startswith("3 batches in a row failed on Scripted CRM's side since ")

        down["now"] = False
        clock.advance(seconds=301)
        with django_capture_on_commit_callbacks(execute=True):
            sync.run()
        assert subjects()[1:] == ["[crmsync] Scripted CRM circuit breaker closed"]
        assert CRMState.objects.get(crm="scripted").next_probe_at is None
        assert AlertIncident.objects.get(kind=AlertKind.BREAKER).resolved_at is not None


class TestErrorRate:
    def test_alerts_above_the_rate_once_and_recovers_below_it(
        self, alerting, queued, policy, clock, django_capture_on_commit_callbacks
    ):
        queued(40, prefix="ok")
        queued(60, prefix="bad")

        def respond(items):
            return [
                Outcome.permanent(i, "Scripted CRM refused it", http_status=400)
                if i.contact.email.startswith("bad")
                else Outcome.accepted(i)
                for i in items
            ]

        with django_capture_on_commit_callbacks(execute=True):
            engine(respond, policy, clock, batch_size=25).run()
            engine(respond, policy, clock, batch_size=25).run()  # still above: no second alert
        assert subjects() == ["[crmsync] Scripted CRM: 60% of contacts failed"]
        assert mail.outbox[0].body.startswith(
            "60 of the 100 contacts tried on Scripted CRM in the last 15 minutes failed (60%; the alert is above 20%"
        )

        clock.advance(minutes=31)
        queued(50, prefix="later")
        with django_capture_on_commit_callbacks(execute=True):
            engine(accept_all, policy, clock, batch_size=25).run()
        assert subjects()[1:] == ["[crmsync] Scripted CRM: failed contacts back to 0%"]

    def test_fewer_than_fifty_tried_is_no_alert(
        self, alerting, queued, policy, clock, django_capture_on_commit_callbacks
    ):
        queued(49)
        with django_capture_on_commit_callbacks(execute=True):
            engine(refuse_all, policy, clock).run()
        assert mail.outbox == []

    def test_the_rate_is_the_setting(
        self, alerting, settings, queued, policy, clock, django_capture_on_commit_callbacks
    ):
        settings.CRMSYNC_ALERT_ERROR_RATE = "0.7"
        queued(40, prefix="ok")
        queued(60, prefix="bad")

        def respond(items):
            return [
                Outcome.permanent(i, "refused") if i.contact.email.startswith("bad") else Outcome.accepted(i)
                for i in items
            ]

        with django_capture_on_commit_callbacks(execute=True):
            engine(respond, policy, clock, batch_size=100).run()
        assert mail.outbox == []

    def test_contacts_that_waited_are_not_counted_as_tried(self, make_contacts):
        now = timezone.now()
        rows = [(c, AttemptOutcome.WAITED) for c in make_contacts(100)] + [
            (c, AttemptOutcome.FAILED) for c in make_contacts(10)
        ]
        SyncAttempt.objects.bulk_create(
            SyncAttempt(contact=c, crm="scripted", outcome=o, attempted_at=now) for c, o in rows
        )
        assert alerts.failure_counts("scripted", now) == (10, 10)

    def test_the_previous_quarter_hour_counts_for_its_share_still_inside_the_window(self, make_contacts):
        quarter = alerts._quarter_start(timezone.now())
        now = quarter + timedelta(minutes=5)
        earlier = quarter - timedelta(minutes=1)  # in the previous quarter hour
        SyncAttempt.objects.bulk_create(
            SyncAttempt(contact=c, crm="scripted", outcome=AttemptOutcome.FAILED, attempted_at=earlier)
            for c in make_contacts(90)
        )
        SyncAttempt.objects.bulk_create(
            SyncAttempt(contact=c, crm="scripted", outcome=AttemptOutcome.ACCEPTED, attempted_at=now)
            for c in make_contacts(30)
        )
        # Ten of its fifteen minutes are inside the window: two thirds of 90.
        assert alerts.failure_counts("scripted", now) == (90, 60)
        assert alerts.failure_counts("scripted", quarter + timedelta(minutes=30)) == (0, 0)


class TestStaleSchedule:
    def stale(self, **ago):
        ensure_schedules()
        CRMState.objects.update_or_create(crm="scripted", defaults={"last_run_at": timezone.now() - timedelta(**ago)})

    def test_healthz_alerts_once_and_recovers_once(self, alerting, client, django_capture_on_commit_callbacks):
        self.stale(minutes=16)
        with django_capture_on_commit_callbacks(execute=True):
            responses = [client.get("/healthz") for _ in range(3)]
        alerts.wait_for_background_sends()
        assert [r.status_code for r in responses] == [503, 503, 503]
        assert subjects() == ["[crmsync] Scripted CRM sync schedule stopped"]
        assert "has not run for 3 of its intervals" in mail.outbox[0].body

        CRMState.objects.filter(crm="scripted").update(last_run_at=timezone.now())
        with django_capture_on_commit_callbacks(execute=True):
            responses = [client.get("/healthz") for _ in range(3)]
        alerts.wait_for_background_sends()
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert subjects()[1:] == ["[crmsync] Scripted CRM sync schedule runs again"]
        assert len(posted(alerting)) == 2

    def test_a_crm_that_never_ran_is_alerted_once(self, alerting, client, django_capture_on_commit_callbacks):
        from django_q.models import Schedule

        ensure_schedules()
        Schedule.objects.filter(name="crmsync:scripted").update(next_run=timezone.now() - timedelta(minutes=16))
        with django_capture_on_commit_callbacks(execute=True):
            for _ in range(3):
                client.get("/healthz")
        alerts.wait_for_background_sends()
        assert "last run: never" in mail.outbox[0].body
        assert len(mail.outbox) == 1

    def test_while_stale_with_an_alert_open_healthz_asks_no_more_queries(self, alerting, client):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        self.stale(minutes=16)
        client.get("/healthz")
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/healthz").status_code == 503
        assert len(queries) <= 4


class TestFailures:
    def test_a_webhook_down_breaks_neither_the_engine_nor_healthz(
        self, settings, scripted_crm, crm_api, queued, policy, clock, client, caplog, django_capture_on_commit_callbacks
    ):
        settings.CRMSYNC_ALERT_WEBHOOK_URL = HOOK
        crm_api.add("POST", HOOK, body=requests.ConnectionError("refused for %s" % HOOK))
        queued(30)

        def reject(items):
            raise CRMUnavailable("Scripted CRM rejected the API key.", pause_seconds=60)

        with django_capture_on_commit_callbacks(execute=True):
            result = engine(reject, policy, clock, batch_size=10).run()
        assert result.claimed == 10 and result.paused_until
        ensure_schedules()
        CRMState.objects.filter(crm="scripted").update(last_run_at=timezone.now() - timedelta(minutes=16))
        with django_capture_on_commit_callbacks(execute=True):
            assert client.get("/healthz").status_code == 503
        alerts.wait_for_background_sends()
        failures = [r.getMessage() for r in caplog.records if "webhook could not be reached" in r.getMessage()]
        assert len(failures) == 2
        assert [m for m in failures if "hook-token-4711" in m or "hooks.chat.test" in m] == []

    def test_a_webhook_refusal_is_logged_with_its_status(
        self, alerting, crm_api, caplog, django_capture_on_commit_callbacks
    ):
        crm_api.replace("POST", HOOK, status=404, body="no_service")
        with django_capture_on_commit_callbacks(execute=True):
            alerts.crm_paused("scripted", "Scripted CRM rejected the API key.", timezone.now())
        assert "the webhook answered HTTP 404" in caplog.text
        assert len(mail.outbox) == 1

    def test_a_mail_server_down_does_not_stop_the_webhook_or_the_engine(
        self, alerting, settings, queued, policy, clock, django_capture_on_commit_callbacks
    ):
        settings.EMAIL_BACKEND = "tests.integrations.test_alerts.RefusingMailBackend"
        queued(10)

        def reject(items):
            raise CRMUnavailable("Scripted CRM rejected the API key.", pause_seconds=60)

        with django_capture_on_commit_callbacks(execute=True):
            assert engine(reject, policy, clock).run().claimed == 10
        assert len(posted(alerting)) == 1


class RefusingMailBackend:
    def __init__(self, **kwargs):
        pass

    def send_messages(self, messages):
        raise ConnectionRefusedError("smtp.example.test:587 refused")


class TestSettings:
    def test_an_invalid_rate_is_reported(self, settings):
        settings.CRMSYNC_ALERT_ERROR_RATE = "1.5"
        [error] = check_alert_settings()
        assert error.id == "integrations.E004"
        assert "CRMSYNC_ALERT_ERROR_RATE must be a fraction from 0 to 1" in error.msg

    def test_a_webhook_that_is_no_web_address_is_reported_without_showing_it(self, settings):
        settings.CRMSYNC_ALERT_WEBHOOK_URL = "hooks.chat.test/services/T0001/hook-token-4711"
        [error] = check_alert_settings()
        assert error.id == "integrations.E005" and "hook-token-4711" not in error.msg + error.hint

    def test_valid_settings_are_quiet(self, settings):
        settings.CRMSYNC_ALERT_ERROR_RATE = "0.05"
        settings.CRMSYNC_ALERT_WEBHOOK_URL = HOOK
        assert check_alert_settings() == []

    def test_email_url_is_read_as_django_environ_reads_it(self):
        import environ

        config = environ.Env.email_url_config("smtp+tls://alerts:pw@smtp.example.test:587")
        assert (config["EMAIL_HOST"], config["EMAIL_PORT"], config["EMAIL_USE_TLS"]) == ("smtp.example.test", 587, True)


def test_the_admin_lists_incidents_read_only(admin_client, scripted_crm):
    incident = AlertIncident.objects.create(crm="scripted", kind=AlertKind.BREAKER, summary="Scripted CRM breaker")
    listing = admin_client.get("/admin/integrations/alertincident/")
    assert listing.status_code == 200 and b"Circuit breaker open" in listing.content
    page = admin_client.get("/admin/integrations/alertincident/%d/change/" % incident.pk)
    assert page.status_code == 200 and b'name="summary"' not in page.content
    assert admin_client.get("/admin/integrations/alertincident/add/").status_code == 403


def test_only_one_incident_of_a_kind_is_open_per_crm(scripted_crm):
    from django.db import IntegrityError, transaction

    AlertIncident.objects.create(crm="scripted", kind=AlertKind.PAUSED, resolved_at=timezone.now())
    AlertIncident.objects.create(crm="scripted", kind=AlertKind.PAUSED)
    AlertIncident.objects.create(crm="other", kind=AlertKind.PAUSED)
    with pytest.raises(IntegrityError), transaction.atomic():
        AlertIncident.objects.create(crm="scripted", kind=AlertKind.PAUSED)
    call_command("check")
