"""Property-based tests (hypothesis): contacts with arbitrary unicode, control
characters, very long values, odd but valid emails and invalid ones.

Payload building never fails with anything but InvalidContact and always gives
strict JSON; against the sandbox, invalid records end in Error with the CRM's own
words while their valid neighbours in the same batch sync."""

import itertools
import json
from io import StringIO

import pytest
import requests
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.validators import validate_email
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from contacts import selection
from contacts.emails import ascii_email, canonical_email
from contacts.models import Contact, ContactSync, ProcessingStatus, SyncAttempt, SyncStatus
from crm_sandbox import brevo as brevo_sandbox
from crm_sandbox.brevo import MAX_ATTRIBUTE_LENGTH, normalised_sms
from crm_sandbox.hubspot import MAX_VALUE_LENGTH
from integrations.engine import payload_hash
from integrations.exceptions import InvalidContact
from integrations.registry import get_backend_class

# Property tests: hundreds of examples, many through the sandbox.
pytestmark = pytest.mark.slow

CRM_NAMES = ("brevo", "hubspot", "mautic", "n8n")
# What each backend maps beyond its defaults: an attribute that can be very long,
# and attribute values of every JSON type.
FIELD_MAPS = {
    "brevo": "NOTES=notes,SCORE=score,TAGS=tags",
    "hubspot": "notes=notes,score=score,tags=tags",
    "mautic": "notes=notes,score=score,tags=tags",
    "n8n": "",
}
PURE = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ROUND_TRIPS = settings(
    max_examples=10,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def is_valid_email(email):
    try:
        validate_email(email)
    except ValidationError:
        return False
    return True


def sent_email(crm, email):
    """The form of an email a CRM is sent (docs/crm-api.md): the punycode domain,
    except to n8n, which gets the canonical Unicode form."""
    return canonical_email(email) if crm == "n8n" else ascii_email(email)


def crm_takes(crm, email):
    """Valid, and for a CRM sent the punycode form, with a domain that has one."""
    return is_valid_email(email) and (crm == "n8n" or sent_email(crm, email).rpartition("@")[2].isascii())


# Strategies

# Control characters, format characters (zero-width, BOM), line and paragraph
# separators, non-characters, combining marks, emoji.
TRICKY = (
    "\x01\x07\x08\t\n\r\x0b\x0c\x1b\x1f\x7f\x85\xa0\u00ad\u200b\u200d\u2028\u2029\u202e\ufeff\ufffe\uffff\u0301💥👩‍👩‍👧"
)


def characters(storable):
    """Any code point; `storable`: none a database refuses (NUL, lone surrogates)."""
    excluded = ["Cs"] if storable else []
    return st.one_of(
        st.characters(exclude_categories=excluded, exclude_characters="\x00" if storable else ""),
        st.sampled_from(TRICKY),
        st.characters(categories=["Cc"], exclude_characters="\x00" if storable else ""),
        *([] if storable else [st.characters(categories=["Cs"])]),
    )


def texts(storable=False, max_size=40):
    return st.text(characters(storable), max_size=max_size)


def long_texts(storable=False, around=(MAX_ATTRIBUTE_LENGTH, MAX_VALUE_LENGTH)):
    """Values near each CRM's length limit, padded with text that strip() may remove."""
    return st.builds(
        lambda pad, body, length, tail: pad + (body * length)[:length] + tail,
        texts(storable, 3),
        st.text(characters(storable), min_size=1, max_size=3),
        st.one_of(st.integers(0, 300), *[st.integers(limit - 3, limit + 3) for limit in around]),
        texts(storable, 3),
    )


def json_values(storable=False):
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63),
        # NaN and infinity are not JSON; a database's JSON column refuses them.
        st.floats(allow_nan=False, allow_infinity=False),
        texts(storable),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts(storable, 8), inner, max_size=3),
        max_leaves=6,
    )


ODD_VALID_EMAILS = st.sampled_from(
    [
        "o'reilly@example.com",
        "first.last+tag@sub.example.co.uk",
        "x@bücher.example",
        "user@xn--bcher-kva.example",
        "a@[127.0.0.1]",
        "user@localhost",
        "!#$%&'*+/=?^_`{|}~-@example.com",
        "%s@example.com" % ("l" * 64),
    ]
)


