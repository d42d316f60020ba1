"""The field mappings' admin pages: who may see and edit them, the check against
the CRM's own field list (the sandbox's HubSpot over real sockets), the preview,
and the contacts queued again at once when a mapping is saved."""

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from contacts.models import ContactSync, ProcessingStatus, SyncStatus
from integrations.backends.hubspot import HubSpotBackend
from integrations.engine import payload_hash
from integrations.models import FieldMapping
from tests.conftest import _staff_user

pytestmark = pytest.mark.django_db

PAGE = reverse("admin:integrations_fieldmapping_crm", args=["hubspot"])
LIST = reverse("admin:integrations_fieldmapping_changelist")


def rows(*fields, **extra):
    """The POST data of a mapping page with `fields` as (target, kind, source, transform)."""
    data = {
        "mapping-TOTAL_FORMS": str(len(fields)),
        "mapping-INITIAL_FORMS": "0",
        "mapping-MIN_NUM_FORMS": "0",
        "mapping-MAX_NUM_FORMS": "1000",
    }
    for i, (target, kind, source, transform) in enumerate(fields):
        data.update(
            {
                "mapping-%d-target" % i: target,
                "mapping-%d-source_kind" % i: kind,
                "mapping-%d-source" % i: source,
                "mapping-%d-transform" % i: transform,
            }
        )
    return {**data, **extra}


def logged_in(client, *codenames, username="mapper"):
    client.force_login(_staff_user(username, *codenames))
    return client


@pytest.fixture
def editor(client, sandbox):
    return logged_in(client, "view_fieldmapping", "change_fieldmapping")


@pytest.fixture
def complete(make_contact, sandbox):
    """Three contacts Complete in HubSpot with the environment's mapping; one has no company."""
    made = []
    for email, company in (("ada@example.com", "Engines"), ("bob@example.com", "Looms"), ("cy@example.com", "")):
        contact = make_contact(email=email, first_name=email[:3], company=company)
        row = ContactSync.objects.get_or_create(contact=contact, crm="hubspot")[0]
        row.sync_status, row.processing_status = SyncStatus.COMPLETE, ProcessingStatus.COMPLETE
        row.synced_hash = payload_hash(HubSpotBackend().build_payload(contact))
        row.save()
        made.append(row)
    return made


class TestPermissions:
    def test_staff_without_the_mapping_permissions_see_nothing(self, client, sandbox):
        logged_in(client, "view_contact")
        assert client.get(LIST).status_code == 403
        assert client.get(PAGE).status_code == 403

    def test_staff_who_may_only_view_see_the_mapping_but_cannot_save_it(self, client, sandbox):
        logged_in(client, "view_fieldmapping")
        page = client.get(PAGE)
        assert page.status_code == 200
        assert b'name="_save"' not in page.content
        response = client.post(PAGE, rows(("company", "field", "company", "upper"), _save="1"))
        assert response.status_code == 403
        assert not FieldMapping.objects.exists()

    def test_the_list_names_each_crm_and_where_its_mapping_comes_from(self, editor, settings):
        settings.HUBSPOT_FIELD_MAP = "jobtitle=role"
        FieldMapping.objects.create(crm="brevo", target="FIRSTNAME", source="first_name", updated_by="ann")
        html = editor.get(LIST).content.decode()
        assert "From the environment: HUBSPOT_FIELD_MAP." in html
        assert "Saved in the admin: 1 field, overriding Brevo&#x27;s default field map." in html
        assert PAGE in html


class TestEditing:
    def test_without_a_saved_mapping_the_page_shows_the_environment_s(self, editor, settings):
        settings.HUBSPOT_FIELD_MAP = "jobtitle=role"
        html = editor.get(PAGE).content.decode()
        assert "receives HUBSPOT_FIELD_MAP from the environment" in html
        assert 'value="jobtitle"' in html and 'value="role"' in html
        assert '<option value="lifecyclestage">' in html  # the CRM's own field names, fetched

    def test_a_saved_mapping_says_it_overrides_the_environment(self, editor, settings, complete):
        settings.HUBSPOT_FIELD_MAP = "jobtitle=role"
        response = editor.post(PAGE, rows(("company", "field", "company", "upper"), _save="1"), follow=True)
        assert "This mapping overrides HUBSPOT_FIELD_MAP from the environment." in response.content.decode()
        assert list(FieldMapping.objects.values_list("target", "transform", "updated_by")) == [
            ("company", "upper", "mapper")
        ]

    def test_fields_the_crm_does_not_have_or_cannot_take_are_refused_and_nothing_is_saved(self, editor, complete):
        data = rows(
            ("nickname", "field", "first_name", "none"),
            ("hs_object_id", "constant", "1", "none"),
            ("createdate", "field", "company", "none"),
            _save="1",
        )
        html = editor.post(PAGE, data).content.decode()
        assert "HubSpot has no contact field &#x27;nickname&#x27;" in html
        assert "HubSpot has no contact field &#x27;hs_object_id&#x27;" in html  # read-only there
        assert "createdate is a datetime field in HubSpot" in html
        assert not FieldMapping.objects.exists()
        assert not LogEntry.objects.exists()

    def test_a_crm_that_cannot_be_reached_is_said_so_and_only_an_explicit_choice_saves_unchecked(
        self, client, settings, db
    ):
        settings.HUBSPOT_API_KEY = "pat-na1-00000000-0000-0000-0000-000000000000"
        settings.HUBSPOT_API_BASE_URL = "http://127.0.0.1:9"  # nothing listens there
        logged_in(client, "view_fieldmapping", "change_fieldmapping")
        data = rows(("company", "field", "company", "upper"), _save="1")
        html = client.post(PAGE, data).content.decode()
        assert "HubSpot's field list could not be fetched: Could not connect to HubSpot" in html
        assert "Nothing was saved" in html
        assert 'name="save_unchecked"' in html
        assert not FieldMapping.objects.exists()
        assert client.post(PAGE, {**data, "save_unchecked": "on"}).status_code == 302
        assert FieldMapping.objects.filter(crm="hubspot", target="company").exists()


