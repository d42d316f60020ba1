"""The instances the PostgreSQL claim builds from its one statement (integrations
claiming.py) are the ones the ORM would load: same values, a saved row's state,
the contact cached on its row; and a model whose instances need Model.__init__
(a pre_init or post_init receiver) still gets it."""

from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import signals
from django.test.utils import CaptureQueriesContext

from contacts.models import Contact, ContactSync
from integrations import claiming
from integrations.engine import SyncEngine

from .doubles import ScriptedBackend

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the one-statement claim is PostgreSQL's"),
]


def field_values(instance):
    return {field.attname: getattr(instance, field.attname) for field in instance._meta.concrete_fields}


def claim(policy, clock, count=3):
    return SyncEngine(ScriptedBackend(), policy(), clock=clock).claim(count)


def test_claimed_rows_and_contacts_hold_what_the_orm_reads(queued, policy, clock):
    queued(3).update(attributes={"plan": "gold", "seats": 3})
    batch = claim(policy, clock)

    assert len(batch.rows) == 3
    for row in batch.rows:
        assert field_values(row) == field_values(ContactSync.objects.get(pk=row.pk))
        with CaptureQueriesContext(connection) as queries:
            contact = row.contact
        assert len(queries) == 0, "the contact comes with its row"
        assert field_values(contact) == field_values(Contact.objects.get(pk=row.contact_id))
        assert contact.attributes == {"plan": "gold", "seats": 3}
        for instance in (row, contact):
            assert instance._state.adding is False and instance._state.db == "default"
    # An empty JSON object (enrichment here) is a dict of each contact's own.
    first, second = (row.contact.enrichment for row in batch.rows[:2])
    assert first == second == {} and first is not second


def test_a_claimed_row_saves_as_a_loaded_one_does(queued, policy, clock):
    queued(1)
    row = claim(policy, clock, 1).rows[0]

    row.contact.first_name = "Saved"
    row.contact.save(update_fields=["first_name"])
    row.last_error = "noted"
    row.save(update_fields=["last_error"])

    assert Contact.objects.get(pk=row.contact_id).first_name == "Saved"
    assert ContactSync.objects.get(pk=row.pk).last_error == "noted"
    assert ContactSync.objects.count() == 1, "an update, not an insert"


def test_a_model_with_a_post_init_receiver_is_built_through_its_init(queued, policy, clock):
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance)

    signals.post_init.connect(receiver, sender=Contact)
    claiming._plain.cache_clear()
    try:
        queued(2)
        seen.clear()
        batch = claim(policy, clock, 2)
    finally:
        signals.post_init.disconnect(receiver, sender=Contact)
        claiming._plain.cache_clear()

    assert sorted(contact.pk for contact in seen) == sorted(row.contact_id for row in batch.rows)


def test_each_claim_uses_its_own_moment_though_compiled_once(queued, policy, clock):
    first, later = queued(2).order_by("pk")
    ContactSync.objects.filter(contact=later).update(next_attempt_at=clock() + timedelta(minutes=5))
    engine = SyncEngine(ScriptedBackend(), policy(lease_seconds=3600), clock=clock)

    assert [row.contact_id for row in engine.claim(5).rows] == [first.pk]
    assert set(engine._compiled_claim) == {"due", "expired"}, "compiled at the first claim"
    clock.advance(minutes=10)
    assert [row.contact_id for row in engine.claim(5).rows] == [later.pk]
    clock.advance(hours=1, minutes=1)  # past both leases: claimed again
    assert {row.contact_id for row in engine.claim(5).rows} == {first.pk, later.pk}
