"""Garbage in the admin's query strings, object ids and action posts, and in the
query strings of the dashboard and /healthz: a 400, a redirect, or the page without
the garbage, never a 5xx.

Every list registered on the project's admin site is walked, with every parameter
its filters take (read from its list_filter and date_hierarchy, so a new list or
filter is covered without editing this file), plus search, ordering, paging and
Django's own flags; every object page of every admin gets ids that are not ids.
Each walk collects every failing request and reports them together.
"""

import html
import re
from datetime import timedelta
from urllib.parse import unquote

import pytest
from django.contrib import admin
from django.contrib.admin import FieldListFilter, SimpleListFilter
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import get_fields_from_path
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.test import RequestFactory
from django.urls import URLPattern, reverse
from django.utils import timezone
from django_q.models import Failure, Schedule, Success

from contacts.models import AttemptOutcome, ContactSync, ProcessingStatus, SyncAttempt, SyncStatus
from integrations.models import CRMState, Enrichment, EnrichmentStatus

pytestmark = pytest.mark.django_db

GUARD = "crmsync_project.middleware.RefuseMalformedAddressMiddleware"
NUL = ("%00", "a%00b")
# Percent-encoded, sent exactly as written: a NUL; other control characters;
# bytes that are not UTF-8 (a lone surrogate, an overlong NUL, 0xff); SQL, LIKE
# and regex metacharacters, which no filter offers as a choice either; numbers out
# of every range; a long value; nothing at all.
HOSTILE_VALUES = (
    "%00",
    "%01%08%1b%7f",
    "%ed%a0%80%c0%80%ff",
    "%27%3B--%20DROP%20TABLE%20x%3B%25_%5C(%5B",
    "-1",
    "99999999999999999999999999",
    "x" * 3000,
    "",
)
# Changelist parameters every list reads, whatever its filters. Django reads the
# flags by their presence alone, so two values each say enough about them.
VALUED_PARAMETERS = ("q", "o", "p", "_to_field", "_changelist_filters")
FLAG_PARAMETERS = ("e", "all", "_popup", "_facets")
FLAG_VALUES = ("%00", "%01%27%ff")
NOT_IDS = ("%00", "a%00b", "%ed%a0%80%ff", "-1", "99999999999999999999999999", "nosuchid", "_00", "x" * 300)


def registered_admins():
    return sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)


def admin_label(item):
    return item[0]._meta.label


def changelist_url(model):
    return reverse("admin:%s_%s_changelist" % (model._meta.app_label, model._meta.model_name))


def superuser_request(url):
    request = RequestFactory().get(url)
    request.user = User.objects.get(username="hostile-admin")
    return request


def filter_parameters(model_admin, request):
    """The query parameters the list's filters take, as the changelist builds them,
    with lookups no filter offers."""
    model = model_admin.model
    parameters = []
    for list_filter in model_admin.get_list_filter(request):
        if isinstance(list_filter, type) and issubclass(list_filter, SimpleListFilter):
            parameters.append(list_filter.parameter_name)
            continue
        field_path, filter_class = (
            list_filter if isinstance(list_filter, (list, tuple)) else (list_filter, FieldListFilter.create)
        )
        field = get_fields_from_path(model, field_path)[-1]
        spec = filter_class(field, request, {}, model, model_admin, field_path=field_path)
        parameters.extend(spec.expected_parameters())
    if model_admin.date_hierarchy:
        parameters.extend("%s__%s" % (model_admin.date_hierarchy, part) for part in ("year", "month", "day"))
    # Django lets any lookup on the model's own fields through; a regex the
    # database cannot compile and a list of ids are two that no filter offers.
    text_field = next(
        f.name for f in model._meta.concrete_fields if f.get_internal_type() in ("CharField", "TextField")
    )
    parameters.extend(("%s__regex" % text_field, "%s__in" % model._meta.pk.name, "nosuchparameter"))
    return parameters


def without_guard(settings):
    settings.MIDDLEWARE = [name for name in settings.MIDDLEWARE if name != GUARD]


@pytest.fixture
def superuser_client(client, db):
    # No password: hashing one costs more than the requests of a test.
    client.force_login(User.objects.create_user("hostile-admin", is_staff=True, is_superuser=True))
    # A 500 comes back as a response to count, not as the view's exception.
    client.raise_request_exception = False
    return client


