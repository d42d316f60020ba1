"""Who may do what in the admin and on the enrichment endpoint, CSRF, and that no
configured secret reaches what people and machines read: logs, stored errors,
SyncAttempt rows, the admin, /healthz."""

import base64
import json
import logging
import uuid
from io import StringIO
from urllib.parse import quote, quote_plus

import pytest
import requests
import responses
from django.conf import settings as django_settings
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils.html import escape

from contacts import selection
from contacts.models import Contact, ContactSync, ProcessingStatus, SyncAttempt, SyncStatus
from integrations import engine
from integrations.backends.http import scrub_credentials
from integrations.backends.mautic import MauticBackend
from integrations.models import CRMState, Enrichment
from integrations.webhooks.crm import crm_webhook
from integrations.webhooks.n8n import enrichment_callback

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:contacts_contact_changelist")
SYNC_CHANGELIST = reverse("admin:contacts_contactsync_changelist")
ATTEMPT_CHANGELIST = reverse("admin:contacts_syncattempt_changelist")
STATE_CHANGELIST = reverse("admin:integrations_crmstate_changelist")
DASHBOARD = reverse("admin:crmsync_dashboard")
ENRICHMENT = reverse("integrations:n8n-enrichment")
INBOUND_SECRET = "inbound-SECURITY-secret-7c1d9e"
VIEW = ("view_contact", "view_contactsync", "view_syncattempt", "view_crmstate")
CHANGE = (*VIEW, "change_contact", "change_contactsync")
PERMISSIONS = {
    # Active, with every permission, but not staff: the admin is not for them.
    "non_staff": (*CHANGE, "pause_crm"),
    "staff_no_perms": (),
    "viewer": VIEW,
    "changer": CHANGE,
    "pauser": ("pause_crm",),
}
PERSONAS = ("anonymous", *PERMISSIONS)
S, P = SyncStatus, ProcessingStatus


@pytest.fixture
def as_persona(client):
    def login(persona, client=client):
        if persona != "anonymous":
            user = User.objects.create_user(username=persona, is_staff=persona != "non_staff")
            user.user_permissions.set(Permission.objects.filter(codename__in=PERMISSIONS[persona]))
            client.force_login(user)
        return client

    return login


@pytest.fixture
def brevo_configured(settings):
    settings.CRMSYNC_SANDBOX_URL = ""
    settings.BREVO_API_KEY = "xkeysib-SECURITY-permissions-key-0042"


def refused(response, how):
    if how == "login":
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), response
    elif how == 403:
        assert response.status_code == 403
    elif how == "not offered":
        # The changelist, without the action: nothing done, nothing said about it.
        assert response.status_code in (200, 302)
        assert not [m for m in get_messages(response.wsgi_request) if m.level_tag == "success"]
    else:
        raise AssertionError(how)


# Admin actions ---------------------------------------------------------------


def queue_for_crm(contact):
    data = {"action": "queue_for_crm", "post": "yes", "crms": ["brevo"]}
    return CHANGELIST, data, lambda: ContactSync.objects.filter(contact=contact, sync_status=S.SELECTED).exists()


def skip_for_crm(contact):
    data = {"action": "skip_for_crm", "post": "yes", "crms": ["brevo"]}
    return CHANGELIST, data, lambda: ContactSync.objects.filter(contact=contact, sync_status=S.SKIPPED).exists()


def retry_failed(contact):
    ContactSync.objects.create(contact=contact, crm="brevo", sync_status=S.ERROR, processing_status=P.ERROR)
    data = {"action": "retry_failed"}
    return CHANGELIST, data, lambda: ContactSync.objects.filter(contact=contact, sync_status=S.SELECTED).exists()


def retry_failed_syncs(contact):
    sync = ContactSync.objects.create(contact=contact, crm="brevo", sync_status=S.ERROR, processing_status=P.ERROR)
    data = {"action": "retry_failed_syncs", ACTION_CHECKBOX_NAME: [str(sync.pk)]}
    return SYNC_CHANGELIST, data, lambda: ContactSync.objects.filter(pk=sync.pk, sync_status=S.SELECTED).exists()


def delete_selected(contact):
    data = {"action": "delete_selected", "post": "yes"}
    return CHANGELIST, data, lambda: not Contact.objects.filter(pk=contact.pk).exists()