def invalid_emails(storable=False):
    patterns = st.sampled_from(
        [
            "no-at-sign.example.com",
            "two@@example.com",
            "trailing-dot@example.com.",
            ".leading@example.com",
            "dot..dot@example.com",
            "space in@example.com",
            "jürgen@example.com",
            "tab\there@example.com",
            "bell\x07@example.com",
            "@example.com",
            "user@",
            "user@-bad-.com",
            "user@exa mple.com",
            "%s@example.com" % ("l" * 65),
        ]
    )
    return st.one_of(patterns, texts(storable, 30)).filter(lambda email: not is_valid_email(email.strip().lower()))


def emails(storable=False):
    return st.one_of(st.emails(), ODD_VALID_EMAILS, invalid_emails(storable))


# Phone numbers written every way: country prefixes, punctuation, digits that are
# not ASCII (Arabic-Indic, superscript, fullwidth), and any text at all.
ASCII_DIGITS = st.sampled_from("0123456789")
PHONES = st.one_of(
    st.builds(
        lambda prefix, first, rest, separator: prefix + first + separator.join(rest),
        st.sampled_from(["+", "00", "0", ""]),
        st.sampled_from("123456789"),
        st.lists(ASCII_DIGITS, min_size=6, max_size=13)
        | st.lists(ASCII_DIGITS | st.characters(categories=["Nd", "No"]), min_size=6, max_size=13),
        st.sampled_from(["", " ", "-", ".", "/", "()"]),
    ),
    texts(max_size=20),
)


@st.composite
def contacts(draw):
    """An unsaved Contact: any email, any text in any field, attributes of any JSON."""
    attributes = draw(
        st.dictionaries(st.sampled_from(["notes", "score", "tags"]) | texts(max_size=8), json_values(), max_size=4)
    )
    if draw(st.booleans()):
        attributes["notes"] = draw(long_texts())
    return Contact(
        pk=draw(st.none() | st.integers(1, 2**31)),
        email=draw(emails()),
        first_name=draw(texts() | long_texts()),
        last_name=draw(texts()),
        phone=draw(PHONES),
        company=draw(texts()),
        website=draw(texts()),
        source_url=draw(texts()),
        attributes=attributes,
    )


_backends = {}


def backend(crm):
    """One backend per CRM, configured by keyword (no settings, no sandbox)."""
    if crm not in _backends:
        _backends[crm] = make_backend(crm, default_country_code="44")
    return _backends[crm]


def make_backend(crm, **overrides):
    credentials = {
        "brevo": {"api_key": "k"},
        "hubspot": {"api_key": "k"},
        "mautic": {"base_url": "https://mautic.example.com", "username": "u", "password": "p"},
        "n8n": {"webhook_url": "https://n8n.example.com/webhook/x"},
    }[crm]
    return get_backend_class(crm)(field_map=FIELD_MAPS[crm], **credentials, **overrides)


# Payload building


@pytest.mark.parametrize("crm", CRM_NAMES)
@PURE
@given(contact=contacts())
def test_payload_building_never_fails_but_with_invalid_contact_and_gives_strict_json(crm, contact):
    try:
        payload = backend(crm).build_payload(contact)
    except InvalidContact as exc:
        assert crm != "n8n", "n8n passes every contact on to its workflow"
        assert not crm_takes(crm, contact.email)
        assert exc.message == "%r is not an email address %s can take." % (contact.email, backend(crm).verbose_name)
        return
    # requests sends strict JSON: no NaN or infinity, no object it cannot encode.
    json.dumps(payload, allow_nan=False)
    payload_hash(payload)
    if crm == "brevo":
        assert payload["email"] == sent_email(crm, contact.email)
        sms = payload["attributes"].get("SMS")
        assert sms is None or normalised_sms(sms) is not None, "an SMS Brevo would refuse is left out"
    elif crm == "hubspot":
        assert payload["id"] == payload["properties"]["email"] == sent_email(crm, contact.email)
    elif crm == "mautic":
        assert payload["email"] == sent_email(crm, contact.email)


@PURE
@given(phone=PHONES, country=st.sampled_from(["", "44", "+33", "1"]))
def test_brevo_never_sends_an_sms_brevo_refuses(phone, country):
    from integrations.backends.brevo import brevo_sms

    sms = brevo_sms(phone, country)
    assert sms is None or (sms.startswith("+") and normalised_sms(sms) == sms[1:])


# Against the sandbox

