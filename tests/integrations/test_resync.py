"""Change-driven re-sync: a Complete contact whose CRM payload changed is queued
again, after a save (signal) or after a bulk update (the periodic sweep)."""

import itertools
import logging

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from contacts import selection
from contacts.models import Contact, ContactSync, PendingDecision, ProcessingStatus, SyncStatus
from integrations import engine, resync
from integrations.backends.brevo import BrevoBackend
from integrations.backends.n8n import N8nBackend
from integrations.engine import payload_hash

from .conftest import DOUBLES
from .doubles import ScriptedBackend

pytestmark = pytest.mark.django_db
P, S = ProcessingStatus, SyncStatus

_builds = itertools.count()


class VolatileBackend(ScriptedBackend):
    """A payload that differs every time it is built, like one carrying a timestamp."""

    name = "volatile"
    verbose_name = "Volatile CRM"

    def build_payload(self, contact):
        return {**super().build_payload(contact), "built": next(_builds)}


@pytest.fixture
def other_crm(scripted_crm, settings):
    settings.OTHER_TOKEN = "other-token"


@pytest.fixture
def synced(scripted_crm):
    """`synced(n, crms)`: n contacts synced for real through the engine, so every
    row is Complete with the hash of the payload the CRM accepted."""

    def make(count=1, crms=("scripted",), prefix="c"):
        contacts = Contact.objects.bulk_create(
            Contact(email="%s%d@example.com" % (prefix, i), first_name="F%d" % i) for i in range(count)
        )
        queryset = Contact.objects.filter(pk__in=[c.pk for c in contacts])
        selection.select(queryset, list(crms))
        for crm in crms:
            engine.run(crm)
        assert row_statuses(contact__in=queryset) == {COMPLETE}
        return queryset

    return make


@pytest.fixture
def brevo(settings):
    settings.BREVO_API_KEY = "x"
    settings.BREVO_FIELD_MAP = "PLAN=plan"


def mark_synced(contact, backend_class, make_sync):
    """A Complete row whose hash is that of the payload the backend builds now."""
    backend = backend_class()
    return make_sync(
        contact,
        backend_class.name,
        sync_status=S.COMPLETE,
        processing_status=P.COMPLETE,
        attempts=1,
        synced_hash=payload_hash(backend.build_payload(contact)),
    )


def row_statuses(**filters):
    return set(ContactSync.objects.filter(**filters).values_list("sync_status", "processing_status"))


def statuses(contact):
    rows = ContactSync.objects.filter(contact=contact).order_by("crm")
    return {row.crm: (row.sync_status, row.processing_status) for row in rows}


def save_and_commit(contact, capture, **changes):
    for name, value in changes.items():
        setattr(contact, name, value)
    with capture(execute=True):
        contact.save()


QUEUED = (S.SELECTED, P.QUEUED)
COMPLETE = (S.COMPLETE, P.COMPLETE)


