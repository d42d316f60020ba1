"""POST /api/v3/contacts/bulk: upsert by email, by the CSV import's rules, per item."""

import pytest

from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus

from .conftest import CHANGE_CONTACTS, VIEW_SYNCS

URL = "/api/v3/contacts/bulk"


@pytest.fixture
def client(client_with):
    return client_with(CHANGE_CONTACTS)


def upsert(client, contacts, **extra):
    return client.post(URL, {"contacts": contacts, **extra}, format="json")


def results(response):
    assert response.status_code == 200, response.content
    return [(item["result"], item["email"]) for item in response.json()["results"]]


@pytest.mark.django_db
class TestPermissions:
    def test_anonymous_gets_401(self, anonymous):
        assert upsert(anonymous, [{"email": "a@example.com"}]).status_code == 401
        assert not Contact.objects.exists()

    def test_without_change_contacts_gets_403(self, client_with):
        assert upsert(client_with(VIEW_SYNCS), [{"email": "a@example.com"}]).status_code == 403
        assert not Contact.objects.exists()

    def test_with_change_contacts_gets_200(self, client):
        assert upsert(client, [{"email": "a@example.com"}]).status_code == 200


@pytest.mark.django_db
class TestUpsert:
    def test_creates_updates_and_leaves_unchanged(self, client, make_contact):
        ann = make_contact(email="ann@example.com", first_name="Ann", phone="+1 555", attributes={"tier": "gold"})
        make_contact(email="bob@example.com", first_name="Bob", website="https://bob.example")

        response = upsert(
            client,
            [
                {"email": "new@example.com", "first_name": "New", "attributes": {"Lead Score": "9"}},
                {"email": "ANN@example.com", "last_name": "Lee", "phone": "", "attributes": {"score": "3"}},
                {"email": "bob@example.com", "first_name": "Bob", "website": "bob.example"},
            ],
        )

        body = response.json()
        assert results(response) == [
            ("created", "new@example.com"),
            ("updated", "ann@example.com"),
            ("unchanged", "bob@example.com"),
        ]
        assert body["totals"] == {"created": 1, "updated": 1, "unchanged": 1, "rejected": 0}
        assert [item["index"] for item in body["results"]] == [0, 1, 2]
        new = Contact.objects.get(email="new@example.com")
        assert body["results"][0]["id"] == new.pk
        assert body["results"][1]["id"] == ann.pk
        assert new.attributes == {"lead_score": "9"}
        ann.refresh_from_db()
        # An empty value keeps what the contact has; attributes merge.
        assert (ann.first_name, ann.last_name, ann.phone) == ("Ann", "Lee", "+1 555")
        assert ann.attributes == {"tier": "gold", "score": "3"}

    def test_an_unchanged_contact_is_not_written(self, client, make_contact):
        bob = make_contact(email="bob@example.com", first_name="Bob")
        before = bob.updated_at

        assert results(upsert(client, [{"email": "bob@example.com", "first_name": "Bob"}])) == [
            ("unchanged", "bob@example.com")
        ]
        bob.refresh_from_db()
        assert bob.updated_at == before

    def test_null_means_keep(self, client, make_contact):
        make_contact(email="ann@example.com", company="Acme")
        response = upsert(client, [{"email": "ann@example.com", "company": None, "attributes": None}])
        assert results(response) == [("unchanged", "ann@example.com")]
        assert Contact.objects.get().company == "Acme"

    def test_duplicates_in_one_request_apply_in_order_to_one_contact(self, client):
        response = upsert(
            client,
            [
                {"email": "dup@example.com", "first_name": "First", "company": "Acme"},
                {"email": "other@example.com"},
                {"email": "DUP@example.com", "last_name": "Later"},
                {"email": "dup@example.com", "last_name": "Later"},
            ],
        )

        assert [result for result, _ in results(response)] == ["created", "created", "updated", "unchanged"]
        dup = Contact.objects.get(email="dup@example.com")
        assert (dup.first_name, dup.last_name, dup.company) == ("First", "Later", "Acme")
        ids = [item["id"] for item in response.json()["results"]]
        assert ids[0] == ids[2] == ids[3] == dup.pk
        assert Contact.objects.count() == 2

    @pytest.mark.parametrize(
        "spelling",
        ["zoe@exa\u0308mple.com", "zoe@xn--exmple-cua.com", "ZOE@EXÄMPLE.COM"],
        ids=["nfd", "punycode", "upper-case"],
    )
    def test_any_spelling_of_an_existing_email_updates_it(self, client, make_contact, spelling):
        zoe = make_contact(email="zoe@exämple.com")

        response = upsert(client, [{"email": spelling, "first_name": "Zoë"}])

        assert results(response) == [("updated", "zoe@exämple.com")]
        assert response.json()["results"][0]["id"] == zoe.pk
        assert Contact.objects.get().first_name == "Zoë"


