"""Contacts stored the way rows written before the canonical email rule were."""

from datetime import timedelta

from django.db import connection
from django.utils import timezone

from contacts.models import Contact


def stored_as(email, age_days=0, **fields):
    """A contact whose email is stored exactly as given (the ORM would store its
    canonical form), created `age_days` ago."""
    contact = Contact.objects.create(email="placeholder-%d@example.com" % Contact.objects.count(), **fields)
    created = Contact._meta.get_field("created_at").get_db_prep_value(
        timezone.now() - timedelta(days=age_days), connection
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE contacts_contact SET email = %s, created_at = %s WHERE id = %s", [email, created, contact.pk]
        )
    contact.refresh_from_db()
    assert contact.email == email
    return contact