@pytest.fixture
def rows_in_every_list(make_contact, make_sync, superuser_client):
    now = timezone.now()
    for n in range(2):
        contact = make_contact(first_name="Ann%d" % n, company="Acme")
        make_sync(
            contact,
            "brevo",
            sync_status=SyncStatus.ERROR,
            processing_status=ProcessingStatus.ERROR,
            last_error="Brevo: invalid phone %d" % n,
        )
        make_sync(
            contact,
            "hubspot",
            sync_status=SyncStatus.SELECTED,
            processing_status=ProcessingStatus.QUEUED,
            next_attempt_at=now,
        )
        SyncAttempt.objects.create(
            contact=contact,
            crm="brevo",
            attempted_at=now - timedelta(days=n),
            outcome=AttemptOutcome.FAILED,
            error="invalid phone",
        )
        Enrichment.objects.create(enrichment_id="run-%d" % n, contact=contact, status=EnrichmentStatus.COMPLETE)
        Group.objects.create(name="group %d" % n)
        Schedule.objects.create(name="schedule %d" % n, func="math.floor", next_run=now)
        for model, success in ((Success, True), (Failure, False)):
            model.objects.create(
                id="task%d%s" % (n, success),
                name="task-%d" % n,
                func="math.floor",
                started=now,
                stopped=now,
                success=success,
                group="g%d" % n,
            )
    CRMState.objects.create(crm="brevo")
    CRMState.objects.create(crm="hubspot")


@pytest.fixture
def one_row_per_page(monkeypatch):
    """With two rows and one per page, the page number is read and used."""
    for model_admin in admin.site._registry.values():
        monkeypatch.setattr(model_admin, "list_per_page", 1)


def send(client, method, url, body=None):
    # On PostgreSQL a failed query aborts the test's transaction and would fail
    # every request after it: a request that fails is rolled back to a savepoint.
    savepoint = transaction.savepoint()
    if method == "GET":
        response = client.get(url)
    else:
        response = client.post(url, body or "", content_type="application/x-www-form-urlencoded")
    if response.status_code >= 500:
        transaction.savepoint_rollback(savepoint)
    else:
        transaction.savepoint_commit(savepoint)
    return response


class Walk:
    """Requests, and what went wrong with each, collected to report all at once."""

    def __init__(self, client):
        self.client = client
        self.problems = []
        self._rendered = {}

    def list_page(self, url, query_string):
        """A list page answers 400, redirects to itself flagged ?e=1, or shows a list."""
        what = "GET %s?%s" % (url, query_string[:120])
        response = send(self.client, "GET", "%s?%s" % (url, query_string))
        if response.status_code == 302 and response["Location"] == url + "?e=1":
            response = self._render_once(response["Location"])
            what += ", then ?e=1"
        if response.status_code == 200:
            if "cl" not in response.context and b"Database error" not in response.content:
                self.problems.append("%s: 200 without a list" % what)
        elif response.status_code != 400:
            self.problems.append("%s: %s" % (what, response.status_code))

    def page(self, method, url, body=None, allowed=(200, 302, 400, 403, 404)):
        response = send(self.client, method, url, body)
        if response.status_code not in allowed:
            self.problems.append("%s %s %s: %s" % (method, url[:160], (body or "")[:120], response.status_code))
        return response

    def _render_once(self, url):
        if url not in self._rendered:
            self._rendered[url] = send(self.client, "GET", url)
        return self._rendered[url]

    def assert_no_problems(self):
        assert not self.problems, "%d requests went wrong:\n%s" % (len(self.problems), "\n".join(self.problems))


def walk_every_parameter(client, model_admin, values, flag_values, repeated=()):
    url = changelist_url(model_admin.model)
    walk = Walk(client)
    for parameter in (*filter_parameters(model_admin, superuser_request(url)), *VALUED_PARAMETERS):
        for value in values:
            walk.list_page(url, "%s=%s" % (parameter, value))
        if repeated:
            walk.list_page(url, "&".join("%s=%s" % (parameter, value) for value in repeated))
    for flag in FLAG_PARAMETERS:
        for value in flag_values:
            walk.list_page(url, "%s=%s" % (flag, value))
    walk.assert_no_problems()


