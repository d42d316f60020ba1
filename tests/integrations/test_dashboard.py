"""The sync dashboard, and pausing and resuming a CRM from it."""

import re
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from contacts.models import (
    AttemptOutcome,
    Contact,
    ContactSync,
    Operation,
    ProcessingStatus,
    SyncAttempt,
    SyncStatus,
)
from integrations import engine
from integrations.dashboard import scale_top
from integrations.models import CRMState

pytestmark = pytest.mark.django_db
DASHBOARD = "/admin/dashboard/"
CONFIRMED = {"confirm": "yes"}


def login(client, username, *codenames):
    user = User.objects.create_user(username=username, password="pw-for-tests", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return user


@pytest.fixture
def viewer(client, scripted_crm):
    login(client, "viewer", "view_contact", "view_contactsync")
    return client


@pytest.fixture
def operator(client, scripted_crm):
    login(client, "alice", "view_contact", "view_contactsync", "pause_crm")
    return client


def card(response, crm="scripted"):
    html = response.content.decode()
    match = re.search(r'<section class="crm-card" id="crm-%s">(.*?)</section>' % crm, html, re.S)
    assert match, "no card for %s" % crm
    return match.group(1)


def counts(section):
    found = re.findall(r'data-status="(\w+)"[^>]*>.*?<span class="count">([\d,]+)</span>', section, re.S)
    return {key: int(number.replace(",", "")) for key, number in found}


def hourly(section):
    return [int(n) for n in re.findall(r'data-count="(\d+)"', section)]


def rows(contacts, crm="scripted", **fields):
    ContactSync.objects.bulk_create(ContactSync(contact=c, crm=crm, **fields) for c in contacts)


def people(count, prefix="p"):
    Contact.objects.bulk_create(Contact(email="%s%d@example.com" % (prefix, i)) for i in range(count))
    return list(Contact.objects.filter(email__startswith=prefix).order_by("pk"))


def attempts(contact, at, number, outcome=AttemptOutcome.ACCEPTED, crm="scripted"):
    SyncAttempt.objects.bulk_create(
        SyncAttempt(contact=contact, crm=crm, attempted_at=at, outcome=outcome) for _ in range(number)
    )


class TestWhatItShows:
    def test_counts_by_where_the_work_stands_including_contacts_nobody_decided_about(self, viewer):
        contacts = people(14)
        rows(contacts[:3], sync_status=SyncStatus.COMPLETE, processing_status=ProcessingStatus.COMPLETE)
        rows(contacts[3:5], sync_status=SyncStatus.SELECTED, processing_status=ProcessingStatus.QUEUED)
        rows(contacts[5:6], sync_status=SyncStatus.SELECTED, processing_status=ProcessingStatus.PROCESSING)
        rows(contacts[6:8], sync_status=SyncStatus.ERROR, processing_status=ProcessingStatus.ERROR)
        rows(contacts[8:9], sync_status=SyncStatus.SKIPPED)
        # A row staff re-queued while it was Complete is queued, not complete.
        rows(contacts[9:10], sync_status=SyncStatus.SELECTED, processing_status=ProcessingStatus.QUEUED)
        # Selected, but the CRM's record is gone and nothing is queued: not "queued".
        rows(contacts[10:11], sync_status=SyncStatus.SELECTED, processing_status=ProcessingStatus.NOT_IN_CRM)
        rows(contacts[11:12], sync_status=SyncStatus.SKIPPED, processing_status=ProcessingStatus.REMOVED)

        section = card(viewer.get(DASHBOARD))

        assert counts(section) == {
            "complete": 3,
            "queued": 3,
            "selected": 0,
            "processing": 1,
            "error": 2,
            "not_in_crm": 1,
            "removed": 1,
            "skipped": 1,
            "new": 2,
        }
        assert 'class="status-error" style="width: 14.286%"' in section

    def test_synced_per_hour_over_the_last_day_counts_accepted_pushes_only(self, viewer):
        contact = people(1)[0]
        now = timezone.now()
        attempts(contact, now, 4)
        attempts(contact, now - timedelta(hours=3), 2)
        attempts(contact, now - timedelta(hours=3), 5, outcome=AttemptOutcome.FAILED)
        attempts(contact, now - timedelta(hours=30), 7)
        attempts(contact, now, 9, crm="other")

        bars = hourly(card(viewer.get(DASHBOARD)))

        assert len(bars) == 24
        assert bars[-1] == 4 and bars[-4] == 2 and sum(bars) == 6

    def test_the_chart_has_a_labelled_scale_the_bars_are_drawn_to(self, viewer):
        contact = people(1)[0]
        now = timezone.now()
        attempts(contact, now, 7)
        attempts(contact, now - timedelta(hours=2), 4)

        section = card(viewer.get(DASHBOARD))

        labels = re.findall(r'class="scale-label"[^>]*>([^<]+)<', section)
        assert labels == ["8", "4", "0"], "a round top above the busiest hour (7), its half and zero"
        bars = re.findall(r'height="(\d+)" data-count="(\d+)"', section)
        heights = {int(count): int(height) for height, count in bars}
        assert heights[4] == 24 and heights[7] == 42, "half the scale is half the chart's 48 pixels"

    @pytest.mark.parametrize(
        "busiest, top", [(0, 2), (1, 2), (3, 4), (9, 10), (10, 10), (11, 20), (45, 60), (999, 1000), (1001, 2000)]
    )
    def test_the_scale_top_is_round_and_above_the_busiest_hour(self, busiest, top):
        assert scale_top(busiest) == top

    def test_complete_and_the_pushes_of_the_last_day_say_what_each_counts(self, viewer):
        contacts = people(3)
        rows(contacts[:1], sync_status=SyncStatus.COMPLETE, processing_status=ProcessingStatus.COMPLETE)
        # One contact synced three times today, two synced last week and still Complete.
        attempts(contacts[0], timezone.now(), 3)
        rows(contacts[1:], sync_status=SyncStatus.COMPLETE, processing_status=ProcessingStatus.COMPLETE)

        section = card(viewer.get(DASHBOARD))

        assert counts(section)["complete"] == 3
        assert re.search(r"Pushes accepted in the last 24 hours, re-syncs included: .*?>3<", section)
        complete = re.search(r'data-status="complete" title="([^"]+)">[^<]*<i[^>]*></i>([^<]+)<', section)
        assert complete.group(2).strip() == "Complete now"
        assert "current state is Complete, whenever they were synced" in complete.group(1)
        assert "a contact synced three times counts three times" in section

    def test_the_oldest_due_contact_and_the_last_successful_run(self, viewer):
        contacts = people(2)
        now = timezone.now()
        rows(
            contacts[:1], processing_status=ProcessingStatus.QUEUED, next_attempt_at=now - timedelta(hours=2, minutes=5)
        )
        # Queued for later (a back-off) is not due yet.
        rows(contacts[1:], processing_status=ProcessingStatus.QUEUED, next_attempt_at=now + timedelta(days=1))
        CRMState.objects.create(crm="scripted", last_success_at=now - timedelta(minutes=3), last_run_at=now)

        section = card(viewer.get(DASHBOARD))

        assert re.search(r'class="oldest-due">waiting 2\xa0hours', section)
        assert re.search(r'class="last-success">.*3\xa0minutes ago', section)

    def test_queued_rows_not_yet_due_say_when_the_next_falls_due(self, viewer):
        contacts = people(5)
        later = timezone.now() + timedelta(minutes=3, seconds=30)
        # Waiting for a retry or a rate limit: queued, not due.
        queued = {"sync_status": SyncStatus.SELECTED, "processing_status": ProcessingStatus.QUEUED}
        rows(contacts, next_attempt_at=later, **queued)

        section = card(viewer.get(DASHBOARD))

        assert counts(section)["queued"] == 5
        assert re.search(
            r'class="queue">5 queued, next due at %s<' % timezone.localtime(later).strftime("%H:%M"), section
        )
        assert re.search(r'class="oldest-due">none waiting, next in 3\xa0minutes<', section)

    def test_due_and_not_yet_due_rows_are_told_apart(self, viewer):
        contacts = people(3)
        now = timezone.now()
        queued = {"sync_status": SyncStatus.SELECTED, "processing_status": ProcessingStatus.QUEUED}
        rows(contacts[:1], next_attempt_at=now - timedelta(minutes=10), **queued)
        rows(contacts[1:], next_attempt_at=now + timedelta(hours=1), **queued)

        section = card(viewer.get(DASHBOARD))

        # The time alone when the next is today, with its date when it is tomorrow (a
        # test run in the last hour of the day).
        assert re.search(
            r'class="queue">3 queued: 1 due now, the next of the others at (\d{4}-\d\d-\d\d )?\d\d:\d\d<', section
        )
        assert re.search(r'class="oldest-due">waiting 10\xa0minutes<', section)

    def test_a_removal_queued_for_a_deleted_contact_is_queued_but_takes_no_contact_from_new(self, viewer):
        contacts = people(3)
        queued = {"sync_status": SyncStatus.SKIPPED, "processing_status": ProcessingStatus.QUEUED}
        rows(contacts[:1], next_attempt_at=timezone.now(), **queued)
        ContactSync.objects.create(
            contact=None, crm="scripted", operation=Operation.REMOVE, next_attempt_at=timezone.now(), **queued
        )

        section = card(viewer.get(DASHBOARD))

        assert (counts(section)["queued"], counts(section)["new"]) == (2, 2)
        assert 'class="queue">2 queued, all due now<' in section
        assert 'class="status-queued" style="width: 50.000%"' in section, "2 of the 4: 3 contacts, 1 detached row"

    def test_a_selected_row_with_nothing_queued_is_not_counted_as_queued(self, viewer):
        # An erasure cancelled over a Selected row leaves it Selected with nothing queued.
        rows(people(2), sync_status=SyncStatus.SELECTED, processing_status=ProcessingStatus.NONE)

        section = card(viewer.get(DASHBOARD))

        assert counts(section)["queued"] == 0 and counts(section)["selected"] == 2
        assert 'class="queue">nothing queued<' in section
        assert 'class="oldest-due">none waiting<' in section

    def test_nothing_waiting_and_never_run(self, viewer):
        section = card(viewer.get(DASHBOARD))
        assert "none waiting" in section and 'class="last-success">never' in section

    def test_top_errors_of_the_last_day_grouped_and_linked_to_those_contacts(self, viewer):
        contacts = people(7)
        error = {"sync_status": SyncStatus.ERROR, "processing_status": ProcessingStatus.ERROR}
        rows(contacts[:3], last_error="Invalid phone number", **error)
        rows(contacts[3:4], last_error="Email rejected", **error)
        rows(contacts[4:5], last_error="Old trouble", **error)
        ContactSync.objects.filter(last_error="Old trouble").update(updated_at=timezone.now() - timedelta(days=2))
        # The same message for another CRM is that CRM's error, not this one's.
        rows(contacts[5:7], crm="other", last_error="Invalid phone number", **error)

        section = card(viewer.get(DASHBOARD))
        errors = re.findall(r'<li><a href="([^"]+)">([^<]+)</a> &times; (\d+)</li>', section)

        assert [(message, int(n)) for _, message, n in errors] == [("Invalid phone number", 3), ("Email rejected", 1)]
        listed = viewer.get(errors[0][0].replace("&amp;", "&"))
        assert {c.email for c in listed.context["cl"].result_list} == {c.email for c in contacts[:3]}

    def test_a_paused_crm_says_who_paused_it_and_a_crm_pause_says_until_when(self, viewer, settings):
        settings.OTHER_TOKEN = "other-token"
        CRMState.objects.pause_by_staff("scripted", "alice")
        CRMState.objects.create(
            crm="other", paused_until=timezone.now() + timedelta(minutes=10), pause_reason="HTTP 429"
        )

        response = viewer.get(DASHBOARD)

        assert re.search(r'class="crm-paused">Paused by alice at \d{4}-\d\d-\d\d', card(response))
        assert re.search(r"Paused by the CRM until .*: HTTP 429", card(response, "other"))

    def test_the_queries_do_not_grow_with_the_rows(self, viewer):
        def queries():
            from django.db import connection
            from django.test.utils import CaptureQueriesContext

            with CaptureQueriesContext(connection) as captured:
                assert viewer.get(DASHBOARD).status_code == 200
            return len(captured)

        few = people(5, "few")
        rows(few, last_error="x", sync_status=SyncStatus.ERROR, processing_status=ProcessingStatus.ERROR)
        attempts(few[0], timezone.now(), 5)
        before = queries()
        many = people(300, "many")
        rows(many, last_error="y", sync_status=SyncStatus.ERROR, processing_status=ProcessingStatus.ERROR)
        attempts(many[0], timezone.now() - timedelta(hours=5), 300)
        assert queries() == before

    def test_the_admin_index_links_to_it(self, viewer):
        assert reverse("admin:crmsync_dashboard") in viewer.get(reverse("admin:index")).content.decode()


NUMBERS = "/admin/dashboard/numbers/"


class TestTheNumbersTheLivePageReads:
    def test_every_card_number_as_json_the_same_as_the_page(self, viewer):
        contacts = people(4)
        now = timezone.now()
        queued = {"sync_status": SyncStatus.SELECTED, "processing_status": ProcessingStatus.QUEUED}
        rows(contacts[:2], next_attempt_at=now + timedelta(minutes=30), **queued)
        rows(contacts[2:3], sync_status=SyncStatus.COMPLETE, processing_status=ProcessingStatus.COMPLETE)
        attempts(contacts[2], now, 3)
        CRMState.objects.pause_by_staff("scripted", "alice")

        response = viewer.get(NUMBERS)

        assert response.status_code == 200 and response["Content-Type"] == "application/json"
        assert "no-store" in response["Cache-Control"]
        assert re.fullmatch(r"\d\d:\d\d:\d\d", response.json()["generated_at_text"])
        (numbers,) = [c for c in response.json()["cards"] if c["crm"] == "scripted"]
        segments = {s["key"]: s["count"] for s in numbers["segments"]}
        assert segments == counts(card(viewer.get(DASHBOARD)))
        assert (segments["queued"], segments["complete"], segments["new"]) == (2, 1, 1)
        assert numbers["synced_last_24h"] == 3 and [h["count"] for h in numbers["hours"]][-1] == 3
        assert [s["text"] for s in numbers["scale"]] == ["4", "2", "0"]
        assert (numbers["queue"]["queued"], numbers["queue"]["due"]) == (2, 0)
        assert numbers["queue"]["text"].startswith("2 queued, next due at ")
        assert numbers["oldest_due_text"].startswith("none waiting, next in ")
        assert numbers["state"]["paused_by_staff"] and numbers["state"]["text"].startswith("Paused by alice at ")

    def test_the_numbers_follow_the_rows(self, viewer):
        def queued_count():
            (numbers,) = [c for c in viewer.get(NUMBERS).json()["cards"] if c["crm"] == "scripted"]
            return next(s["count"] for s in numbers["segments"] if s["key"] == "queued")

        assert queued_count() == 0
        rows(people(3), sync_status=SyncStatus.SELECTED, processing_status=ProcessingStatus.QUEUED)
        assert queued_count() == 3

    def test_anonymous_users_get_no_numbers(self, client, scripted_crm):
        response = client.get(NUMBERS)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]

    def test_staff_without_the_view_permission_get_no_numbers(self, client, scripted_crm):
        login(client, "nobody", "view_contact")
        assert client.get(NUMBERS).status_code == 403

    def test_the_page_loads_the_refresh_script_and_tells_it_where_to_ask(self, viewer):
        page = viewer.get(DASHBOARD).content.decode()
        assert re.search(r'<script src="[^"]*integrations/dashboard\.js" defer>', page)
        assert 'data-numbers-url="%s"' % NUMBERS in page
        assert "<script>" not in page.split("<body")[1], "no inline script in the page's body"

    def test_the_numbers_cost_as_few_queries_with_many_rows(self, viewer):
        def queries():
            from django.db import connection
            from django.test.utils import CaptureQueriesContext

            with CaptureQueriesContext(connection) as captured:
                assert viewer.get(NUMBERS).status_code == 200
            return len(captured)

        rows(people(3, "few"), sync_status=SyncStatus.SELECTED, processing_status=ProcessingStatus.QUEUED)
        before = queries()
        rows(people(200, "many"), sync_status=SyncStatus.SELECTED, processing_status=ProcessingStatus.QUEUED)
        assert queries() == before


