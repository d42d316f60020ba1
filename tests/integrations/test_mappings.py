"""Staff mappings: the backends send them over the environment's field maps, the
loader reads them from the database, and each CRM's own field list (fetched with
crm_fields, mocked here and answered by the sandbox) checks them."""

import pytest
import responses
from django.utils import timezone

from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus
from integrations.backends.base import FROM_ATTRIBUTE, FROM_CONSTANT, FROM_FIELD, MappedField
from integrations.backends.brevo import BrevoBackend
from integrations.backends.hubspot import HubSpotBackend
from integrations.backends.mautic import MauticBackend
from integrations.backends.n8n import N8nBackend
from integrations.engine import payload_hash
from integrations.mappings import field_problem, mapping_for, use_mapping
from integrations.models import FieldMapping
from integrations.resync import requeue_drifted
from integrations.workers import preview

from .conftest import unsaved_contact

HUBSPOT_PROPERTIES = "https://api.hubapi.com/crm/v3/properties/contacts"


@pytest.fixture
def hubspot(settings):
    settings.HUBSPOT_API_KEY = "pat-na1-00000000-0000-0000-0000-000000000000"
    settings.HUBSPOT_FIELD_MAP = "jobtitle=role"
    return HubSpotBackend()


def ada(**fields):
    defaults = {
        "email": "ada@example.com",
        "first_name": "  ada  ",
        "company": "Analytical Engines",
        "phone": "+44 (20) 7946-0000",
        "attributes": {"role": "Engineer", "tier": 3},
    }
    return unsaved_contact(**{**defaults, **fields})


def properties(backend, contact):
    return backend.build_payload(contact)["properties"]


class TestBackendsSendTheMapping:
    def test_the_environment_field_map_applies_without_a_staff_mapping(self, hubspot):
        sent = properties(hubspot, ada())
        assert sent["firstname"] == "ada"
        assert sent["jobtitle"] == "Engineer"

    def test_a_staff_mapping_replaces_the_environment_field_maps(self, hubspot):
        hubspot.mapping = [
            MappedField("firstname", "first_name", FROM_FIELD, "title"),
            MappedField("phone", "phone", FROM_FIELD, "digits_only"),
            MappedField("hs_tier", "tier", FROM_ATTRIBUTE),
            MappedField("lifecyclestage", "lead", FROM_CONSTANT, "upper"),
        ]
        assert properties(hubspot, ada()) == {
            "email": "ada@example.com",
            "firstname": "Ada",
            "phone": "442079460000",
            "hs_tier": 3,
            "lifecyclestage": "LEAD",
        }

    def test_a_consent_field_in_a_staff_mapping_is_never_sent(self, hubspot):
        hubspot.mapping = [
            MappedField("hs_email_optout", "false", FROM_CONSTANT),
            MappedField("company", "company"),
        ]
        assert "hs_email_optout" not in properties(hubspot, ada())
        assert hubspot.field_map() == {"company": "company"}

    def test_an_attributes_key_named_like_a_contact_field_reads_the_attributes(self, hubspot):
        hubspot.mapping = [MappedField("company", "company", FROM_ATTRIBUTE)]
        assert "company" not in properties(hubspot, ada())
        assert properties(hubspot, ada(attributes={"company": "Other"}))["company"] == "Other"

    def test_n8n_sends_a_staff_mapping_as_fields_and_nothing_more_without_one(self, settings):
        settings.N8N_WEBHOOK_URL = "https://n8n.example.com/webhook/x"
        n8n = N8nBackend()
        assert "fields" not in n8n.build_payload(ada())
        n8n.mapping = [MappedField("Full name", "first_name", FROM_FIELD, "strip")]
        assert n8n.build_payload(ada())["fields"] == {"Full name": "ada"}