@pytest.mark.usefixtures("rows_in_every_list", "one_row_per_page")
@pytest.mark.parametrize("registered", registered_admins(), ids=admin_label)
def test_every_list_survives_garbage_in_every_parameter(superuser_client, registered):
    walk_every_parameter(
        superuser_client, registered[1], HOSTILE_VALUES, FLAG_VALUES, repeated=("1", "nosuchvalue", "")
    )


@pytest.mark.usefixtures("rows_in_every_list", "one_row_per_page")
@pytest.mark.parametrize("registered", registered_admins(), ids=admin_label)
def test_every_list_refuses_nul_itself_without_the_guard(superuser_client, registered, settings):
    """The middleware is the outer guard; each list still keeps a NUL from PostgreSQL."""
    without_guard(settings)
    walk_every_parameter(superuser_client, registered[1], NUL, NUL)


def object_urls(model, model_admin, object_id):
    """Every page of the admin that takes an object id (change, history, delete,
    a user's password...), read from its URL patterns."""
    prefix = "/admin/%s/%s/" % (model._meta.app_label, model._meta.model_name)
    for pattern in model_admin.get_urls():
        route = str(pattern.pattern)
        if isinstance(pattern, URLPattern) and "<" in route:
            yield prefix + re.sub(r"<[^>]+>", object_id, route)


@pytest.mark.parametrize("registered", registered_admins(), ids=admin_label)
def test_object_pages_survive_ids_that_are_not_ids(superuser_client, registered):
    model, model_admin = registered
    walk = Walk(superuser_client)
    for object_id in NOT_IDS:
        for url in object_urls(model, model_admin, object_id):
            walk.page("GET", url)
    for url in object_urls(model, model_admin, "nosuchid"):
        for query in (
            "_changelist_filters=crm%3D%2500%26p%3D-1%26o%3Dx",
            "_changelist_filters=%01%ff",
            "_popup=%01",
            "_to_field=%01",
            "p=-1",
        ):
            walk.page("GET", "%s?%s" % (url, query))
        walk.page("POST", url, "post=yes&_save=1")
    walk.assert_no_problems()


@pytest.mark.parametrize("registered", registered_admins(), ids=admin_label)
def test_object_pages_refuse_a_nul_id_themselves_without_the_guard(superuser_client, registered, settings):
    without_guard(settings)
    model, model_admin = registered
    walk = Walk(superuser_client)
    for object_id in NUL:
        for url in object_urls(model, model_admin, object_id):
            walk.page("GET", url)
            walk.page("POST", url, "post=yes&_save=1")
    walk.assert_no_problems()


def database_state():
    """Every registered model's row count, and where every contact sync stands."""
    counts = {model._meta.label: model._default_manager.count() for model in admin.site._registry}
    return counts, sorted(ContactSync.objects.values_list("pk", "sync_status", "processing_status", "attempts"))


@pytest.mark.usefixtures("rows_in_every_list")
@pytest.mark.parametrize("registered", registered_admins(), ids=admin_label)
def test_actions_on_a_garbage_selection_change_nothing(superuser_client, registered):
    model, model_admin = registered
    url = changelist_url(model)
    some_id = str(model._default_manager.values_list("pk", flat=True).first() or 1)
    actions = list(model_admin.get_actions(superuser_request(url)))
    before = database_state()
    walk = Walk(superuser_client)
    for action in actions:
        for selected in (*NOT_IDS, "1%20OR%201%3D1", ""):
            walk.page("POST", url, "action=%s&index=0&%s=%s" % (action, ACTION_CHECKBOX_NAME, selected))
    for action in ("nosuchaction", "%00", "%ff", ""):
        walk.page("POST", url, "action=%s&index=0&%s=%s" % (action, ACTION_CHECKBOX_NAME, some_id))
    walk.assert_no_problems()
    assert database_state() == before


@pytest.mark.usefixtures("rows_in_every_list")
@pytest.mark.parametrize("registered", registered_admins(), ids=admin_label)
def test_actions_survive_a_garbage_index_and_confirmation(superuser_client, registered):
    """With a real id these may run the action (Django reads a garbage index as the
    first action form's, and any select_across as ticked): no 5xx is asked."""
    model, model_admin = registered
    url = changelist_url(model)
    some_id = str(model._default_manager.values_list("pk", flat=True).first() or 1)
    walk = Walk(superuser_client)
    for action in model_admin.get_actions(superuser_request(url)):
        for index in ("abc", "-99", "99999999999999999999", "%00"):
            walk.page("POST", url, "action=%s&index=%s&%s=%s" % (action, index, ACTION_CHECKBOX_NAME, some_id))
        # The page of an action that asks first (which CRMs; delete them all?).
        for crms in ("%00", "nosuchcrm"):
            walk.page(
                "POST",
                url,
                "action=%s&%s=%s&select_across=%%01&post=yes&crms=%s" % (action, ACTION_CHECKBOX_NAME, some_id, crms),
            )
    walk.assert_no_problems()


