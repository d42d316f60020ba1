import itertools

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection

from contacts.models import Contact, ContactSync

_serial = itertools.count()


@pytest.fixture
def make_contact(db):
    def make(email=None, **fields):
        return Contact.objects.create(email=email or "person%d@example.com" % next(_serial), **fields)

    return make


@pytest.fixture
def make_contacts(db):
    def make(count, prefix="bulk"):
        start = next(_serial)
        Contact.objects.bulk_create(
            Contact(email="%s%d-%d@example.com" % (prefix, start, i), first_name="F%d" % i)
            for i in range(count)
        )
        return Contact.objects.filter(email__startswith="%s%d-" % (prefix, start))

    return make


@pytest.fixture
def make_sync(db):
    def make(contact, crm="brevo", **fields):
        return ContactSync.objects.create(contact=contact, crm=crm, **fields)

    return make


def _staff_user(username, *codenames):
    user = User.objects.create_user(username=username, password="pw-for-tests", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def staff_client(client, db):
    """A logged-in staff user who may view and change contacts."""
    client.force_login(
        _staff_user("staff", "view_contact", "change_contact", "view_contactsync", "change_contactsync",
                     "view_syncattempt")
    )
    return client


@pytest.fixture
def viewer_client(client, db):
    """A logged-in staff user who may only view contacts."""
    client.force_login(_staff_user("viewer", "view_contact", "view_contactsync"))
    return client


@pytest.fixture
def on_postgres():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL; set DATABASE_URL to run it")