class TestWhoMaySeeAndAct:
    def test_anonymous_users_are_sent_to_log_in(self, client, scripted_crm):
        response = client.get(DASHBOARD)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]

    def test_staff_without_the_view_permission_are_refused(self, client, scripted_crm):
        login(client, "nobody")
        assert client.get(DASHBOARD).status_code == 403
        assert reverse("admin:crmsync_dashboard") not in client.get(reverse("admin:index")).content.decode()

    def test_viewers_see_no_pause_button_and_cannot_pause(self, viewer):
        assert "crm-pause-form" not in card(viewer.get(DASHBOARD))
        assert viewer.get(reverse("admin:crmsync_pause", args=["scripted"])).status_code == 403
        assert viewer.post(reverse("admin:crmsync_pause", args=["scripted"]), CONFIRMED).status_code == 403
        assert not CRMState.objects.filter(paused_at__isnull=False).exists()

    def test_pause_needs_a_post_with_its_csrf_token(self, scripted_crm):
        from django.test import Client

        client = Client(enforce_csrf_checks=True)
        login(client, "alice", "view_contactsync", "pause_crm")
        assert client.get(reverse("admin:crmsync_pause", args=["scripted"])).status_code == 200
        assert client.post(reverse("admin:crmsync_pause", args=["scripted"]), CONFIRMED).status_code == 403
        assert not CRMState.objects.filter(paused_at__isnull=False).exists()

    def test_an_unknown_crm_is_not_found(self, operator):
        assert operator.post(reverse("admin:crmsync_pause", args=["nosuchcrm"]), CONFIRMED).status_code == 404
        assert operator.get(reverse("admin:crmsync_pause", args=["nosuchcrm"])).status_code == 404