ODD_ERRORS = (
    'HubSpot: Property "phone" is invalid: +44 (0)20 & 100% sure?',
    "Brevo: line one\nline two\ttabbed \x1b[31m coloured",
    "Mautic: " + "very long " * 80,
    "n8n: ünïcödé ✓ — 'quoted' \"twice\" <b>html</b> ;-- DROP TABLE x",
)


@pytest.fixture
def brevo_configured(settings):
    settings.CRMSYNC_SANDBOX_URL = ""
    settings.BREVO_API_KEY = "xkeysib-HOSTILE-dashboard-key-0042"


@pytest.mark.usefixtures("brevo_configured")
def test_dashboard_links_with_odd_error_messages_list_their_contacts(superuser_client, make_contact, make_sync):
    for n, error in enumerate(ODD_ERRORS):
        contact = make_contact(email="odd%d@example.com" % n)
        make_sync(
            contact, "brevo", sync_status=SyncStatus.ERROR, processing_status=ProcessingStatus.ERROR, last_error=error
        )
    page = superuser_client.get(reverse("admin:crmsync_dashboard"))
    assert page.status_code == 200
    links = [html.unescape(href) for href in re.findall(r'<a [^>]*href="([^"]+)"', page.content.decode())]
    error_links = [link for link in links if "sync_error=" in link]
    assert len(error_links) == len(ODD_ERRORS)
    for link in error_links:
        response = superuser_client.get(link)
        assert response.status_code == 200, link
        error = unquote(link.split("sync_error=")[1].replace("+", " "))
        assert [c.email for c in response.context["cl"].result_list] == [
            "odd%d@example.com" % ODD_ERRORS.index(error)
        ], link
    walk = Walk(superuser_client)
    for link in links:
        if link.startswith("/") and "sync_error=" not in link:
            walk.page("GET", link, allowed=(200, 302))
    walk.assert_no_problems()


@pytest.mark.usefixtures("brevo_configured")
def test_dashboard_and_site_pages_survive_garbage_query_strings(superuser_client):
    apps = sorted({model._meta.app_label for model in admin.site._registry})
    pages = [
        reverse("admin:crmsync_dashboard"),
        reverse("admin:index"),
        reverse("admin:login"),
        reverse("admin:password_change"),
        reverse("admin:jsi18n"),
        *("/admin/%s/" % app for app in apps),
    ]
    walk = Walk(superuser_client)
    for url in pages:
        for value in HOSTILE_VALUES:
            walk.page("GET", "%s?crm=%s&next=%s&%s=1" % (url, value, value, value))
    for value in HOSTILE_VALUES:
        walk.page(
            "GET", "/admin/autocomplete/?term=%s&app_label=%s&model_name=contact&field_name=%s" % (value, value, value)
        )
        walk.page(
            "GET", "/admin/autocomplete/?term=%s&app_label=contacts&model_name=contactsync&field_name=contact" % value
        )
        walk.page("GET", "/admin/r/%s/%s/" % (value or "1", value or "1"))
        for action in ("pause", "resume"):
            walk.page("POST", "/admin/dashboard/%s/%s/" % (value or "1", action))
    walk.assert_no_problems()


def test_healthz_ignores_its_query_string_or_refuses_it(client):
    for value in HOSTILE_VALUES:
        response = client.get("/healthz?crm=%s&%s=1&verbose=%s" % (value, value, value))
        expected = 400 if value in NUL or "%ff" in value else 200
        assert response.status_code == expected, value


def test_a_nul_or_non_utf8_address_is_refused_with_a_reason(superuser_client):
    for url, reason in (
        ("/admin/contacts/contact/?crm=%00", b"a NUL character (%00) in its query string"),
        ("/admin/contacts/contact/?q=caf%e9", b"bytes that are not UTF-8 text in its query string"),
        ("/admin/contacts/contact/%00/change/", b"a NUL character (%00) in its path"),
    ):
        response = superuser_client.get(url)
        assert response.status_code == 400
        assert response["Content-Type"] == "text/plain; charset=utf-8"
        assert reason in response.content and b"Remove it" in response.content


