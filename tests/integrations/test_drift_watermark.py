"""The drift sweep reads only the contacts changed since the CRM's last sweep: it
still finds changes made without signals (QuerySet.update, raw SQL), and finds
every row again when what builds the payloads changed. Runs on SQLite and on
PostgreSQL (each has its own trigger keeping Contact.updated_at)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from contacts import selection
from contacts.models import Contact, ContactSync, DriftSweep, ProcessingStatus, SyncStatus
from integrations import engine, resync
from integrations.backends.brevo import BrevoBackend
from integrations.models import FieldMapping

from .doubles import ScriptedBackend

pytestmark = pytest.mark.django_db
QUEUED = (SyncStatus.SELECTED, ProcessingStatus.QUEUED)
COMPLETE = (SyncStatus.COMPLETE, ProcessingStatus.COMPLETE)
LONG_AGO = timedelta(days=2)


@pytest.fixture
def read(monkeypatch):
    """The pks of the contacts whose payload a sweep built (the probe contact of the
    fingerprint has none and is left out)."""
    built = []
    build = ScriptedBackend.build_payload

    def counting(self, contact):
        if contact.pk is not None:
            built.append(contact.pk)
        return build(self, contact)

    monkeypatch.setattr(ScriptedBackend, "build_payload", counting)
    return built


@pytest.fixture
def synced_long_ago(scripted_crm):
    """30 contacts synced through the engine, last changed two days ago (past any
    sweep's overlap), and a first sweep done: the next one reads what changes."""
    contacts = Contact.objects.bulk_create(
        Contact(email="c%d@example.com" % i, first_name="F%d" % i) for i in range(30)
    )
    queryset = Contact.objects.filter(pk__in=[contact.pk for contact in contacts])
    selection.select(queryset, ["scripted"])
    engine.run("scripted")
    # Setting updated_at itself: the trigger leaves a value the statement wrote.
    queryset.update(updated_at=timezone.now() - LONG_AGO)
    assert resync.requeue_drifted("scripted") == {"scripted": 0}
    return list(queryset.order_by("pk"))


def statuses(contacts):
    rows = ContactSync.objects.filter(contact__in=contacts, crm="scripted")
    return {row.contact_id: (row.sync_status, row.processing_status) for row in rows}


class TestUpdatedAtMovesOnEveryChange:
    def test_a_queryset_update_moves_it(self, scripted_crm):
        contact = Contact.objects.create(email="a@example.com", first_name="Ann")
        Contact.objects.filter(pk=contact.pk).update(updated_at=timezone.now() - LONG_AGO)
        before = timezone.now() - timedelta(seconds=1)

        Contact.objects.filter(pk=contact.pk).update(first_name="Bulk")

        assert Contact.objects.get(pk=contact.pk).updated_at >= before

    def test_raw_sql_moves_it(self, scripted_crm):
        contact = Contact.objects.create(email="a@example.com", first_name="Ann")
        Contact.objects.filter(pk=contact.pk).update(updated_at=timezone.now() - LONG_AGO)
        before = timezone.now() - timedelta(seconds=1)

        with connection.cursor() as cursor:
            cursor.execute("UPDATE contacts_contact SET company = 'Raw' WHERE id = %s", [contact.pk])

        assert Contact.objects.get(pk=contact.pk).updated_at >= before

    def test_a_statement_that_sets_it_keeps_its_value(self, scripted_crm):
        contact = Contact.objects.create(email="a@example.com", first_name="Ann")
        moment = timezone.now() - LONG_AGO
        Contact.objects.filter(pk=contact.pk).update(first_name="Bulk", updated_at=moment)
        assert Contact.objects.get(pk=contact.pk).updated_at == moment


class TestTheSweepReadsWhatChanged:
    def test_nothing_changed_nothing_read(self, synced_long_ago, read):
        assert resync.requeue_drifted("scripted") == {"scripted": 0}
        assert read == []

    def test_a_queryset_update_is_found_and_only_the_changed_contacts_are_read(self, synced_long_ago, read):
        changed = synced_long_ago[3:5]
        Contact.objects.filter(pk__in=[c.pk for c in changed]).update(first_name="Bulk")

        assert resync.requeue_drifted("scripted", batch_size=1) == {"scripted": 2}

        # Only the changed ones; a batch builds a changed payload a second time to
        # check that payloads are reproducible.
        assert set(read) == {c.pk for c in changed}
        assert len(read) <= 2 * len(changed)
        assert set(statuses(synced_long_ago).values()) == {COMPLETE, QUEUED}
        assert {pk for pk, status in statuses(synced_long_ago).items() if status == QUEUED} == set(read)

    def test_raw_sql_is_found(self, synced_long_ago, read):
        contact = synced_long_ago[7]
        with connection.cursor() as cursor:
            cursor.execute("UPDATE contacts_contact SET first_name = 'Raw' WHERE id = %s", [contact.pk])

        assert resync.requeue_drifted("scripted") == {"scripted": 1}
        assert statuses([contact]) == {contact.pk: QUEUED}

    def test_a_change_to_an_unsent_field_is_read_and_queues_nothing(self, synced_long_ago, read):
        contact = synced_long_ago[0]
        Contact.objects.filter(pk=contact.pk).update(company="Acme")  # not in the scripted payload
        assert resync.requeue_drifted("scripted") == {"scripted": 0}
        assert read == [contact.pk]

    def test_a_change_within_the_overlap_is_read_again_by_the_next_sweep_and_queued_once(self, synced_long_ago, read):
        contact = synced_long_ago[0]
        Contact.objects.filter(pk=contact.pk).update(first_name="Bulk")
        assert resync.requeue_drifted("scripted") == {"scripted": 1}
        engine.run("scripted")  # the CRM has the new name: Complete again

        read.clear()
        assert resync.requeue_drifted("scripted") == {"scripted": 0}
        assert read == [contact.pk]

    def test_full_reads_every_complete_row(self, synced_long_ago, read):
        assert resync.requeue_drifted("scripted", full=True) == {"scripted": 0}
        assert sorted(read) == [c.pk for c in synced_long_ago]

    def test_the_watermark_moves_only_when_a_sweep_went_through(self, synced_long_ago, monkeypatch):
        before = DriftSweep.objects.get(crm="scripted").changed_since
        monkeypatch.setattr(resync, "requeue_changed", _fail)
        Contact.objects.filter(pk=synced_long_ago[0].pk).update(first_name="Bulk")

        with pytest.raises(RuntimeError):
            resync.requeue_drifted("scripted")

        assert DriftSweep.objects.get(crm="scripted").changed_since == before


def _fail(changed):
    raise RuntimeError("the database went away")


class TestWhatBuildsPayloadsChanged:
    def test_a_staff_mapping_makes_the_next_sweep_read_every_row(self, synced_long_ago, read):
        FieldMapping.objects.create(crm="scripted", target="first_name", source="first_name")
        resync.requeue_drifted("scripted")
        assert sorted(read) == [c.pk for c in synced_long_ago]

        read.clear()
        resync.requeue_drifted("scripted")
        assert read == [], "the new fingerprint was kept"

    def test_a_setting_that_shapes_the_payload_makes_the_next_sweep_read_every_row(self, settings):
        settings.BREVO_API_KEY = "x"
        contact = Contact.objects.create(email="ann@example.com", first_name="Ann")
        row = ContactSync.objects.create(
            contact=contact,
            crm="brevo",
            sync_status=SyncStatus.COMPLETE,
            processing_status=ProcessingStatus.COMPLETE,
            synced_hash=engine.payload_hash(BrevoBackend().build_payload(contact)),
        )
        Contact.objects.filter(pk=contact.pk).update(updated_at=timezone.now() - LONG_AGO)
        assert resync.requeue_drifted("brevo") == {"brevo": 0}

        settings.BREVO_LIST_ID = "7"  # every payload now carries listIds

        assert resync.requeue_drifted("brevo") == {"brevo": 1}
        row.refresh_from_db()
        assert row.processing_status == ProcessingStatus.QUEUED
