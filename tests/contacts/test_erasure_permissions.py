"""Who may erase, cancel an erasure and lift a suppression: anonymous, staff without
contacts.erase_contact, staff with it, and a superuser; in the admin and the API."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from contacts import erasure
from contacts.models import Erasure, ErasureStatus, Suppression

from .conftest import ERASER_PERMISSIONS, VIEWER_PERMISSIONS, make_staff

CONTACTS = reverse("admin:contacts_contact_changelist")
ERASURES = reverse("admin:contacts_erasure_changelist")
SUPPRESSIONS = reverse("admin:contacts_suppression_changelist")
ROLES = ("anonymous", "staff without the permission", "staff with it", "superuser")
ALLOWED = {"staff with it", "superuser"}

pytestmark = pytest.mark.django_db


def user_for(role):
    if role == "anonymous":
        return None
    if role == "superuser":
        return make_staff("root", superuser=True)
    return make_staff("staff", *(ERASER_PERMISSIONS if role == "staff with it" else VIEWER_PERMISSIONS))


@pytest.fixture(params=ROLES)
def role(request, configure_crms, suppression_key):
    configure_crms("brevo")
    return request.param


@pytest.fixture
def admin_client_for(client, role):
    user = user_for(role)
    if user:
        client.force_login(user)
    return client


def post_action(client, url, action, ids, **extra):
    return client.post(url, {"action": action, "index": 0, ACTION_CHECKBOX_NAME: [str(i) for i in ids], **extra})


def pending_erasure():
    return erasure.start(["pending@example.com"], requested_by="dpo", via="command")[0]


def test_the_erase_action(admin_client_for, role, make_contact):
    ann = make_contact(email="ann@example.com")

    response = post_action(admin_client_for, CONTACTS, "erase_from_every_crm", [ann.pk], post="yes")

    assert Erasure.objects.exists() == (role in ALLOWED)
    if role == "anonymous":
        assert reverse("admin:login") in response.url
    elif role not in ALLOWED:
        # The action is not offered, so Django refuses the choice.
        assert "erase_from_every_crm" not in admin_client_for.get(CONTACTS).content.decode()


def test_the_contact_pages_erase_link_and_page(admin_client_for, role, make_contact):
    ann = make_contact(email="ann@example.com")
    erase_url = reverse("admin:contacts_contact_erase", args=[ann.pk])

    change_page = admin_client_for.get(reverse("admin:contacts_contact_change", args=[ann.pk]))
    erase_page = admin_client_for.get(erase_url)
    admin_client_for.post(erase_url, {"post": "yes"})

    assert Erasure.objects.exists() == (role in ALLOWED)
    if role == "anonymous":
        assert erase_page.status_code == 302
    else:
        assert (erase_url in change_page.content.decode()) == (role in ALLOWED)
        assert erase_page.status_code == (200 if role in ALLOWED else 403)


def test_the_cancel_action(admin_client_for, role):
    pending = pending_erasure()

    post_action(admin_client_for, ERASURES, "cancel_erasure", [pending.pk])

    pending.refresh_from_db()
    assert pending.status == (ErasureStatus.CANCELLED if role in ALLOWED else ErasureStatus.PENDING)


def test_the_lift_action(admin_client_for, role):
    pending_erasure()
    row = Suppression.objects.get()

    post_action(admin_client_for, SUPPRESSIONS, "lift_suppression", [row.pk], post="yes")

    assert Suppression.objects.exists() == (role not in ALLOWED)


def test_the_api(role):
    user = user_for(role)
    client = APIClient()
    if user:
        client.credentials(HTTP_AUTHORIZATION="Token %s" % Token.objects.create(user=user).key)
    pending = pending_erasure()

    started = client.post("/api/v3/contacts/erase", {"emails": ["ann@example.com"]}, format="json")
    proof = client.get("/api/v3/erasures/%d" % pending.pk)

    expected = {"anonymous": 401, "staff without the permission": 403}.get(role)
    assert started.status_code == (expected or 202)
    assert proof.status_code == (expected or 200)
    assert Erasure.objects.count() == (2 if role in ALLOWED else 1)