# The length limits the sandbox enforces: Brevo's per attribute, HubSpot's per property.
LIMITS = {"brevo": MAX_ATTRIBUTE_LENGTH, "hubspot": MAX_VALUE_LENGTH}
_serial = itertools.count()


@st.composite
def batches(draw, crm):
    """Rows for the database, shuffled: valid contacts, contacts with an invalid
    email and, where the CRM has a length limit, contacts over it. Each row is
    (email, fields); emails are made unique and lower-case."""
    valid_emails = (st.emails() | ODD_VALID_EMAILS).filter(is_valid_email)
    valid = draw(st.lists(st.tuples(valid_emails, stored_fields(crm)), min_size=1, max_size=4))
    invalid = draw(st.lists(st.tuples(invalid_emails(storable=True), stored_fields(crm)), min_size=1, max_size=2))
    if crm in LIMITS:
        # Valid emails, values over the CRM's length limit.
        over = draw(st.lists(st.tuples(valid_emails, stored_fields(crm, over_limit=True)), min_size=0, max_size=2))
    else:
        over = []
    rows = [unique(email, fields) for email, fields in valid + invalid + over]
    return draw(st.permutations(rows))


@st.composite
def stored_fields(draw, crm, over_limit=False):
    """Contact fields a database stores (within each column's length)."""
    fields = {
        "first_name": draw(texts(True, 150)),
        "last_name": draw(texts(True, 150)),
        "company": draw(texts(True, 255)),
        # Brevo would refuse an SMS another contact has; the pure tests cover SMS.
        "phone": "" if crm == "brevo" else draw(texts(True, 50)),
        "attributes": {"score": draw(json_values(storable=True)), "tags": draw(json_values(storable=True))},
    }
    limit = LIMITS.get(crm, MAX_VALUE_LENGTH)
    if over_limit:
        body = draw(st.text(characters(True).filter(lambda c: not c.isspace()), min_size=1, max_size=2))
        fields["attributes"]["notes"] = (body * (limit + 1))[: limit + draw(st.integers(1, 3))]
    elif draw(st.booleans()):
        # Up to the limit exactly, once crmsync has stripped it.
        notes = draw(long_texts(True, around=(limit,)))
        fields["attributes"]["notes"] = notes if len(notes.strip()) <= limit else notes.strip()[:limit]
    return fields


def unique(email, fields):
    """The email with a serial in it, kept valid or invalid as it was."""
    serial = next(_serial)
    local, at, domain = email.rpartition("@")
    if at and is_valid_email(email):
        email = "n%d.%s@%s" % (serial, local, domain) if len(local) < 55 else "n%d@%s" % (serial, domain)
    else:
        email = "%s%d" % (email, serial) if "@" not in email else "%s\x07%d" % (email, serial)
    return email.strip().lower(), fields


def prepare_sandbox(sandbox_url, crm):
    """Back to empty; the CRM's own rate limit out of the way; the field map's
    custom fields created the way crm_setup does."""
    requests.post(sandbox_url + "/_sandbox/reset", timeout=5).raise_for_status()
    limit = {"brevo": (1000, 1), "hubspot": (10_000, 10)}.get(crm)
    if limit:
        requests.post(
            "%s/_sandbox/%s/faults" % (sandbox_url, crm),
            json={"rate_limit": {"requests": limit[0], "seconds": limit[1]}},
            timeout=5,
        ).raise_for_status()
    if crm in ("brevo", "hubspot"):
        instance = get_backend_class(crm)()
        try:
            instance.ensure_custom_fields()
        finally:
            instance.close()
    if crm == "mautic":
        from crm_sandbox.mautic import PASSWORD, USERNAME

        requests.post(
            sandbox_url + "/mautic/api/fields/contact/new",
            json={"label": "Notes", "alias": "notes"},
            auth=(USERNAME, PASSWORD),
            timeout=5,
        ).raise_for_status()


