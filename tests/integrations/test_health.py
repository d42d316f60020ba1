from datetime import timedelta

import pytest
from django.db import OperationalError, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import Schedule

from contacts.models import ContactSync, ProcessingStatus, SyncStatus
from integrations.models import CRMState
from integrations.registry import enabled_backend_classes
from integrations.schedules import ensure_schedules

pytestmark = pytest.mark.django_db

QUIET = {
    "queue_depth": 0,
    "oldest_due_seconds": None,
    "last_run_at": None,
    "last_success_at": None,
    "paused": False,
    "failing_since": None,
    "next_probe_at": None,
    "schedule": "none",
}


def healthz(client):
    response = client.get("/healthz")
    return response, response.json()


def sync_rows(contacts, crm="scripted", **fields):
    ContactSync.objects.bulk_create(ContactSync(contact=contact, crm=crm, **fields) for contact in contacts)


def queued(due_in=timedelta(0)):
    return {
        "sync_status": SyncStatus.SELECTED,
        "processing_status": ProcessingStatus.QUEUED,
        "next_attempt_at": timezone.now() + due_in,
    }


class TestShape:
    def test_an_empty_database_is_healthy_and_no_login_is_needed(self, client, scripted_crm):
        response, body = healthz(client)
        assert response.status_code == 200
        assert response["Content-Type"] == "application/json"
        assert "no-cache" in response["Cache-Control"]
        assert (body["status"], body["database"], body["problems"]) == ("ok", "ok", [])
        assert body["crms"]["scripted"] == QUIET
        assert set(body["crms"]) == {cls.name for cls in enabled_backend_classes()}

    def test_a_crm_without_credentials_is_not_listed(self, client, scripted_crm):
        assert "other" not in healthz(client)[1]["crms"]

    def test_head_is_answered_and_post_refused(self, client, scripted_crm):
        assert client.head("/healthz").status_code == 200
        assert client.post("/healthz").status_code == 405

    def test_queue_depth_counts_queued_and_processing_rows_only(self, client, scripted_crm, make_contacts):
        contacts = list(make_contacts(9))
        sync_rows(contacts[:2], **queued(due_in=-timedelta(minutes=10)))
        sync_rows(contacts[2:3], **queued(due_in=timedelta(hours=1)))
        sync_rows(contacts[3:4], processing_status=ProcessingStatus.PROCESSING)
        sync_rows(contacts[4:7], sync_status=SyncStatus.COMPLETE, processing_status=ProcessingStatus.COMPLETE)
        sync_rows(contacts[7:8], sync_status=SyncStatus.ERROR, processing_status=ProcessingStatus.ERROR)
        sync_rows(contacts[8:], crm="other", **queued(due_in=-timedelta(days=1)))
        scripted = healthz(client)[1]["crms"]["scripted"]
        assert scripted["queue_depth"] == 4
        # Ten minutes, plus however long the request took.
        assert 600 <= scripted["oldest_due_seconds"] < 700

    def test_nothing_due_yet_has_no_oldest_due_age(self, client, scripted_crm, make_contacts):
        sync_rows(make_contacts(2), **queued(due_in=timedelta(minutes=30)))
        scripted = healthz(client)[1]["crms"]["scripted"]
        assert (scripted["queue_depth"], scripted["oldest_due_seconds"]) == (2, None)

    def test_runs_and_pauses_come_from_the_crm_state(self, client, scripted_crm):
        CRMState.objects.create(
            crm="scripted",
            last_run_at=timezone.now() - timedelta(minutes=1),
            last_success_at=timezone.now() - timedelta(hours=2),
            paused_until=timezone.now() + timedelta(minutes=5),
        )
        state = CRMState.objects.get(crm="scripted")
        response, body = healthz(client)
        assert response.status_code == 200
        assert body["crms"]["scripted"] == {
            **QUIET,
            "last_run_at": state.last_run_at.isoformat(),
            "last_success_at": state.last_success_at.isoformat(),
            "paused": True,
        }

    def test_an_open_circuit_breaker_is_reported(self, client, scripted_crm):
        failing, probe = timezone.now() - timedelta(minutes=40), timezone.now() + timedelta(minutes=5)
        CRMState.objects.create(crm="scripted", failed_batches=3, failing_since=failing, next_probe_at=probe)
        body = healthz(client)[1]["crms"]["scripted"]
        assert (body["failing_since"], body["next_probe_at"]) == (failing.isoformat(), probe.isoformat())

    def test_a_staff_pause_is_reported(self, client, scripted_crm):
        CRMState.objects.create(crm="scripted", paused_at=timezone.now(), paused_by="alice")
        response = client.get("/healthz")
        assert response.json()["crms"]["scripted"]["paused"] is True
        assert "alice" not in response.content.decode()

    def test_a_pause_that_ended_is_not_reported(self, client, scripted_crm):
        CRMState.objects.create(crm="scripted", paused_until=timezone.now() - timedelta(minutes=1))
        assert healthz(client)[1]["crms"]["scripted"]["paused"] is False


