"""Who gets in (crmsync_project/settings.py REST_FRAMEWORK): a token first, so no
credentials is a 401 that names the scheme; a logged-in session for the browsable
API, which must carry a CSRF token on unsafe methods; tokens from drf_create_token."""

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.throttling import UserRateThrottle

from api import v3_urls
from api.permissions import HasModelPermissions
from tests.api.conftest import CHANGE_CONTACTS, VIEW_SYNCS, _permission
from tests.api.probe import PROBE_URL

pytestmark = pytest.mark.urls("tests.api.probe")

VALID = {"name": "Ada", "email": "ada@example.com"}


def test_no_credentials_is_a_401_naming_the_token_scheme(anonymous):
    response = anonymous.post(PROBE_URL, VALID, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize("header", ["Token not-a-token", "Token", "Token a b", "Bearer abc", "Basic YTpi"])
def test_a_wrong_token_is_a_401(anonymous, header, db):
    response = anonymous.get(PROBE_URL, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401


def test_a_token_without_the_permission_is_a_403(client_with):
    assert client_with(VIEW_SYNCS).post(PROBE_URL, VALID, format="json").status_code == 403


def test_a_token_with_the_permission_gets_in_without_csrf(client_with):
    client = client_with(CHANGE_CONTACTS)
    client.handler.enforce_csrf_checks = True
    assert client.post(PROBE_URL, VALID, format="json").status_code == 200


@pytest.fixture
def session_client(db):
    user = User.objects.create_user("session-staff", password="pw-for-tests", is_staff=True)
    user.user_permissions.set([_permission(CHANGE_CONTACTS)])
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def test_a_session_reads_without_csrf(session_client):
    assert session_client.get(PROBE_URL).status_code == 200


def test_a_session_without_a_csrf_token_is_refused_on_unsafe_methods(session_client):
    response = session_client.post(PROBE_URL, VALID, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_a_session_with_a_csrf_token_may_post(session_client):
    # The browsable API's page sets the CSRF cookie its forms send back.
    assert session_client.get(PROBE_URL, HTTP_ACCEPT="text/html").status_code == 200
    token = session_client.cookies["csrftoken"].value
    response = session_client.post(PROBE_URL, VALID, format="json", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200


def test_drf_create_token_makes_a_token_that_gets_in(db, anonymous):
    user = User.objects.create_user("integration-bot")
    user.user_permissions.set([_permission(CHANGE_CONTACTS)])
    call_command("drf_create_token", "integration-bot", stdout=io.StringIO())
    key = Token.objects.get(user=user).key
    anonymous.credentials(HTTP_AUTHORIZATION="Token %s" % key)
    assert anonymous.get(PROBE_URL).status_code == 200


def test_drf_create_token_reset_replaces_the_old_token(db, anonymous):
    User.objects.create_user("integration-bot")
    call_command("drf_create_token", "integration-bot", stdout=io.StringIO())
    old = Token.objects.get(user__username="integration-bot").key
    call_command("drf_create_token", "integration-bot", "--reset", stdout=io.StringIO())
    anonymous.credentials(HTTP_AUTHORIZATION="Token %s" % old)
    assert anonymous.get(PROBE_URL).status_code == 401


@pytest.mark.urls("crmsync_project.urls")
def test_a_session_without_a_csrf_token_cannot_select(session_client):
    body = {"contact_ids": [1], "crms": ["brevo"], "action": "select"}
    response = session_client.put("/api/v3/contacts/crm/select", body, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def v3_views():
    return {pattern.callback.cls for pattern in v3_urls.urlpatterns}


@pytest.mark.parametrize("view", sorted(v3_views(), key=lambda view: view.__name__))
def test_every_v3_view_asks_for_an_admin_permission_and_is_throttled(view):
    assert view.permission_classes and all(issubclass(p, HasModelPermissions) for p in view.permission_classes)
    assert any(issubclass(t, UserRateThrottle) for t in view.throttle_classes)
    assert view.authentication_classes[0] is TokenAuthentication  # no credentials: 401, not 403
