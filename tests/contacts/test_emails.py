"""One mailbox, one contact: the canonical email and every path that stores or
matches on it (the ORM, the CSV import, the admin)."""

import unicodedata
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.urls import reverse
from hypothesis import given, settings
from hypothesis import strategies as st

from contacts.emails import ascii_email, canonical_email, may_be_non_canonical
from contacts.models import Contact

NFC = "zoe@ex\u00e4mple.com"
NFD = "zoe@exa\u0308mple.com"
PUNYCODE = "zoe@xn--exmple-cua.com"
SPELLINGS = (NFC, NFD, PUNYCODE)


class TestCanonicalEmail:
    @pytest.mark.parametrize(
        "spelling", [NFC, NFD, PUNYCODE, "ZOE@XN--EXMPLE-CUA.COM", " Zoe@EXA\u0308MPLE.com ", "zoe@EX\u00c4MPLE.COM"]
    )
    def test_every_spelling_of_one_mailbox_is_one_text_with_a_unicode_domain(self, spelling):
        assert canonical_email(spelling) == NFC

    def test_the_result_is_nfc_even_where_lower_case_decomposes(self):
        # "İ".lower() is "i" and a combining dot: lower() can leave text that is not NFC.
        email = canonical_email("\u0130\u0301@example.com")
        assert unicodedata.is_normalized("NFC", email)
        assert email == unicodedata.normalize("NFC", "i\u0307\u0301@example.com")

    def test_idna_mapping_applies_to_the_domain(self):
        # Fullwidth letters and the ideographic full stop map to their plain forms (UTS 46).
        assert canonical_email("a@\uff25\uff38.de") == "a@ex.de"
        assert canonical_email("a@b\u00fccher\u3002example") == "a@b\u00fccher.example"

    @pytest.mark.parametrize(
        "invalid",
        ["a@b\u00fc_c.de", "a@xn--zz.com", "a@-b\u00fc-.de", "a@b\u200dc.com", "no-at-sign", "a@", "@x"],
    )
    def test_a_domain_idna_cannot_map_is_kept_as_nfc_lower_case(self, invalid):
        text = invalid.upper() if invalid.isascii() else invalid
        assert canonical_email(text) == unicodedata.normalize("NFC", invalid.lower())

    def test_ascii_domains_are_only_lower_cased(self):
        assert canonical_email("  Ann.Lee+X@Sub.Example.CO.UK ") == "ann.lee+x@sub.example.co.uk"

    def test_the_local_part_is_not_idna_mapped(self):
        assert canonical_email("\uff21nn@example.com") == "\uff41nn@example.com"

    def test_values_that_are_not_text_are_left_alone(self):
        assert canonical_email(None) is None

    @pytest.mark.parametrize("spelling", SPELLINGS)
    def test_ascii_email_gives_the_punycode_domain(self, spelling):
        assert ascii_email(spelling) == PUNYCODE

    def test_ascii_email_of_an_unmappable_domain_is_the_canonical_text(self):
        assert ascii_email("A@B\u00dc_C.de") == "a@b\u00fc_c.de"

    @settings(max_examples=300, deadline=None)
    @given(st.text() | st.emails() | st.builds("{}@{}".format, st.text(max_size=8), st.text(max_size=12)))
    def test_canonical_form_is_stable_and_ascii_form_maps_back(self, text):
        canonical = canonical_email(text)
        assert canonical_email(canonical) == canonical
        assert canonical_email(ascii_email(text)) == canonical
        assert may_be_non_canonical(text.strip().lower()) or canonical == text.strip().lower()


@pytest.mark.django_db
class TestOneContactPerMailbox:
    def test_the_orm_stores_the_canonical_form_and_finds_it_by_any_spelling(self):
        contact = Contact.objects.create(email=PUNYCODE)
        contact.refresh_from_db()
        assert contact.email == NFC
        for spelling in SPELLINGS:
            assert Contact.objects.get(email=spelling) == contact
            assert Contact.objects.filter(email__in=[spelling]).get() == contact

    def test_get_or_create_with_each_spelling_gives_one_contact(self):
        created = [Contact.objects.get_or_create(email=spelling)[1] for spelling in SPELLINGS]
        assert created == [True, False, False]
        assert Contact.objects.count() == 1

    @pytest.mark.parametrize("second", [NFD, PUNYCODE])
    def test_the_database_refuses_a_second_spelling(self, second):
        Contact.objects.create(email=NFC)
        with pytest.raises(IntegrityError), transaction.atomic():
            Contact.objects.create(email=second)

    def test_bulk_upsert_matches_on_the_canonical_form(self):
        Contact.objects.create(email=NFC, first_name="Zoe")
        Contact.objects.bulk_create(
            [Contact(email=PUNYCODE, first_name="Zoé")],
            update_conflicts=True,
            unique_fields=["email"],
            update_fields=["first_name"],
        )
        assert list(Contact.objects.values_list("email", "first_name")) == [(NFC, "Zoé")]


@pytest.mark.django_db
def test_csv_import_of_three_spellings_makes_one_contact(tmp_path):
    path = tmp_path / "contacts.csv"
    rows = "email,first_name,company\n%s,Zoe,\n%s,,Acme\n%s,Zoé,\n" % SPELLINGS
    path.write_text(rows, encoding="utf-8")
    out, err = StringIO(), StringIO()
    call_command("import_contacts", str(path), stdout=out, stderr=err)
    assert list(Contact.objects.values_list("email", "first_name", "company")) == [(NFC, "Zoé", "Acme")]
    assert "Created 1, updated 2, unchanged 0, rejected 0 of 3 rows" in out.getvalue()

    path.write_text("email,phone\n%s,+44 1\n" % NFD, encoding="utf-8")
    call_command("import_contacts", str(path), stdout=out, stderr=err)
    assert list(Contact.objects.values_list("email", "first_name", "phone")) == [(NFC, "Zoé", "+44 1")]
    assert err.getvalue() == ""


ADMIN_FORM = {
    "first_name": "",
    "last_name": "",
    "phone": "",
    "company": "",
    "website": "",
    "source_url": "",
    "attributes": "{}",
    "syncs-TOTAL_FORMS": "0",
    "syncs-INITIAL_FORMS": "0",
    "syncs-MIN_NUM_FORMS": "0",
    "syncs-MAX_NUM_FORMS": "1000",
}


@pytest.mark.django_db
def test_admin_add_form_stores_the_canonical_form_and_refuses_another_spelling(admin_client):
    url = reverse("admin:contacts_contact_add")
    response = admin_client.post(url, {**ADMIN_FORM, "email": NFD})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Contact.objects.get().email == NFC
    for spelling in (NFC, PUNYCODE):
        response = admin_client.post(url, {**ADMIN_FORM, "email": spelling})
        assert response.status_code == 200
        assert "Contact with this Email already exists." in str(response.context["adminform"].form.errors)
    assert Contact.objects.count() == 1


@pytest.mark.django_db
def test_admin_change_form_refuses_a_spelling_of_another_contacts_mailbox(admin_client):
    Contact.objects.create(email=NFC)
    other = Contact.objects.create(email="other@example.com")
    url = reverse("admin:contacts_contact_change", args=[other.pk])
    response = admin_client.post(url, {**ADMIN_FORM, "email": PUNYCODE})
    assert response.status_code == 200
    assert "Contact with this Email already exists." in str(response.context["adminform"].form.errors)
    other.refresh_from_db()
    assert other.email == "other@example.com"