class TestCRMFieldLists:
    @responses.activate
    def test_hubspot_lists_writable_properties_with_their_types(self, hubspot):
        read_only = {"readOnlyValue": True}
        results = [
            {"name": "firstname", "type": "string", "modificationMetadata": {"readOnlyValue": False}},
            {"name": "NumEmployees", "type": "number"},
            {"name": "hs_object_id", "type": "number", "modificationMetadata": read_only},
        ]
        responses.get(HUBSPOT_PROPERTIES, json={"results": results})
        assert hubspot.crm_fields() == {"firstname": "string", "numemployees": "number"}

    @responses.activate
    def test_brevo_lists_attributes_a_contact_can_be_given(self, settings):
        settings.BREVO_API_KEY = "xkeysib-" + "0" * 64
        attributes = [
            {"name": "FIRSTNAME", "category": "normal", "type": "text"},
            {"name": "birthday", "category": "normal", "type": "date"},
            {"name": "PLAN", "category": "category", "enumeration": [{"value": 1, "label": "Gold"}]},
            {"name": "TOTAL", "category": "calculated", "type": "float"},
        ]
        responses.get("https://api.brevo.com/v3/contacts/attributes", json={"attributes": attributes})
        assert BrevoBackend().crm_fields() == {"FIRSTNAME": "text", "BIRTHDAY": "date", "PLAN": "category"}

    @responses.activate
    def test_mautic_reads_every_page_of_its_fields(self, settings):
        settings.MAUTIC_BASE_URL = "https://mautic.example.com"
        settings.MAUTIC_USERNAME, settings.MAUTIC_PASSWORD = "api", "mautic-password-for-tests"
        url = "https://mautic.example.com/api/fields/contact"
        first = [{"alias": "firstname", "type": "text"}, {"alias": "points", "type": "number"}]
        responses.get(
            url,
            match=[responses.matchers.query_param_matcher({"start": "0", "limit": "200"})],
            json={"total": 3, "fields": first},
        )
        responses.get(
            url,
            match=[responses.matchers.query_param_matcher({"start": "2", "limit": "200"})],
            json={"total": 3, "fields": {"9": {"alias": "optin", "type": "boolean"}}},
        )
        assert MauticBackend().crm_fields() == {"firstname": "text", "points": "number", "optin": "boolean"}

    def test_n8n_takes_any_field(self, settings):
        settings.N8N_WEBHOOK_URL = "https://n8n.example.com/webhook/x"
        assert N8nBackend().crm_fields() is None


class TestFieldProblems:
    FIELDS = {"firstname": "string", "numemployees": "number", "closedate": "date", "optin": "bool"}

    @pytest.mark.parametrize(
        "field",
        [
            MappedField("FirstName", "first_name", FROM_FIELD, "title"),
            MappedField("numemployees", "staff", FROM_ATTRIBUTE),
            MappedField("numemployees", "phone", FROM_FIELD, "digits_only"),
            MappedField("numemployees", "12", FROM_CONSTANT),
            MappedField("closedate", "2026-01-31", FROM_CONSTANT),
            MappedField("optin", "TRUE", FROM_CONSTANT, "lower"),
        ],
    )
    def test_accepted(self, hubspot, field):
        assert field_problem(hubspot, field, self.FIELDS) == ""

    @pytest.mark.parametrize(
        ("field", "says"),
        [
            (MappedField("nickname", "first_name"), "HubSpot has no contact field 'nickname'"),
            (MappedField("numemployees", "company"), "numemployees is a number field in HubSpot"),
            (MappedField("numemployees", "many", FROM_CONSTANT), "'many' is not a number"),
            (MappedField("closedate", "31/01/2026", FROM_CONSTANT), "is not a date"),
            (MappedField("optin", "yes", FROM_CONSTANT), "is not a boolean"),
            (MappedField("hs_email_optout", "false", FROM_CONSTANT), "holds a person's consent"),
            (MappedField("email", "first_name"), "always sent from the contact's email"),
            (MappedField("firstname", "nickname", FROM_FIELD), "'nickname' is not a contact field"),
            (MappedField(" firstname", "first_name"), "is not a field name"),
        ],
    )
    def test_refused(self, hubspot, field, says):
        assert says in field_problem(hubspot, field, self.FIELDS)

    def test_n8n_checks_the_form_only(self, settings):
        settings.N8N_WEBHOOK_URL = "https://n8n.example.com/webhook/x"
        n8n = N8nBackend()
        assert field_problem(n8n, MappedField("Anything at all", "x", FROM_CONSTANT), None) == ""
        assert "is not a field name" in field_problem(n8n, MappedField("a\nb", "x", FROM_CONSTANT), None)