class TestWhatAListDoesWithAValueItDoesNotOffer:
    """Django's own answer to lookups it cannot use: the list without them, flagged
    ?e=1. Never an empty or unfiltered list that looks filtered."""

    @pytest.mark.parametrize(
        "query",
        [
            "crm=nosuchcrm",
            "crm=brevo&sync_status=zzz",
            "processing_status=selected",
            "sync_status=%01",
            "email__regex=(",
            "email=ann@example.com",
        ],
    )
    def test_contacts(self, superuser_client, query):
        response = superuser_client.get("/admin/contacts/contact/?" + query)
        assert (response.status_code, response["Location"]) == (302, "/admin/contacts/contact/?e=1")

    def test_the_list_says_why_it_shows_everything(self, superuser_client, make_contact):
        make_contact(email="ann@example.com")
        response = superuser_client.get("/admin/contacts/contact/?crm=nosuchcrm", follow=True)
        assert response.redirect_chain == [("/admin/contacts/contact/?e=1", 302)]
        assert [c.email for c in response.context["cl"].result_list] == ["ann@example.com"]
        assert [str(m) for m in response.context["messages"]] == [
            "The address of this list held a filter or value the list does not offer (a mistyped or "
            "outdated link?), so it shows all contacts."
        ]

    @pytest.mark.parametrize(
        "query",
        [
            "crm=nosuchcrm",
            "sync_status__exact=zzz",
            "processing_status__exact=selected",
            "last_error__icontains=x",
        ],
    )
    def test_contact_syncs(self, superuser_client, query):
        response = superuser_client.get("/admin/contacts/contactsync/?" + query)
        assert (response.status_code, response["Location"]) == (302, "/admin/contacts/contactsync/?e=1")

    @pytest.mark.parametrize(
        "query",
        [
            "attempted_at__year=9999",
            "attempted_at__year=9999&attempted_at__month=12",
            "attempted_at__year=2026&attempted_at__month=2&attempted_at__day=30",
            "attempted_at__year=99999999999999999999",
            "attempted_at__month=5",
        ],
    )
    def test_sync_attempts_by_date(self, superuser_client, query):
        response = superuser_client.get("/admin/contacts/syncattempt/?" + query)
        assert (response.status_code, response["Location"]) == (302, "/admin/contacts/syncattempt/?e=1")

    def test_the_values_offered_still_filter(self, superuser_client, make_contact, make_sync):
        ann, bob = make_contact(email="ann@example.com"), make_contact(email="bob@example.com")
        make_sync(ann, "brevo", sync_status=SyncStatus.ERROR, processing_status=ProcessingStatus.ERROR)
        make_sync(bob, "hubspot", sync_status=SyncStatus.ERROR, processing_status=ProcessingStatus.ERROR)
        SyncAttempt.objects.create(contact=ann, crm="brevo", attempted_at=timezone.now(), outcome=AttemptOutcome.FAILED)

        def listed(url):
            response = superuser_client.get(url)
            assert response.status_code == 200, url
            return [str(row) for row in response.context["cl"].result_list]

        assert listed("/admin/contacts/contact/?crm=brevo&sync_status=error") == ["ann@example.com"]
        assert listed("/admin/contacts/contactsync/?crm=hubspot&sync_status__exact=error") == [str(bob.syncs.get())]
        assert listed("/admin/contacts/contact/?processing_status=error&crm=hubspot&q=bob") == ["bob@example.com"]
        year = timezone.now().year
        assert len(listed("/admin/contacts/syncattempt/?attempted_at__year=%d&crm=brevo" % year)) == 1

    def test_an_action_on_an_id_that_is_not_one_says_so(self, superuser_client, make_contact):
        contact = make_contact()
        response = superuser_client.post(
            "/admin/contacts/contact/",
            {"action": "retry_failed", "index": "0", ACTION_CHECKBOX_NAME: [str(contact.pk), "1 OR 1=1"]},
            follow=True,
        )
        assert response.status_code == 200
        messages = [str(message) for message in response.context["messages"]]
        assert messages == [
            "The selection holds something that is not the id of a contact. Nothing was changed; "
            "select the items again."
        ]