class TestOnSave:
    def test_a_changed_mapped_field_queues_the_contact_for_every_crm_syncing_on_change(
        self, synced, other_crm, django_capture_on_commit_callbacks
    ):
        contact = synced(crms=("scripted", "other")).get()
        before = timezone.now()
        save_and_commit(contact, django_capture_on_commit_callbacks, first_name="Renamed")

        assert statuses(contact) == {"other": QUEUED, "scripted": QUEUED}
        for row in ContactSync.objects.filter(contact=contact):
            assert (row.attempts, row.last_error) == (0, "")
            assert before <= row.next_attempt_at <= timezone.now()

    def test_a_crm_with_sync_on_change_off_is_left_complete(
        self, synced, other_crm, settings, django_capture_on_commit_callbacks
    ):
        contact = synced(crms=("scripted", "other")).get()
        settings.OTHER_SYNC_ON_CHANGE = "false"
        save_and_commit(contact, django_capture_on_commit_callbacks, first_name="Renamed")
        assert statuses(contact) == {"other": COMPLETE, "scripted": QUEUED}

    @pytest.mark.parametrize(
        "changes",
        [
            {"company": "Acme"},
            {"source_url": "https://example.com/form"},
            {"attributes": {"note": "x"}},
            {},
        ],
    )
    def test_a_change_outside_the_mapped_fields_queues_nothing(
        self, synced, changes, django_capture_on_commit_callbacks
    ):
        contact = synced().get()
        save_and_commit(contact, django_capture_on_commit_callbacks, **changes)
        assert statuses(contact) == {"scripted": COMPLETE}

    def test_the_check_waits_for_the_commit(self, synced, django_capture_on_commit_callbacks):
        contact = synced().get()
        contact.first_name = "Renamed"
        with django_capture_on_commit_callbacks() as callbacks:
            contact.save()
            assert statuses(contact) == {"scripted": COMPLETE}
        assert len(callbacks) == 1
        callbacks[0]()
        assert statuses(contact) == {"scripted": QUEUED}

    def test_a_new_contact_schedules_no_check(self, scripted_crm, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks() as callbacks:
            Contact.objects.create(email="new@example.com", first_name="New")
        assert callbacks == []

    def test_with_no_crm_syncing_on_change_a_save_costs_no_query(
        self, synced, settings, django_capture_on_commit_callbacks, django_assert_num_queries
    ):
        contact = synced().get()
        settings.SCRIPTED_SYNC_ON_CHANGE = False
        contact.first_name = "Renamed"
        with django_capture_on_commit_callbacks() as callbacks:
            contact.save()
        with django_assert_num_queries(0):
            callbacks[0]()
        assert statuses(contact) == {"scripted": COMPLETE}

    def test_a_contact_that_can_no_longer_be_built_is_queued_and_fails_visibly(
        self, synced, django_capture_on_commit_callbacks
    ):
        contact = synced().get()
        save_and_commit(contact, django_capture_on_commit_callbacks, email="invalid@example.com")
        assert statuses(contact) == {"scripted": QUEUED}

        engine.run("scripted")

        row = ContactSync.objects.get(contact=contact)
        assert (row.sync_status, row.processing_status) == (S.ERROR, P.ERROR)
        assert row.last_error == "Scripted CRM cannot take invalid@example.com"


class TestWithARealBackend:
    """Brevo maps first/last name, phone, company and website, plus PLAN here."""

    @pytest.mark.parametrize(
        "changes",
        [
            {"company": "Acme"},
            {"last_name": "Lee"},
            {"attributes": {"plan": "pro"}},
            {"email": "new@example.com"},
        ],
    )
    def test_a_mapped_change_queues_the_contact(
        self, brevo, make_contact, make_sync, changes, django_capture_on_commit_callbacks
    ):
        contact = make_contact(first_name="Ann", attributes={"plan": "free"})
        mark_synced(contact, BrevoBackend, make_sync)
        save_and_commit(contact, django_capture_on_commit_callbacks, **changes)
        assert statuses(contact) == {"brevo": QUEUED}

    @pytest.mark.parametrize(
        "changes",
        [{"source_url": "https://example.com/form"}, {"attributes": {"plan": "free", "note": "called"}}],
    )
    def test_an_unmapped_change_queues_nothing(
        self, brevo, make_contact, make_sync, changes, django_capture_on_commit_callbacks
    ):
        contact = make_contact(first_name="Ann", attributes={"plan": "free"})
        mark_synced(contact, BrevoBackend, make_sync)
        save_and_commit(contact, django_capture_on_commit_callbacks, **changes)
        assert statuses(contact) == {"brevo": COMPLETE}

    def test_n8n_payloads_hash_the_same_until_the_contact_changes(self, settings, make_contact, make_sync):
        # n8n's body carries the time it was sent; were it hashed, every sweep
        # would queue every n8n contact again.
        settings.N8N_WEBHOOK_URL = "https://n8n.example.com/webhook/crmsync"
        contact = make_contact(first_name="Ann")
        mark_synced(contact, N8nBackend, make_sync)
        assert resync.requeue_drifted() == {"n8n": 0}

        Contact.objects.filter(pk=contact.pk).update(company="Acme")

        assert resync.requeue_drifted() == {"n8n": 1}
        assert statuses(contact) == {"n8n": QUEUED}


class TestRowsThatAreNotComplete:
    @pytest.mark.parametrize(
        "status, processing",
        [
            (S.SELECTED, P.QUEUED),
            (S.ERROR, P.ERROR),
            (S.SKIPPED, P.NONE),
            (S.NEW, P.NONE),
        ],
    )
    def test_are_left_untouched_by_both_paths(self, scripted_crm, make_contact, make_sync, status, processing):
        contact = make_contact(first_name="Ann")
        row = make_sync(
            contact,
            "scripted",
            sync_status=status,
            processing_status=processing,
            attempts=2,
            last_error="kept",
            synced_hash="stale",
        )
        before = ContactSync.objects.filter(pk=row.pk).values().get()

        assert resync.requeue_if_changed([contact]) == 0
        assert resync.requeue_drifted() == {"scripted": 0}
        assert ContactSync.objects.filter(pk=row.pk).values().get() == before

    def test_a_row_in_flight_is_marked_by_the_signal_path_only(self, scripted_crm, make_contact, make_sync):
        contact = make_contact(first_name="Ann")
        row = make_sync(
            contact, "scripted", sync_status=S.SELECTED, processing_status=P.PROCESSING, synced_hash="stale"
        )
        assert resync.requeue_drifted() == {"scripted": 0}
        assert resync.requeue_if_changed([contact]) == 1
        row.refresh_from_db()
        assert (row.processing_status, row.pending_decision) == (P.PROCESSING, PendingDecision.SELECT)


class TestDriftSweep:
    def test_a_bulk_update_is_caught_in_batches_with_queries_per_batch_not_per_row(self, synced, other_crm):
        queries = {}
        for count in (20, 200):
            ContactSync.objects.all().delete()
            Contact.objects.all().delete()
            contacts = synced(count, crms=("scripted", "other"), prefix="n%d-" % count)
            contacts.update(first_name="Bulk")  # no signal is sent
            with CaptureQueriesContext(connection) as captured:
                assert resync.requeue_drifted("scripted", batch_size=10) == {"scripted": count}
            queries[count] = len(captured)
            assert row_statuses(crm="scripted") == {QUEUED}
            assert row_statuses(crm="other") == {COMPLETE}, "only the CRM asked for"
        # 18 more batches of 10 rows cost the same few queries each: one read, one write.
        assert queries[200] - queries[20] == 18 * 2
        # Two batches, the mapping, and the sweep's watermark read and written.
        assert queries[20] <= 2 * 2 + 2 + 2

    def test_unchanged_contacts_are_not_queued(self, synced, other_crm):
        synced(25, crms=("scripted", "other"))
        Contact.objects.update(company="Acme")  # not in the scripted CRM's payload
        assert resync.requeue_drifted(batch_size=10) == {"scripted": 0, "other": 0}
        assert row_statuses() == {COMPLETE}

    def test_only_crms_syncing_on_change_are_swept(self, synced, other_crm, settings):
        contacts = synced(3, crms=("scripted", "other"))
        settings.SCRIPTED_SYNC_ON_CHANGE = "off"
        contacts.update(first_name="Bulk")
        assert resync.requeue_drifted() == {"other": 3}
        assert resync.requeue_drifted("scripted") == {}

    def test_a_row_synced_again_after_the_change_is_not_queued(self, synced):
        contacts = synced(2)
        contacts.update(first_name="Bulk")
        selection.select(contacts, ["scripted"])
        engine.run("scripted")  # the CRM now has the bulk-updated names
        assert resync.requeue_drifted() == {"scripted": 0}

    def test_a_payload_that_differs_every_time_queues_nothing(self, scripted_crm, settings, caplog):
        settings.CRMSYNC_EXTRA_BACKENDS = [*DOUBLES, "tests.integrations.test_resync.VolatileBackend"]
        settings.VOLATILE_API_KEY = "x"
        contact = Contact.objects.create(email="v@example.com", first_name="V")
        selection.select(Contact.objects.filter(pk=contact.pk), ["volatile"])
        engine.run("volatile")
        Contact.objects.update(first_name="Bulk")

        with caplog.at_level(logging.WARNING, logger="integrations.resync"):
            assert resync.requeue_drifted("volatile") == {"volatile": 0}
            assert resync.requeue_if_changed([contact]) == 0
        assert statuses(contact) == {"volatile": COMPLETE}
        assert "set VOLATILE_SYNC_ON_CHANGE=false" in caplog.text


def test_the_backend_is_closed_after_each_call(synced, monkeypatch):
    synced(3)
    closed = []
    monkeypatch.setattr(ScriptedBackend, "close", lambda self: closed.append(self), raising=False)
    resync.requeue_drifted(batch_size=1)
    resync.requeue_if_changed(Contact.objects.all())
    assert len(closed) == 2, "one backend per CRM per call, closed when it ends"