@pytest.mark.django_db
class TestLoader:
    def test_no_rows_is_no_mapping(self, hubspot):
        assert mapping_for("hubspot") is None
        assert use_mapping(hubspot).mapping is None

    def test_rows_in_their_order(self, hubspot):
        FieldMapping.objects.create(crm="hubspot", target="company", source="company", position=1)
        FieldMapping.objects.create(
            crm="hubspot", target="firstname", source="first_name", transform="upper", position=0
        )
        FieldMapping.objects.create(crm="brevo", target="FIRSTNAME", source="first_name")
        assert mapping_for("hubspot") == [
            MappedField("firstname", "first_name", FROM_FIELD, "upper"),
            MappedField("company", "company", FROM_FIELD, "none"),
        ]
        assert properties(use_mapping(hubspot), ada()) == {
            "email": "ada@example.com",
            "firstname": "ADA",
            "company": "Analytical Engines",
        }


@pytest.mark.django_db
class TestEverythingThatBuildsPayloadsUsesTheMapping:
    @pytest.fixture
    def synced(self, hubspot):
        contact = Contact.objects.create(email="ada@example.com", first_name="Ada", company="AE")
        row = ContactSync.objects.get_or_create(contact=contact, crm="hubspot")[0]
        row.sync_status, row.processing_status = SyncStatus.COMPLETE, ProcessingStatus.COMPLETE
        row.synced_hash = payload_hash(HubSpotBackend().build_payload(contact))
        row.save()
        return row

    def test_the_dry_run_preview(self, synced):
        FieldMapping.objects.create(crm="hubspot", target="company", source="AE Ltd", source_kind="constant")
        ContactSync.objects.filter(pk=synced.pk).update(
            sync_status=SyncStatus.SELECTED, processing_status=ProcessingStatus.QUEUED, next_attempt_at=timezone.now()
        )
        [(_contact, payload)] = preview(HubSpotBackend, 10)
        assert payload["properties"] == {"email": "ada@example.com", "company": "AE Ltd"}

    def test_the_drift_sweep(self, synced):
        assert requeue_drifted("hubspot") == {"hubspot": 0}
        FieldMapping.objects.create(crm="hubspot", target="company", source="company", transform="upper")
        assert requeue_drifted("hubspot") == {"hubspot": 1}
        synced.refresh_from_db()
        assert synced.processing_status == ProcessingStatus.QUEUED


class TestTheSandboxAnswersFieldLists:
    """crm_fields over real sockets: each emulated CRM lists its fields with types."""

    def test_hubspot(self, sandbox):
        backend = HubSpotBackend()
        backend.request("POST", "/crm/v3/properties/contacts", json={**NUMBER_PROPERTY, "name": "seats"})
        fields = backend.crm_fields()
        assert fields["firstname"] == "string"
        assert fields["lifecyclestage"] == "enumeration"
        assert fields["seats"] == "number"
        assert "hs_object_id" not in fields  # read-only

    def test_brevo(self, sandbox):
        backend = BrevoBackend()
        backend.request("POST", "/contacts/attributes/normal/birthday", json={"type": "date"})
        fields = backend.crm_fields()
        assert fields["FIRSTNAME"] == "text"
        assert fields["BIRTHDAY"] == "date"

    def test_mautic(self, sandbox):
        backend = MauticBackend()
        backend.request(
            "POST", "/api/fields/contact/new", json={"label": "Points", "alias": "points", "type": "number"}
        )
        fields = backend.crm_fields()
        assert fields["firstname"] == "text"
        assert fields["phone"] == "tel"
        assert fields["points"] == "number"


NUMBER_PROPERTY = {"label": "Seats", "type": "number", "fieldType": "number", "groupName": "contactinformation"}