@pytest.mark.django_db
class TestRejectedItems:
    def test_valid_items_are_applied_and_invalid_ones_change_nothing(self, client, make_contact):
        make_contact(email="kept@example.com", first_name="Kept")

        response = upsert(
            client,
            [
                {"email": "good@example.com", "first_name": "Good"},
                {"email": "not-an-email", "first_name": "Bad"},
                # One bad field rejects the whole item: its good first_name is not written.
                {"email": "kept@example.com", "first_name": "Changed", "website": "not a url"},
            ],
        )

        body = response.json()
        assert results(response) == [
            ("created", "good@example.com"),
            ("rejected", "not-an-email"),
            ("rejected", "kept@example.com"),
        ]
        assert body["totals"] == {"created": 1, "updated": 0, "unchanged": 0, "rejected": 2}
        assert body["results"][1]["errors"] == {"email": ["email 'not-an-email' is not a valid email address"]}
        assert list(body["results"][2]["errors"]) == ["website"]
        assert body["results"][1]["id"] is None
        assert set(Contact.objects.values_list("email", "first_name")) == {
            ("good@example.com", "Good"),
            ("kept@example.com", "Kept"),
        }

    @pytest.mark.parametrize(
        ("item", "field"),
        [
            ({"email": "a@example.com", "first_name": "A\x00B"}, "first_name"),
            ({"email": "a@exa\x00mple.com"}, "email"),
            ({"email": "a@example.com", "attributes": {"note": "x\x00"}}, "attributes"),
            ({"email": "a@example.com", "attributes": {"no\x00te": "x"}}, "attributes"),
        ],
        ids=["field", "email", "attribute-value", "attribute-name"],
    )
    def test_nul_characters_reject_the_item(self, client, item, field):
        response = upsert(client, [item])

        assert results(response)[0][0] == "rejected"
        assert "NUL" in " ".join(response.json()["results"][0]["errors"][field])
        assert not Contact.objects.exists()

    @pytest.mark.parametrize(
        ("item", "field", "reason"),
        [
            ({"email": 42}, "email", "Expected a string, got a number."),
            ({"email": "a@example.com", "first_name": ["A"]}, "first_name", "Expected a string, got a list."),
            ({"email": "a@example.com", "phone": True}, "phone", "Expected a string, got a boolean."),
            ({"email": "a@example.com", "attributes": ["x"]}, "attributes", "Expected an object"),
            ({"email": "a@example.com", "attributes": {"n": 1}}, "attributes", "n: expected a string, got a number."),
            ({"email": "a@example.com", "colour": "red"}, "colour", "Unknown field."),
            ({"email": "a@example.com", "attributes": {"email": "b@x.com"}}, "attributes", "is a contact field"),
            ({"first_name": "No email"}, "email", "email is required"),
            ({"email": "a@example.com", "last_name": "x" * 151}, "last_name", "151 characters long; the limit is 150"),
        ],
        ids=[
            "email-number",
            "list",
            "boolean",
            "attributes-list",
            "attribute-number",
            "unknown-field",
            "attribute-named-like-a-field",
            "no-email",
            "too-long",
        ],
    )
    def test_bad_values_reject_the_item_with_field_errors(self, client, item, field, reason):
        response = upsert(client, [item, {"email": "ok@example.com"}])

        first, second = response.json()["results"]
        assert first["result"] == "rejected"
        assert reason in " ".join(first["errors"][field])
        assert second["result"] == "created"
        assert list(Contact.objects.values_list("email", flat=True)) == ["ok@example.com"]

    @pytest.mark.parametrize(
        ("field", "json"),
        [
            ("email", '{"email": "\\ud800@example.com"}'),
            ("first_name", '{"email": "a@example.com", "first_name": "\\udfff"}'),
            ("attributes", '{"email": "a@example.com", "attributes": {"\\ud800": "x"}}'),
            ("\\ud800", '{"email": "a@example.com", "\\ud800": "x"}'),
        ],
    )
    def test_lone_surrogates_reject_the_item_and_the_answer_can_say_so(self, client, field, json):
        # JSON can spell half a surrogate pair; no database or UTF-8 answer can hold it.
        response = client.post(URL, '{"contacts": [%s]}' % json, content_type="application/json")

        result = response.json()["results"][0]
        assert result["result"] == "rejected"
        assert field in result["errors"]
        assert not Contact.objects.exists()

    @pytest.mark.parametrize("item", ["a@example.com", 7, None, ["a@example.com"]])
    def test_an_item_that_is_not_an_object_is_rejected(self, client, item):
        response = upsert(client, [item])

        result = response.json()["results"][0]
        assert result["result"] == "rejected"
        assert "Expected an object" in result["errors"]["non_field_errors"][0]