ACTIONS = {
    "queue_for_crm": queue_for_crm,
    "skip_for_crm": skip_for_crm,
    "retry_failed": retry_failed,
    "retry_failed_syncs": retry_failed_syncs,
    "delete_selected": delete_selected,
}
ACTION_EXPECTED = {
    "anonymous": "login",
    "non_staff": "login",
    "staff_no_perms": 403,
    "viewer": "not offered",
    "changer": "done",
    "pauser": 403,
}


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("action", ACTIONS)
def test_admin_actions_need_the_change_permission(as_persona, persona, action):
    contact = Contact.objects.create(email="ann@example.com")
    url, data, done = ACTIONS[action](contact)
    data = {"index": 0, ACTION_CHECKBOX_NAME: [str(contact.pk)], **data}
    expected = "not offered" if action == "delete_selected" and persona == "changer" else ACTION_EXPECTED[persona]

    response = as_persona(persona).post(url, data)

    if expected == "done":
        assert response.status_code == 302 and done()
    else:
        refused(response, expected)
        assert not done()


@pytest.mark.parametrize(
    "persona, expected",
    [
        ("anonymous", "login"),
        ("non_staff", "login"),
        ("staff_no_perms", 403),
        ("viewer", 200),
        ("changer", 200),
        ("pauser", 403),
    ],
)
def test_the_dashboard_needs_the_view_contact_sync_permission(as_persona, brevo_configured, persona, expected):
    response = as_persona(persona).get(DASHBOARD)
    if expected == 200:
        assert response.status_code == 200 and b'id="crm-brevo"' in response.content
    else:
        refused(response, expected)


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("change", ["pause", "resume"])
def test_pause_and_resume_need_the_pause_permission(as_persona, brevo_configured, persona, change):
    if change == "resume":
        CRMState.objects.pause_by_staff("brevo", "someone-else")
    expected = {"anonymous": "login", "non_staff": "login", "pauser": "done"}.get(persona, 403)

    response = as_persona(persona).post(reverse("admin:crmsync_%s" % change, args=["brevo"]), {"confirm": "yes"})

    paused = CRMState.objects.filter(crm="brevo", paused_at__isnull=False).exists()
    if expected == "done":
        assert response.status_code == 302 and response["Location"] == DASHBOARD
        assert paused is (change == "pause")
    else:
        refused(response, expected)
        assert paused is (change == "resume"), "the pause state must not change"


def test_a_get_or_an_unconfirmed_post_never_pauses(as_persona, brevo_configured):
    client, url = as_persona("pauser"), reverse("admin:crmsync_pause", args=["brevo"])
    assert client.get(url).status_code == 200  # the confirmation page
    client.post(url)
    assert not CRMState.objects.filter(paused_at__isnull=False).exists()


@pytest.mark.parametrize(
    "persona, expected",
    [
        ("anonymous", "login"),
        ("non_staff", "login"),
        ("staff_no_perms", 403),
        ("viewer", 200),
        ("changer", 200),
        ("pauser", 403),
    ],
)
def test_crm_state_admin_is_seen_with_the_view_permission(as_persona, persona, expected):
    CRMState.objects.create(crm="brevo", pause_reason="Brevo rejected the API key")
    response = as_persona(persona).get(STATE_CHANGELIST)
    if expected == 200:
        assert response.status_code == 200 and b"Brevo rejected the API key" in response.content
    else:
        refused(response, expected)


