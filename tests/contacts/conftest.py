"""Fixtures of the erasure tests: the key, which CRMs are configured, and staff users
with and without contacts.erase_contact."""

import pytest
from django.contrib.auth.models import Permission, User

SUPPRESSION_KEY = "suppression-key-for-erasure-tests"
CRM_SETTINGS = {
    "brevo": {"BREVO_API_KEY": "brevo-key-for-erasure-tests"},
    "hubspot": {"HUBSPOT_API_KEY": "hubspot-key-for-erasure-tests"},
    "mautic": {
        "MAUTIC_BASE_URL": "https://mautic.example.com",
        "MAUTIC_USERNAME": "crmsync",
        "MAUTIC_PASSWORD": "mautic-password-for-erasure-tests",
    },
    "n8n": {"N8N_WEBHOOK_URL": "https://n8n.example.com/webhook/crmsync"},
}


@pytest.fixture
def configure_crms(settings):
    """`configure_crms(*names)`: exactly those CRMs have their settings; no sandbox."""

    def configure(*names):
        settings.CRMSYNC_SANDBOX_URL = ""
        for crm, values in CRM_SETTINGS.items():
            for name, value in values.items():
                if crm in names:
                    setattr(settings, name, value)
                elif hasattr(settings, name):
                    delattr(settings, name)

    return configure


@pytest.fixture
def suppression_key(settings):
    settings.CRMSYNC_SUPPRESSION_KEY = SUPPRESSION_KEY
    return SUPPRESSION_KEY


@pytest.fixture
def no_suppression_key(settings):
    settings.CRMSYNC_SUPPRESSION_KEY = ""


def make_staff(username, *codenames, superuser=False):
    if superuser:
        return User.objects.create_superuser(username=username, email="%s@example.com" % username)
    user = User.objects.create_user(username=username, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="contacts", codename__in=codenames))
    return user


# Who may look at contacts, and who may also erase.
VIEWER_PERMISSIONS = ("view_contact", "change_contact", "view_erasure", "view_suppression")
ERASER_PERMISSIONS = (*VIEWER_PERMISSIONS, "erase_contact")


@pytest.fixture
def eraser_client(client, db):
    client.force_login(make_staff("eraser", *ERASER_PERMISSIONS))
    return client
