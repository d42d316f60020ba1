"""contacts.bulk prepares each value as the field's own preparation would: the
values of Django's own text and integer fields that it would return unchanged are
passed as they are, and everything else (a subclass's own rule, a value of
another type) goes through the field."""

import pytest
from django.utils import timezone

from contacts.bulk import insert_from_values, update_from_values
from contacts.models import AttemptOutcome, Contact, SyncAttempt

pytestmark = pytest.mark.django_db


def test_a_field_subclass_keeps_its_own_preparation():
    contact = Contact.objects.create(email="before@example.com")

    update_from_values(Contact, {contact.pk: (" Zoe@EXAMPLE.com ",)}, per_row={"email": "{v}"}, fixed={})

    # LowercaseEmailField canonicalizes: stripped and lower-cased.
    assert Contact.objects.get(pk=contact.pk).email == "zoe@example.com"


def test_text_values_of_another_type_are_prepared_as_the_field_does():
    contact = Contact.objects.create(email="text@example.com")

    update_from_values(Contact, {contact.pk: ("Ann", 42)}, per_row={"first_name": "{v}", "last_name": "{v}"}, fixed={})

    assert Contact.objects.values_list("first_name", "last_name").get(pk=contact.pk) == ("Ann", "42")


def test_integer_and_foreign_key_values_whatever_their_type():
    contact = Contact.objects.create(email="attempt@example.com")
    rows = [(contact.pk, AttemptOutcome.ACCEPTED, 200, "ok"), (str(contact.pk), AttemptOutcome.RETRY, "503", "")]

    inserted = insert_from_values(
        SyncAttempt,
        rows,
        per_row=["contact", "outcome", "http_status", "error"],
        fixed={"crm": "brevo", "attempted_at": timezone.now(), "duration_ms": 5},
        existing="contact",
    )

    assert inserted == 2
    assert sorted(SyncAttempt.objects.values_list("contact_id", "outcome", "http_status", "error")) == [
        (contact.pk, AttemptOutcome.ACCEPTED, 200, "ok"),
        (contact.pk, AttemptOutcome.RETRY, 503, ""),
    ]