def test_crm_state_admin_is_read_only_even_for_a_superuser(admin_client):
    state = CRMState.objects.create(crm="brevo", pause_reason="as the engine wrote it")
    change = reverse("admin:integrations_crmstate_change", args=[state.pk])

    assert admin_client.get(change).status_code == 200
    assert admin_client.post(change, {"crm": "brevo", "pause_reason": "edited"}).status_code == 403
    assert admin_client.post(reverse("admin:integrations_crmstate_add"), {"crm": "hubspot"}).status_code == 403
    delete = reverse("admin:integrations_crmstate_delete", args=[state.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert list(CRMState.objects.values_list("crm", "pause_reason")) == [("brevo", "as the engine wrote it")]


# The enrichment endpoint -----------------------------------------------------


@pytest.fixture
def enrichment(settings, client):
    settings.N8N_INBOUND_SECRET = INBOUND_SECRET
    contact = Contact.objects.create(email="ann@example.com")
    body = json.dumps({"contact_id": contact.pk, "enrichment_id": "e1", "status": "failed"})

    def post(client=client, **headers):
        return client.post(ENRICHMENT, data=body, content_type="application/json", **headers)

    return post


def basic(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"HTTP_AUTHORIZATION": ""},
        {"HTTP_AUTHORIZATION": "Bearer"},
        {"HTTP_AUTHORIZATION": "Bearer "},
        {"HTTP_AUTHORIZATION": "Bearer wrong-secret"},
        {"HTTP_AUTHORIZATION": "Bearer " + INBOUND_SECRET.upper()},
        {"HTTP_AUTHORIZATION": "Bearer " + INBOUND_SECRET.swapcase()},
        {"HTTP_AUTHORIZATION": "Bearer " + INBOUND_SECRET[:-1]},
        {"HTTP_AUTHORIZATION": "Bearer " + INBOUND_SECRET + "x"},
        {"HTTP_AUTHORIZATION": "Bearer" + INBOUND_SECRET},
        {"HTTP_AUTHORIZATION": INBOUND_SECRET},
        {"HTTP_AUTHORIZATION": "Basic " + INBOUND_SECRET},
        {"HTTP_AUTHORIZATION": basic("n8n", INBOUND_SECRET)},
        {"HTTP_AUTHORIZATION": "Token " + INBOUND_SECRET},
        {"HTTP_X_N8N_SECRET": INBOUND_SECRET},
        {"QUERY_STRING": "token=" + INBOUND_SECRET},
    ],
    ids=[
        "missing",
        "empty",
        "scheme-only",
        "empty-token",
        "wrong",
        "upper-case",
        "swapped-case",
        "prefix",
        "longer",
        "no-space",
        "no-scheme",
        "basic-raw",
        "basic-encoded",
        "token-scheme",
        "other-header",
        "query-string",
    ],
)
def test_the_enrichment_endpoint_refuses_a_missing_or_wrong_secret(enrichment, headers):
    response = enrichment(**headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="crmsync"'
    assert not Enrichment.objects.exists()


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_enrichment_endpoint_takes_the_right_secret_whatever_the_schemes_case(enrichment, scheme):
    response = enrichment(HTTP_AUTHORIZATION="%s %s" % (scheme, INBOUND_SECRET))
    assert response.status_code == 200
    assert Enrichment.objects.count() == 1


def test_the_enrichment_endpoint_is_off_without_a_secret(enrichment, settings):
    settings.N8N_INBOUND_SECRET = ""
    assert enrichment(HTTP_AUTHORIZATION="Bearer ").status_code == 503
    assert not Enrichment.objects.exists()


# CSRF ------------------------------------------------------------------------


@pytest.fixture
def csrf_client(db):
    return Client(enforce_csrf_checks=True)


def with_token(client, page, data):
    client.get(page)
    return {**data, "csrfmiddlewaretoken": client.cookies["csrftoken"].value}


def test_an_admin_action_without_the_csrf_token_is_403(as_persona, csrf_client):
    client = as_persona("changer", client=csrf_client)
    contact = Contact.objects.create(email="ann@example.com")
    data = {
        "action": "queue_for_crm",
        "index": 0,
        ACTION_CHECKBOX_NAME: [str(contact.pk)],
        "post": "yes",
        "crms": ["brevo"],
    }

    assert client.post(CHANGELIST, data).status_code == 403
    assert not ContactSync.objects.exists()

    assert client.post(CHANGELIST, with_token(client, CHANGELIST, data)).status_code == 302
    assert ContactSync.objects.filter(contact=contact, sync_status=S.SELECTED).exists()


def test_a_pause_without_the_csrf_token_is_403(as_persona, csrf_client, brevo_configured):
    client = as_persona("pauser", client=csrf_client)
    url = reverse("admin:crmsync_pause", args=["brevo"])

    assert client.post(url, {"confirm": "yes"}).status_code == 403
    assert not CRMState.objects.filter(paused_at__isnull=False).exists()

    assert client.post(url, with_token(client, "/admin/", {"confirm": "yes"})).status_code == 302
    assert CRMState.objects.filter(crm="brevo", paused_at__isnull=False).exists()


def test_csrf_protection_stays_on():
    assert "django.middleware.csrf.CsrfViewMiddleware" in django_settings.MIDDLEWARE


def all_views(patterns):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from all_views(pattern.url_patterns)
        elif isinstance(pattern, URLPattern):
            yield pattern.callback


def test_the_enrichment_endpoint_and_crm_webhooks_are_the_only_views_exempt_from_csrf():
    """They are exempt because n8n authenticates with the bearer secret and each CRM
    signs its webhook calls (integrations.webhooks.crm), not with a session.
    DRF's views (the API) are exempt from Django's check because DRF makes it itself:
    SessionAuthentication enforces CSRF (tests/api/test_auth.py), a token needs none."""
    from rest_framework.authentication import SessionAuthentication, TokenAuthentication
    from rest_framework.views import APIView

    exempt = [view for view in all_views(get_resolver().url_patterns) if getattr(view, "csrf_exempt", False)]
    api_views = [view for view in exempt if issubclass(getattr(view, "cls", object), APIView)]
    assert set(exempt) - set(api_views) == {enrichment_callback, crm_webhook}
    for view in api_views:
        assert set(view.cls.authentication_classes) <= {TokenAuthentication, SessionAuthentication}, view.cls


def test_the_enrichment_endpoint_needs_its_secret_where_csrf_is_enforced(enrichment, csrf_client):
    assert enrichment(client=csrf_client).status_code == 401
    assert enrichment(client=csrf_client, HTTP_AUTHORIZATION="Bearer " + INBOUND_SECRET).status_code == 200


# Secrets ---------------------------------------------------------------------


def test_the_session_guard_sees_a_secret_in_any_log_record(secret_log_guard):
    """The guard in conftest.py fails the run when a configured secret is logged;
    this logs one on purpose, checks the guard saw it, then lets it go."""
    canary = "GUARD-CANARY-%s" % uuid.uuid4().hex
    secret_log_guard.collect("CANARY_API_KEY", canary)
    try:
        try:
            raise RuntimeError("the CRM refused api-key=%s" % canary)
        except RuntimeError:
            # django.request does not propagate to the root logger; the secret is
            # only in the traceback.
            logging.getLogger("django.request").error("Internal Server Error: /x", exc_info=True)  # noqa: G201 (as Django logs it)
        logging.getLogger("integrations.engine").warning("crm=brevo key %s", canary)

        leaks = secret_log_guard.leaks(canary)
        assert [text.splitlines()[0] for _test, _secret, text in leaks] == [
            "ERROR django.request Internal Server Error: /x",
            "WARNING integrations.engine crm=brevo key %s" % canary,
        ]
        assert {test for test, _secret, _text in leaks} == {
            "tests/test_security.py::test_the_session_guard_sees_a_secret_in_any_log_record"
        }
    finally:
        secret_log_guard.forget(canary)


@pytest.fixture
def token_in_environment(monkeypatch):
    monkeypatch.setenv("ACME_TOKEN", "acme-SECURITY-environment-token")


def test_the_session_guard_collects_the_secrets_tests_configure(secret_log_guard, settings, token_in_environment):
    from crm_sandbox.brevo import API_KEY as SANDBOX_KEY

    settings.ACME_API_KEY = "acme-SECURITY-settings-key"
    settings.ACME_PASSWORD = "short"
    settings.BREVO_API_KEY = SANDBOX_KEY

    assert {"acme-SECURITY-settings-key", "acme-SECURITY-environment-token"} <= secret_log_guard.secrets
    assert "short" not in secret_log_guard.secrets
    assert SANDBOX_KEY not in secret_log_guard.secrets, "sandbox placeholders are not secrets"


BREVO_KEY = "xkeysib-SECURITY-canary-brevo-3f9a8b7c6d5e4f30-Qw7Er"
HUBSPOT_TOKEN = "pat-eu1-SECURITY-canary-0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
MAUTIC_PASSWORD = "SECURITY/canary+mautic=password"
MAUTIC_CLIENT_SECRET = "SECURITY-canary/mautic+client=secret"
MAUTIC_ACCESS_TOKEN = "SECURITY-canary-mautic-access-token-5d6e7f"
N8N_SECRET = "SECURITY-canary-n8n-webhook-secret-8e9f0a"
MAUTIC = "https://mautic.example.test"
N8N_HOOK = "https://n8n.example.test/webhook/crmsync"
ENDPOINTS = {
    "brevo": "https://api.brevo.com/v3/contacts",
    "hubspot": "https://api.hubapi.com/crm/v3/objects/contacts/batch/upsert",
    "mautic": MAUTIC + "/api/contacts/batch/new",
    "n8n": N8N_HOOK,
}
NOT_ECHOED = {"user-agent", "accept-encoding", "accept", "connection", "content-length", "content-type"}


def echo(request):
    """What some APIs answer with an error: the request's own headers and body."""
    headers = "; ".join("%s: %s" % (k, v) for k, v in request.headers.items() if k.lower() not in NOT_ECHOED)
    body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
    return "Rejected. You sent %s and %s" % (headers, body[:300])


def answer_in_each_crms_own_words(mock, status, mautic_auth):
    def brevo(request):
        text = echo(request)
        return status, {}, json.dumps({"code": text, "message": text})

    def hubspot(request):
        text = echo(request)
        return status, {}, json.dumps({"status": "error", "message": text, "category": text})

    def mautic(request):
        # PHP's json_encode writes "/" as "\/".
        body = json.dumps({"errors": [{"code": status, "message": echo(request), "type": None}]})
        return status, {}, body.replace("/", "\\/")

    def n8n(request):
        return status, {"Content-Type": "text/plain"}, echo(request)

    for crm, callback in (("brevo", brevo), ("hubspot", hubspot), ("mautic", mautic), ("n8n", n8n)):
        mock.add_callback(responses.POST, ENDPOINTS[crm], callback=callback)
    if mautic_auth == "oauth2":
        mock.post(MAUTIC + "/oauth/v2/token", json={"access_token": MAUTIC_ACCESS_TOKEN, "expires_in": 3600})
    elif mautic_auth == "oauth2-token-refused":
        mock.add_callback(responses.POST, MAUTIC + "/oauth/v2/token", callback=mautic)


@pytest.fixture
def distinctive_secrets(settings):
    settings.CRMSYNC_SANDBOX_URL = ""
    settings.BREVO_API_KEY = BREVO_KEY
    settings.HUBSPOT_API_KEY = HUBSPOT_TOKEN
    settings.MAUTIC_BASE_URL = MAUTIC
    settings.N8N_WEBHOOK_URL = N8N_HOOK
    settings.N8N_WEBHOOK_SECRET = N8N_SECRET
    for crm in ("BREVO", "HUBSPOT"):
        setattr(settings, "%s_REQUESTS_PER_SECOND" % crm, 1000)
    for crm in ("BREVO", "N8N"):
        setattr(settings, "%s_CONCURRENCY" % crm, 1)
    MauticBackend._tokens.clear()
    yield settings
    MauticBackend._tokens.clear()


def written_forms(secret):
    """The secret as a page, a link or a JSON body may write it."""
    return {secret, escape(secret), quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}


def what_people_and_machines_read(admin_client, out):
    places = {
        "ContactSync.last_error": "\n".join(ContactSync.objects.values_list("last_error", flat=True)),
        "SyncAttempt.error": "\n".join(SyncAttempt.objects.values_list("error", flat=True)),
        "CRMState.pause_reason": "\n".join(CRMState.objects.values_list("pause_reason", flat=True)),
        "sync_crm output": out,
        "/healthz": Client().get("/healthz").content.decode(),
    }
    pages = [CHANGELIST, SYNC_CHANGELIST, ATTEMPT_CHANGELIST, STATE_CHANGELIST, DASHBOARD, "/admin/"]
    pages += [
        reverse("admin:contacts_contact_change", args=[pk]) for pk in Contact.objects.values_list("pk", flat=True)
    ]
    pages += [
        reverse("admin:contacts_contactsync_change", args=[pk])
        for pk in ContactSync.objects.values_list("pk", flat=True)
    ]
    pages += [
        reverse("admin:integrations_crmstate_change", args=[pk]) for pk in CRMState.objects.values_list("pk", flat=True)
    ]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        places[page] = response.content.decode()
    return places


@pytest.mark.parametrize("mautic_auth", ["basic", "oauth2", "oauth2-token-refused"])
@pytest.mark.parametrize("status", [400, 401, 500])
def test_no_secret_reaches_stored_errors_the_admin_healthz_or_logs_when_crms_echo_requests(
    distinctive_secrets, admin_client, caplog, status, mautic_auth
):
    settings = distinctive_secrets
    if mautic_auth == "basic":
        settings.MAUTIC_USERNAME, settings.MAUTIC_PASSWORD = "crmsync-api", MAUTIC_PASSWORD
    else:
        settings.MAUTIC_CLIENT_ID, settings.MAUTIC_CLIENT_SECRET = "3_crmsync", MAUTIC_CLIENT_SECRET
    caplog.set_level(logging.DEBUG)
    Contact.objects.bulk_create(Contact(email="p%d@example.com" % i, first_name="P%d" % i) for i in range(2))
    selection.select(Contact.objects.all(), ["brevo", "hubspot", "mautic", "n8n"])

    out, err = StringIO(), StringIO()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        answer_in_each_crms_own_words(mock, status, mautic_auth)
        call_command("sync_crm", stdout=out, stderr=err)
        sent = "\n".join(echo(call.request) for call in mock.calls)

    secrets = [BREVO_KEY, HUBSPOT_TOKEN, MAUTIC_PASSWORD, basic("crmsync-api", MAUTIC_PASSWORD)[6:], N8N_SECRET]
    secrets += [MAUTIC_CLIENT_SECRET, MAUTIC_ACCESS_TOKEN]
    carried = {secret for secret in secrets if any(form in sent for form in written_forms(secret))}
    expected = {BREVO_KEY, HUBSPOT_TOKEN, N8N_SECRET}
    expected |= {
        "basic": {basic("crmsync-api", MAUTIC_PASSWORD)[6:]},
        "oauth2": {MAUTIC_CLIENT_SECRET, MAUTIC_ACCESS_TOKEN},
        "oauth2-token-refused": {MAUTIC_CLIENT_SECRET},
    }[mautic_auth]
    assert carried == expected, "every CRM must have been called and answered with the credentials it got"
    told = set(ContactSync.objects.exclude(last_error="").values_list("crm", flat=True))
    told |= set(CRMState.objects.exclude(pause_reason="").values_list("crm", flat=True))
    assert told == {"brevo", "hubspot", "mautic", "n8n"}, "each CRM's refusal must be stored somewhere staff read"

    places = what_people_and_machines_read(admin_client, out.getvalue() + err.getvalue())
    places["log records"] = caplog.text
    leaks = [
        (place, secret[:12])
        for place, text in places.items()
        for secret in secrets
        if any(form in text for form in written_forms(secret))
    ]
    assert leaks == []
    if status != 500:  # 5xx messages hold the status line only, never the body
        assert "[Filtered]" in places["ContactSync.last_error"] + places["CRMState.pause_reason"]


@pytest.mark.parametrize(
    "written",
    [
        lambda s: s,
        lambda s: json.dumps(s)[1:-1].replace("/", "\\/"),
        lambda s: quote_plus(s),
        lambda s: quote(s, safe=""),
        # requests encodes Basic credentials as Latin-1.
        lambda s: "Basic " + base64.b64encode(("api:%s" % s).encode("latin-1")).decode(),
    ],
    ids=["as-is", "php-json", "form-encoded", "url-encoded", "basic-header"],
)
def test_an_answer_echoing_a_credential_in_any_spelling_is_scrubbed(settings, written):
    secret = 'SECURITY/canary+"quoted"=secret\u00e9'
    settings.CRMSYNC_SANDBOX_URL = ""
    settings.MAUTIC_BASE_URL, settings.MAUTIC_USERNAME, settings.MAUTIC_PASSWORD = MAUTIC, "api", secret
    backend = MauticBackend()
    sent = backend.session.prepare_request(requests.Request("POST", MAUTIC + "/api/contacts/batch/new"))
    response = requests.Response()
    response.status_code, response.reason = 400, "Bad key %s" % written(secret)
    response._content = ("error: %s." % written(secret)).encode()

    scrub_credentials(response, backend.credentials_sent(sent))

    assert response.text == "error: [Filtered]."
    assert response.reason == "Bad key [Filtered]"


def test_a_credential_that_cannot_be_sent_pauses_the_crm_without_its_text(distinctive_secrets, caplog):
    settings = distinctive_secrets
    settings.BREVO_API_KEY = " %s\n" % BREVO_KEY  # pasted with a space and a line break
    caplog.set_level(logging.DEBUG)
    contact = Contact.objects.create(email="ann@example.com")
    selection.select(Contact.objects.all(), ["brevo"])

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        engine.run("brevo")
        assert not mock.calls

    sync = ContactSync.objects.get(contact=contact)
    reason = CRMState.objects.get(crm="brevo").pause_reason
    assert "a credential in its settings has a space, a line break" in reason
    assert (sync.processing_status, sync.attempts) == (P.QUEUED, 0), "a settings problem costs no attempt"
    for text in (reason, sync.last_error, caplog.text, *SyncAttempt.objects.values_list("error", flat=True)):
        assert BREVO_KEY not in text