class TestPauseIsConfirmedFirst:
    def test_the_dashboard_offers_pause_as_a_link_to_its_confirmation_and_resume_as_a_form(self, operator):
        pause = reverse("admin:crmsync_pause", args=["scripted"])
        controls = card(operator.get(DASHBOARD))
        assert '<a class="button" data-control="pause" href="%s">' % pause in controls
        assert 'action="%s"' % pause not in controls, "no form pauses straight from the dashboard"
        assert re.search(r'<form method="post" data-control="resume" action="[^"]+" hidden>', controls)

    def test_opening_the_pause_pauses_nothing_and_says_what_a_pause_does(self, operator, queued):
        queued(3)
        response = operator.get(reverse("admin:crmsync_pause", args=["scripted"]))

        page = response.content.decode()
        assert response.status_code == 200 and "Are you sure you want to pause Scripted CRM?" in page
        assert "3 contacts queued for it wait" in page
        form = re.search(r'<form method="post" action="([^"]+)">(.*?)</form>', page, re.S)
        assert form.group(1) == reverse("admin:crmsync_pause", args=["scripted"])
        assert '<input type="hidden" name="confirm" value="yes">' in form.group(2)
        assert 'href="%s" class="button cancel-link"' % DASHBOARD in form.group(2)
        assert not CRMState.objects.filter(paused_at__isnull=False).exists()
        assert not LogEntry.objects.exists()

    @pytest.mark.parametrize("data", [{}, {"confirm": ""}, {"confirm": "no"}, {"pause": "1"}])
    def test_a_post_without_the_confirmation_pauses_nothing(self, operator, data):
        response = operator.post(reverse("admin:crmsync_pause", args=["scripted"]), data)

        assert response.status_code == 200 and "Are you sure you want to pause" in response.content.decode()
        assert not CRMState.objects.filter(paused_at__isnull=False).exists()
        assert engine.run("scripted").paused_by == ""

    def test_other_methods_are_refused(self, operator):
        assert operator.put(reverse("admin:crmsync_pause", args=["scripted"])).status_code == 405
        assert operator.get(reverse("admin:crmsync_resume", args=["scripted"])).status_code == 405