def expected_error(crm, contact):
    """Error text for a contact crmsync or the CRM refuses, or None."""
    verbose = get_backend_class(crm).verbose_name
    if crm != "n8n" and not crm_takes(crm, contact.email):
        return "%r is not an email address %s can take." % (contact.email, verbose)
    if crm == "mautic" and any(character in sent_email(crm, contact.email) for character in "^&*%"):
        # Mautic's EmailValidator::hasValidCharacters (docs/crm-api.md, section 3, Error model).
        return "Mautic refused it: email: %s has characters not allowed in email addresses." % sent_email(
            crm, contact.email
        )
    if crm == "brevo" and not brevo_sandbox.valid_email(sent_email(crm, contact.email)):
        # A domain without a dot, an address literal or a quoted local part, which
        # crmsync takes (docs/crm-api.md, section 1, "Bulk import": unconfirmed).
        return "Brevo refused it: Invalid email address [invalid_parameter]"
    notes = str((contact.attributes or {}).get("notes") or "").strip()
    if crm == "brevo" and len(notes) > MAX_ATTRIBUTE_LENGTH:
        return "Brevo refused it: Attribute NOTES exceeds the maximum length of 5000 characters [invalid_parameter]"
    if crm == "hubspot" and len(notes) > MAX_VALUE_LENGTH:
        return "HubSpot refused it: value for notes is longer than 65536 characters (INVALID_LONG_STRING)"
    return None


def stored_in_crm(sandbox, crm):
    """{email: {field: value}} as the CRM holds them, in crmsync's field names."""
    found = {}
    for record in sandbox.contacts(crm):
        if crm == "brevo":
            attributes = record["attributes"]
            found[record["email"]] = {
                "first_name": attributes.get("FIRSTNAME"),
                "last_name": attributes.get("LASTNAME"),
                "notes": attributes.get("NOTES"),
            }
        elif crm == "hubspot":
            properties = record["properties"]
            found[properties["email"]] = {
                "first_name": properties.get("firstname"),
                "last_name": properties.get("lastname"),
                "notes": properties.get("notes"),
            }
        elif crm == "mautic":
            fields = record["fields"]["all"]
            found[fields["email"]] = {
                "first_name": fields.get("firstname"),
                "last_name": fields.get("lastname"),
                "notes": fields.get("notes"),
            }
        else:
            found.setdefault(record["email"], []).append(record)
    return found


def sent_value(value):
    """What crmsync sends for a mapped value: stripped; nothing when empty."""
    text = str(value or "").strip()
    return text or None


@pytest.mark.django_db
@pytest.mark.parametrize("crm", CRM_NAMES)
@ROUND_TRIPS
@given(data=st.data())
def test_invalid_records_fail_alone_with_the_crms_words_and_valid_neighbours_sync(crm, data, sandbox, settings):
    setattr(settings, "%s_FIELD_MAP" % crm.upper(), FIELD_MAPS[crm])
    setattr(settings, "%s_REQUESTS_PER_SECOND" % crm.upper(), 100)
    Contact.objects.all().delete()
    prepare_sandbox(sandbox.url, crm)
    rows = data.draw(batches(crm))
    created = [Contact.objects.create(email=email, **fields) for email, fields in rows]
    selection.select(Contact.objects.all(), [crm])

    call_command("sync_crm", "--crm", crm, stdout=StringIO(), stderr=StringIO())

    in_crm = stored_in_crm(sandbox, crm)
    syncs = {s.contact_id: s for s in ContactSync.objects.filter(crm=crm)}
    for contact in Contact.objects.filter(pk__in=[c.pk for c in created]):
        sync, error = syncs[contact.pk], expected_error(crm, contact)
        assert SyncAttempt.objects.filter(contact=contact, crm=crm).count() == 1, "decided on the first push"
        event("refused by %s" % ("crmsync" if error and "is not an email" in error else crm) if error else "synced")
        if error:
            assert (sync.sync_status, sync.processing_status, sync.last_error) == (
                SyncStatus.ERROR,
                ProcessingStatus.ERROR,
                error,
            )
            assert sent_email(crm, contact.email) not in in_crm
            continue
        assert (sync.sync_status, sync.processing_status) == (SyncStatus.COMPLETE, ProcessingStatus.COMPLETE), (
            sync.last_error
        )
        if crm == "n8n":
            [item] = in_crm[sent_email(crm, contact.email)]
            assert (item["first_name"], item["company"], item["attributes"]) == (
                contact.first_name,
                contact.company,
                contact.attributes,
            )
        else:
            stored = in_crm[sent_email(crm, contact.email)]
            wanted = {
                "first_name": sent_value(contact.first_name),
                "last_name": sent_value(contact.last_name),
                "notes": sent_value(contact.attributes.get("notes")),
            }
            assert stored == wanted
    assert len(in_crm) == sum(expected_error(crm, c) is None for c in Contact.objects.all())