class TestNothingSecret:
    def test_no_contact_data_errors_or_credentials_in_the_body(self, client, scripted_crm, settings, make_contact):
        settings.BREVO_API_KEY = "xkeysib-brevo-secret-4711"
        secrets = ["xkeysib-brevo-secret-4711", "scripted-secret-key", "jane.roe@example.com", "Roe", "sk-live"]
        jane = make_contact("jane.roe@example.com", first_name="Jane", last_name="Roe")
        for crm in ("scripted", "brevo"):
            ContactSync.objects.create(
                contact=jane, crm=crm, last_error="token sk-live-0042 rejected", **queued(-timedelta(minutes=1))
            )
            CRMState.objects.create(crm=crm, pause_reason="Roe: sk-live-0042 rejected")
        response = client.get("/healthz")
        assert set(response.json()["crms"]) >= {"scripted", "brevo"}
        assert [secret for secret in secrets if secret in response.content.decode()] == []


class TestSchedules:
    def at(self, **ago):
        return timezone.now() - timedelta(**ago)

    def test_a_schedule_three_intervals_late_makes_it_unhealthy(self, client, scripted_crm):
        ensure_schedules()
        CRMState.objects.create(crm="scripted", last_run_at=self.at(minutes=16))
        response, body = healthz(client)
        assert response.status_code == 503
        assert body["status"] == "unhealthy"
        assert body["database"] == "ok"
        assert body["problems"] == ["The Scripted CRM sync schedule has not run for 3 of its intervals."]
        assert body["crms"]["scripted"]["schedule"] == "stale"

    def test_a_schedule_within_three_intervals_is_fine(self, client, scripted_crm):
        ensure_schedules()
        CRMState.objects.create(crm="scripted", last_run_at=self.at(minutes=14))
        response, body = healthz(client)
        assert (response.status_code, body["status"], body["problems"]) == (200, "ok", [])
        assert body["crms"]["scripted"]["schedule"] == "ok"

    @pytest.mark.parametrize("hours_ago, expected", [(2, "ok"), (4, "stale")])
    def test_the_interval_is_the_crms_own(self, client, scripted_crm, settings, hours_ago, expected):
        settings.SCRIPTED_SYNC_SCHEDULER_INTERVAL_MINUTES = 60
        ensure_schedules()
        CRMState.objects.create(crm="scripted", last_run_at=self.at(hours=hours_ago))
        assert healthz(client)[1]["crms"]["scripted"]["schedule"] == expected

    @pytest.mark.parametrize("minutes_ago, expected", [(5, "ok"), (16, "stale")])
    def test_a_crm_that_never_ran_is_judged_by_its_first_planned_run(self, client, scripted_crm, minutes_ago, expected):
        ensure_schedules()
        Schedule.objects.filter(name="crmsync:scripted").update(next_run=self.at(minutes=minutes_ago))
        # A state row written by a pause, with no run yet.
        CRMState.objects.create(crm="scripted", paused_until=self.at(minutes=1))
        assert healthz(client)[1]["crms"]["scripted"]["schedule"] == expected

    def test_with_an_invalid_interval_setting_the_schedules_own_interval_counts(self, client, scripted_crm, settings):
        ensure_schedules()
        settings.SCRIPTED_SYNC_SCHEDULER_INTERVAL_MINUTES = "every-so-often"
        CRMState.objects.create(crm="scripted", last_run_at=self.at(minutes=16))
        response = client.get("/healthz")
        assert response.json()["crms"]["scripted"]["schedule"] == "stale"
        assert "every-so-often" not in response.content.decode()

    def test_without_a_schedule_an_old_run_is_no_failure(self, client, scripted_crm):
        # sync_crm run by hand or by cron: nothing to judge it by.
        CRMState.objects.create(crm="scripted", last_run_at=self.at(days=7))
        response, body = healthz(client)
        assert (response.status_code, body["crms"]["scripted"]["schedule"]) == (200, "none")


class TestDatabaseDown:
    def test_an_unreachable_database_gives_503_without_retrying(self, client, scripted_crm, monkeypatch):
        attempts = []

        def refuse():
            attempts.append(1)
            raise OperationalError("connection to server at 10.0.0.5 failed: password authentication failed")

        with monkeypatch.context() as patch:
            patch.setattr(connections["default"], "ensure_connection", refuse)
            response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json() == {
            "status": "unhealthy",
            "database": "unreachable",
            "problems": ["The database is unreachable."],
            "crms": {},
        }
        assert len(attempts) == 1


class TestQueries:
    def count_queries(self, client):
        with CaptureQueriesContext(connections["default"]) as queries:
            assert client.get("/healthz").status_code == 200
        return len(queries)

    def test_the_number_of_queries_does_not_grow_with_the_rows(self, client, scripted_crm, settings, make_contacts):
        settings.OTHER_TOKEN = "other-secret-token"
        sync_rows(make_contacts(10), **queued(-timedelta(minutes=1)))
        few = self.count_queries(client)
        contacts = list(make_contacts(1000))
        sync_rows(contacts[:500], **queued(-timedelta(minutes=1)))
        sync_rows(contacts[500:], crm="other", processing_status=ProcessingStatus.PROCESSING)
        many = self.count_queries(client)
        assert few == many <= 4