class TestPreview:
    def test_the_payload_with_the_mapping_being_edited_before_it_is_saved(self, editor, complete):
        ada = complete[0].contact
        data = rows(
            ("company", "field", "company", "upper"),
            ("lifecyclestage", "constant", "lead", "none"),
            contact="ADA@example.com",
            _preview="1",
        )
        html = editor.post(PAGE, data).content.decode()
        assert "What HubSpot would receive for ada@example.com (id %d)" % ada.pk in html
        assert "&quot;company&quot;: &quot;ENGINES&quot;" in html
        assert "&quot;lifecyclestage&quot;: &quot;lead&quot;" in html
        assert "firstname" not in html.split('id="mapping-preview"')[1]  # not mapped any more
        assert not FieldMapping.objects.exists()

    def test_a_contact_chosen_by_id_and_one_that_does_not_exist(self, editor, complete):
        bob = complete[1].contact
        html = editor.post(PAGE, rows(("company", "field", "company", "lower"), contact=str(bob.pk), _preview="1"))
        assert "&quot;company&quot;: &quot;looms&quot;" in html.content.decode()
        html = editor.post(PAGE, rows(contact="nobody@example.com", _preview="1")).content.decode()
        assert "No contact has this id or email." in html


class TestSavingRequeues:
    def test_the_contacts_whose_payload_changes_are_queued_at_once_and_logged_once(self, editor, complete):
        # Same fields as HubSpot's defaults, but company in upper case: cy has none.
        data = rows(
            ("firstname", "field", "first_name", "none"),
            ("company", "field", "company", "upper"),
            _save="1",
        )
        response = editor.post(PAGE, data, follow=True)
        assert "2 contacts queued again" in response.content.decode()
        states = {row.contact.email: row.processing_status for row in ContactSync.objects.filter(crm="hubspot")}
        assert states == {
            "ada@example.com": ProcessingStatus.QUEUED,
            "bob@example.com": ProcessingStatus.QUEUED,
            "cy@example.com": ProcessingStatus.COMPLETE,
        }
        [entry] = LogEntry.objects.all()
        assert entry.object_repr == "Changed the mapping of 2 contacts for HubSpot"
        assert entry.user.username == "mapper"

    def test_saving_the_same_mapping_again_queues_nothing(self, editor, complete):
        # The defaults as they are (firstname, lastname, phone, company, website): nothing changes.
        defaults = rows(
            *[(t, "field", s, "none") for t, s in HubSpotBackend.default_field_map.items()],
            _save="1",
        )
        response = editor.post(PAGE, defaults, follow=True)
        assert "0 contacts queued again" in response.content.decode()
        assert ContactSync.objects.filter(processing_status=ProcessingStatus.QUEUED).count() == 0


def test_the_crm_states_list_links_to_the_field_mappings(client, sandbox):
    logged_in(client, "view_crmstate", "view_fieldmapping")
    html = client.get(reverse("admin:integrations_crmstate_changelist")).content.decode()
    assert 'href="%s"' % LIST in html
    logged_in(client, "view_crmstate", username="states-only")
    html = client.get(reverse("admin:integrations_crmstate_changelist")).content.decode()
    assert 'href="%s"' % LIST not in html


def test_a_crm_that_is_not_configured_or_unknown_has_no_mapping_page(client, db):
    logged_in(client, "view_fieldmapping", "change_fieldmapping")
    assert client.get(PAGE).status_code == 404  # no HUBSPOT_API_KEY, no sandbox
    assert client.get(reverse("admin:integrations_fieldmapping_crm", args=["nosuchcrm"])).status_code == 404