@pytest.mark.django_db
class TestBadRequests:
    def test_more_than_1000_items_is_400_and_writes_nothing(self, client):
        response = upsert(client, [{"email": "c%d@example.com" % i} for i in range(1001)])

        assert response.status_code == 400
        assert "no more than 1000" in response.json()["contacts"][0]
        assert not Contact.objects.exists()

    def test_1000_items_are_accepted(self, client):
        response = upsert(client, [{"email": "c%d@example.com" % i} for i in range(1000)])

        assert response.json()["totals"]["created"] == 1000
        assert Contact.objects.count() == 1000

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ([{"email": "a@example.com"}], "non_field_errors"),
            ("text", "non_field_errors"),
            ({}, "contacts"),
            ({"contacts": {"email": "a@example.com"}}, "contacts"),
            ({"contacts": []}, "contacts"),
            ({"contacts": [{"email": "a@example.com"}], "crms": "brevo"}, "crms"),
            ({"contacts": [{"email": "a@example.com"}], "crms": ["brevo\x00"]}, "crms"),
            ({"contacts": [{"email": "a@example.com"}], "contact": []}, "contact"),
        ],
        ids=["list", "string", "empty", "contacts-object", "no-contacts", "crms-string", "crms-nul", "unknown-key"],
    )
    def test_a_malformed_request_is_400_with_field_errors(self, client, body, field):
        response = client.post(URL, body, format="json")

        assert response.status_code == 400
        assert field in response.json()
        assert not Contact.objects.exists()

    def test_unknown_crm_is_400_listing_the_known_ones(self, client):
        response = upsert(client, [{"email": "a@example.com"}], crms=["brevo", "salesforce"])

        assert response.status_code == 400
        # Keyed by the position of the unknown name in the list.
        message = response.json()["crms"]["1"][0]
        assert "'salesforce'" in message and "brevo" in message and "hubspot" in message
        assert not Contact.objects.exists()

    def test_malformed_json_is_400(self, client):
        response = client.post(URL, '{"contacts": [', content_type="application/json")
        assert response.status_code == 400

    def test_a_body_nested_too_deeply_is_400(self, client):
        body = '{"contacts": [%s]}' % ("[" * 100_000 + "]" * 100_000)
        response = client.post(URL, body, content_type="application/json")
        assert response.status_code == 400

    def test_a_body_that_is_not_json_is_415(self, client):
        response = client.post(URL, "email=a@example.com", content_type="text/plain")
        assert response.status_code == 415


@pytest.mark.django_db
class TestSelect:
    def test_selects_every_accepted_contact_in_the_same_call(self, client, make_contact):
        make_contact(email="same@example.com", first_name="Same")
        bystander = make_contact(email="bystander@example.com")

        response = upsert(
            client,
            [{"email": "new@example.com"}, {"email": "same@example.com", "first_name": "Same"}, {"email": "bad"}],
            crms=["hubspot", "brevo"],
        )

        body = response.json()
        assert body["crms"] == ["brevo", "hubspot"]
        assert body["queued_count"] == 4
        rows = ContactSync.objects.all()
        assert set(rows.values_list("contact__email", "crm")) == {
            (email, crm) for email in ("new@example.com", "same@example.com") for crm in ("brevo", "hubspot")
        }
        assert set(rows.values_list("sync_status", "processing_status")) == {
            (SyncStatus.SELECTED, ProcessingStatus.QUEUED)
        }
        assert not rows.filter(contact=bystander).exists()

    def test_without_crms_nothing_is_queued(self, client):
        response = upsert(client, [{"email": "a@example.com"}])

        assert response.json()["queued_count"] == 0
        assert not ContactSync.objects.exists()


@pytest.mark.django_db
def test_set_based_queries_do_not_grow_with_the_batch(client, make_contact, django_assert_max_num_queries):
    for i in range(5):
        make_contact(email="old%d@example.com" % i)
    items = [{"email": "old%d@example.com" % i, "first_name": "Changed"} for i in range(5)]
    items += [{"email": "new%d@example.com" % i} for i in range(300)]
    # Auth, throttle and session work plus one read, one upsert and select's few statements.
    with django_assert_max_num_queries(20):
        response = upsert(client, items, crms=["brevo"])
    assert response.json()["totals"]["created"] == 300


def test_the_schema_documents_the_endpoint(client_with, db):
    response = client_with().get("/api/schema/", {"format": "json"})

    operation = response.json()["paths"]["/api/v3/contacts/bulk"]["post"]
    assert {"200", "400", "401", "403"} <= set(operation["responses"])


@pytest.mark.django_db
def test_an_updated_contact_already_synced_is_queued_again(
    client, make_contact, make_sync, settings, django_capture_on_commit_callbacks
):
    settings.BREVO_API_KEY = "test-key"
    renamed, same = make_contact(email="renamed@example.com"), make_contact(email="same@example.com")
    for contact in (renamed, same):
        # A hash no payload has: any contact passed to the change check is queued again.
        make_sync(
            contact,
            "brevo",
            sync_status=SyncStatus.COMPLETE,
            processing_status=ProcessingStatus.COMPLETE,
            synced_hash="stale",
        )

    with django_capture_on_commit_callbacks(execute=True):
        response = upsert(
            client, [{"email": "renamed@example.com", "first_name": "New"}, {"email": "same@example.com"}]
        )

    assert results(response) == [("updated", "renamed@example.com"), ("unchanged", "same@example.com")]
    statuses = dict(ContactSync.objects.values_list("contact__email", "processing_status"))
    assert statuses == {"renamed@example.com": ProcessingStatus.QUEUED, "same@example.com": ProcessingStatus.COMPLETE}