class TestPauseAndResume:
    def test_pausing_records_who_and_when_and_the_crm_claims_nothing(self, operator, queued):
        queued(3)
        response = operator.post(reverse("admin:crmsync_pause", args=["scripted"]), CONFIRMED, follow=True)

        assert "Scripted CRM is paused" in response.content.decode()
        state = CRMState.objects.get(crm="scripted")
        assert state.paused_by == "alice" and state.paused_at is not None
        result = engine.run("scripted")
        assert result.claimed == 0 and result.paused_by == "alice"
        assert ContactSync.objects.filter(processing_status=ProcessingStatus.QUEUED).count() == 3
        controls = card(operator.get(DASHBOARD))
        assert re.search(r'<form method="post" data-control="resume" action="[^"]+">', controls), "resume shown"
        assert re.search(r'<a class="button" data-control="pause" href="[^"]+" hidden>', controls), "pause hidden"

    def test_pausing_again_keeps_the_first_pause(self, operator):
        assert CRMState.objects.pause_by_staff("scripted", "bob")
        first = CRMState.objects.get(crm="scripted").paused_at
        operator.post(reverse("admin:crmsync_pause", args=["scripted"]), CONFIRMED)
        state = CRMState.objects.get(crm="scripted")
        assert (state.paused_by, state.paused_at) == ("bob", first)

    def test_resuming_lets_the_crm_claim_again(self, operator, queued):
        queued(3)
        CRMState.objects.pause_by_staff("scripted", "alice")

        operator.post(reverse("admin:crmsync_resume", args=["scripted"]))

        state = CRMState.objects.get(crm="scripted")
        assert (state.paused_by, state.paused_at) == ("", None)
        assert engine.run("scripted").accepted == 3

    def test_resuming_leaves_a_pause_the_crm_asked_for(self, operator, queued):
        queued(1)
        until = timezone.now() + timedelta(minutes=5)
        CRMState.objects.create(
            crm="scripted", paused_until=until, pause_reason="HTTP 429", paused_at=timezone.now(), paused_by="bob"
        )

        operator.post(reverse("admin:crmsync_resume", args=["scripted"]))

        result = engine.run("scripted")
        assert result.claimed == 0 and result.paused_until == until and result.paused_by == ""

    def test_sync_crm_until_empty_stops_at_a_staff_pause_and_says_so(self, queued):
        queued(2)
        CRMState.objects.pause_by_staff("scripted", "alice")
        out = StringIO()

        call_command("sync_crm", "--until-empty", stdout=out)

        assert "scripted: Paused by alice at" in out.getvalue()
        assert ContactSync.objects.filter(processing_status=ProcessingStatus.QUEUED).count() == 2


