"""GET /api/v3/crms and POST /api/v3/crms/{crm}/pause, /resume and /sync."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import OrmQ

from api.views.crms import SYNC_TASK
from contacts.models import ContactSync, ProcessingStatus, SyncStatus
from integrations.models import CRMState
from integrations.registry import enabled_backend_classes
from integrations.schedules import sync_schedule_name, wanted_schedules

from .conftest import CHANGE_CONTACTS, PAUSE_CRMS, VIEW_SYNCS

LIST = "/api/v3/crms"
CONTROLS = ("pause", "resume", "sync")

pytestmark = pytest.mark.django_db


def control(crm, action):
    return "%s/%s/%s" % (LIST, crm, action)


@pytest.fixture(autouse=True)
def brevo_configured(settings):
    """Brevo has its key; HubSpot, Mautic and n8n have none, and no sandbox stands in."""
    settings.BREVO_API_KEY = "brevo-key-for-api-tests"
    settings.CRMSYNC_SANDBOX_URL = ""
    for name in ("HUBSPOT_API_KEY", "MAUTIC_BASE_URL", "N8N_WEBHOOK_URL"):
        if hasattr(settings, name):
            delattr(settings, name)


@pytest.fixture
def viewer(client_with):
    return client_with(VIEW_SYNCS)


@pytest.fixture
def pauser(client_with):
    return client_with(PAUSE_CRMS)


def by_name(response):
    assert response.status_code == 200, response.content
    return {crm["name"]: crm for crm in response.json()["results"]}


def sync_rows(contacts, crm="brevo", **fields):
    ContactSync.objects.bulk_create(ContactSync(contact=contact, crm=crm, **fields) for contact in contacts)


def queued(due_in):
    return {
        "sync_status": SyncStatus.SELECTED,
        "processing_status": ProcessingStatus.QUEUED,
        "next_attempt_at": timezone.now() + due_in,
    }


class TestPermissions:
    @pytest.mark.parametrize("permissions", [(), (CHANGE_CONTACTS,), (PAUSE_CRMS,)])
    def test_the_list_needs_view_syncs(self, client_with, permissions):
        assert client_with(*permissions).get(LIST).status_code == 403
        assert client_with(VIEW_SYNCS).get(LIST).status_code == 200

    @pytest.mark.parametrize("action, allowed", [("pause", 200), ("resume", 200), ("sync", 202)])
    @pytest.mark.parametrize("permissions", [(), (CHANGE_CONTACTS,), (VIEW_SYNCS,)])
    def test_the_controls_need_pause_crm(self, client_with, action, allowed, permissions):
        assert client_with(*permissions).post(control("brevo", action)).status_code == 403
        assert client_with(PAUSE_CRMS).post(control("brevo", action)).status_code == allowed

    def test_a_refused_control_changes_nothing(self, client_with):
        client_with(VIEW_SYNCS).post(control("brevo", "pause"))
        client_with(VIEW_SYNCS).post(control("brevo", "sync"))
        assert CRMState.objects.paused("brevo") is None
        assert not OrmQ.objects.exists()

    @pytest.mark.parametrize("method, url", [("get", LIST), *(("post", control("brevo", a)) for a in CONTROLS)])
    def test_without_credentials_it_is_401(self, anonymous, method, url):
        assert getattr(anonymous, method)(url).status_code == 401

    @pytest.mark.parametrize("action", ["pause", "resume", "sync"])
    def test_the_controls_take_post_only(self, pauser, action):
        assert pauser.get(control("brevo", action)).status_code == 405
        assert CRMState.objects.paused("brevo") is None


class TestList:
    def test_only_configured_crms_are_listed(self, viewer):
        assert list(by_name(viewer.get(LIST))) == ["brevo"]

    def test_the_sandbox_counts_as_configured(self, viewer, settings):
        settings.CRMSYNC_SANDBOX_URL = "http://127.0.0.1:9"
        names = list(by_name(viewer.get(LIST)))
        assert names == [backend_class.name for backend_class in enabled_backend_classes()]
        assert len(names) > 1

    def test_a_quiet_crm(self, viewer):
        assert by_name(viewer.get(LIST))["brevo"] == {
            "name": "brevo",
            "label": "Brevo",
            "queued": 0,
            "due": 0,
            "in_flight": 0,
            "oldest_due_at": None,
            "errors": 0,
            "paused": False,
            "pause": None,
            "breaker": None,
            "last_run_at": None,
            "last_success_at": None,
        }

    def test_queue_depth_oldest_due_and_errors(self, viewer, make_contacts):
        contacts = make_contacts(12)
        sync_rows(contacts[:2], **queued(-timedelta(minutes=10)))
        sync_rows(contacts[2:3], **queued(-timedelta(minutes=1)))
        sync_rows(contacts[3:4], **queued(timedelta(hours=1)))
        sync_rows(contacts[4:5], sync_status=SyncStatus.SELECTED, processing_status=ProcessingStatus.PROCESSING)
        sync_rows(contacts[5:8], sync_status=SyncStatus.ERROR, processing_status=ProcessingStatus.ERROR)
        sync_rows(contacts[8:10], sync_status=SyncStatus.COMPLETE, processing_status=ProcessingStatus.COMPLETE)
        sync_rows(contacts[10:], crm="hubspot", **queued(-timedelta(days=1)))
        brevo = by_name(viewer.get(LIST))["brevo"]
        assert (brevo["queued"], brevo["due"], brevo["in_flight"], brevo["errors"]) == (4, 3, 1, 3)
        oldest = ContactSync.objects.filter(contact=contacts[0], crm="brevo").get().next_attempt_at
        assert brevo["oldest_due_at"] == oldest.isoformat().replace("+00:00", "Z")

    def test_a_staff_pause_says_who(self, viewer):
        CRMState.objects.pause_by_staff("brevo", by="alice")
        brevo = by_name(viewer.get(LIST))["brevo"]
        assert brevo["paused"] is True
        assert (brevo["pause"]["kind"], brevo["pause"]["by"], brevo["pause"]["until"]) == ("staff", "alice", None)
        assert "alice" in brevo["pause"]["reason"]

    def test_the_crms_own_pause_says_until_when(self, viewer):
        CRMState.objects.pause("brevo", timezone.now() + timedelta(minutes=5), "429: slow down")
        pause = by_name(viewer.get(LIST))["brevo"]["pause"]
        assert (pause["kind"], pause["by"], pause["reason"]) == ("crm", "", "429: slow down")
        assert pause["until"] is not None

    def test_an_open_breaker_and_the_last_runs(self, viewer):
        now = timezone.now()
        CRMState.objects.create(
            crm="brevo",
            failing_since=now - timedelta(minutes=3),
            next_probe_at=now + timedelta(minutes=2),
            last_run_at=now - timedelta(minutes=1),
            last_success_at=now - timedelta(hours=1),
        )
        brevo = by_name(viewer.get(LIST))["brevo"]
        assert (brevo["paused"], brevo["pause"]["kind"]) == (True, "breaker")
        assert set(brevo["breaker"]) == {"failing_since", "next_probe_at"}
        assert brevo["last_run_at"] is not None and brevo["last_success_at"] is not None

    def test_queries_do_not_grow_with_the_crms_or_rows(self, viewer, settings, make_contacts):
        def queries():
            with CaptureQueriesContext(connection) as captured:
                assert viewer.get(LIST).status_code == 200
            return len(captured)

        one_crm = queries()
        settings.CRMSYNC_SANDBOX_URL = "http://127.0.0.1:9"
        sync_rows(make_contacts(20), **queued(-timedelta(minutes=1)))
        sync_rows(make_contacts(20), sync_status=SyncStatus.ERROR, processing_status=ProcessingStatus.ERROR)
        assert queries() == one_crm


class TestPauseAndResume:
    def test_pause_answers_the_new_state_and_whether_it_changed(self, pauser):
        first = pauser.post(control("brevo", "pause"))
        assert first.status_code == 200
        assert first.json()["changed"] is True
        assert first.json()["crm"]["paused"] is True
        assert first.json()["crm"]["pause"]["by"] == "api-user-0"
        assert CRMState.objects.paused("brevo").by == "api-user-0"
        again = pauser.post(control("brevo", "pause"))
        assert (again.status_code, again.json()["changed"], again.json()["crm"]["paused"]) == (200, False, True)

    def test_pausing_again_keeps_who_paused_first(self, pauser):
        CRMState.objects.pause_by_staff("brevo", by="alice")
        assert pauser.post(control("brevo", "pause")).json()["crm"]["pause"]["by"] == "alice"

    def test_resume_ends_the_staff_pause(self, pauser):
        CRMState.objects.pause_by_staff("brevo", by="alice")
        first = pauser.post(control("brevo", "resume"))
        assert (first.status_code, first.json()["changed"], first.json()["crm"]["paused"]) == (200, True, False)
        assert CRMState.objects.paused("brevo") is None
        again = pauser.post(control("brevo", "resume"))
        assert (again.status_code, again.json()["changed"]) == (200, False)

    def test_resume_leaves_the_crms_own_pause(self, pauser):
        CRMState.objects.pause("brevo", timezone.now() + timedelta(minutes=5), "429: slow down")
        body = pauser.post(control("brevo", "resume")).json()
        assert (body["changed"], body["crm"]["paused"], body["crm"]["pause"]["kind"]) == (False, True, "crm")

    @pytest.mark.parametrize("action", ["pause", "resume", "sync"])
    @pytest.mark.parametrize("crm", ["hubspot", "zoho", "Brevo"])
    def test_an_unknown_or_unconfigured_crm_is_404_naming_the_configured_ones(self, pauser, action, crm):
        response = pauser.post(control(crm, action))
        assert response.status_code == 404
        assert response.json()["configured_crms"] == ["brevo"]
        assert "brevo" in response.json()["detail"]
        assert not CRMState.objects.exists()
        assert not OrmQ.objects.exists()

    @pytest.mark.parametrize("action", ["pause", "resume", "sync"])
    def test_a_nul_byte_in_the_name_is_400(self, pauser, action):
        response = pauser.post(control("brevo%00", action))
        assert response.status_code == 400
        assert "NUL" in response.content.decode()
        assert not CRMState.objects.exists()


class TestSyncNow:
    def test_it_queues_the_schedules_task_for_that_crm(self, pauser):
        response = pauser.post(control("brevo", "sync"))
        assert response.status_code == 202
        body = response.json()
        assert (body["crm"], body["message"]) == ("brevo", "A Brevo sync tick is queued.")
        [queued_task] = OrmQ.objects.all()
        task = queued_task.task
        assert (task["id"], task["func"], task["args"]) == (body["task_id"], SYNC_TASK, ("brevo",))
        assert task["group"] == sync_schedule_name("brevo")

    def test_it_is_the_task_the_schedule_runs(self):
        assert wanted_schedules()[sync_schedule_name("brevo")]["func"] == SYNC_TASK

    def test_each_call_queues_one_tick(self, pauser):
        ids = {pauser.post(control("brevo", "sync")).json()["task_id"] for _ in range(2)}
        assert len(ids) == 2
        assert OrmQ.objects.count() == 2
