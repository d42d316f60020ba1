"""Clients for the HTTP API: a user per permission set, each with a DRF token."""

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

# The permission each group of endpoints asks for (api/permissions.py).
CHANGE_CONTACTS = "contacts.change_contact"
VIEW_SYNCS = "contacts.view_contactsync"
PAUSE_CRMS = "integrations.pause_crm"
ERASE_CONTACTS = "contacts.erase_contact"


def _permission(dotted):
    app_label, codename = dotted.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


@pytest.fixture
def client_with(db):
    """`client_with(*permissions)`: an APIClient authenticated by the token of a
    fresh user holding exactly those permissions ("app.codename")."""
    made = []

    def make(*permissions):
        # No password: a token needs none, and hashing one costs about half a second.
        user = User.objects.create_user("api-user-%d" % len(made))
        user.user_permissions.set([_permission(p) for p in permissions])
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Token %s" % Token.objects.create(user=user).key)
        made.append(client)
        return client

    return make


@pytest.fixture
def anonymous():
    return APIClient()


@pytest.fixture
def staff_client(client_with):
    """Every permission the API asks for."""
    return client_with(CHANGE_CONTACTS, VIEW_SYNCS, PAUSE_CRMS, ERASE_CONTACTS)