def test_every_admin_page_says_a_crm_is_paused_by_staff(viewer):
    CRMState.objects.pause_by_staff("scripted", "alice")
    page = viewer.get(reverse("admin:contacts_contact_changelist")).content.decode()
    assert re.search(r"Scripted CRM is paused by alice since .*resumes it on the", page, re.S)
    CRMState.objects.resume("scripted", "alice")
    assert "is paused by" not in viewer.get(reverse("admin:contacts_contact_changelist")).content.decode()


def test_an_open_circuit_breaker_says_failing_since_and_next_probe_on_the_dashboard_and_every_page(viewer):
    failing = timezone.now() - timedelta(minutes=40)
    CRMState.objects.create(
        crm="scripted", failed_batches=3, failing_since=failing, next_probe_at=timezone.now() + timedelta(minutes=5)
    )
    assert re.search(
        r"Scripted CRM is failing since \d{4}-\d\d-\d\d .*next probe at \d{4}", card(viewer.get(DASHBOARD))
    )
    page = viewer.get(reverse("admin:contacts_contact_changelist")).content.decode()
    assert re.search(r"Scripted CRM is failing since .*next probe at .*without using their attempts", page, re.S)

    CRMState.objects.filter(crm="scripted").update(failed_batches=0, failing_since=None, next_probe_at=None)
    assert "is failing since" not in viewer.get(reverse("admin:contacts_contact_changelist")).content.decode()
