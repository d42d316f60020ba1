"""The bulk upsert's request and answer. The request is checked as a whole (an
object, a list of at most MAX_ITEMS, known CRMs); each item is then checked on its
own by the CSV import's rules, so one bad item is rejected alone."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from contacts.importer import ATTRIBUTE_MAX_LENGTH, CONTACT_COLUMNS, InvalidContact, Result, clean_contact
from integrations.registry import crm_names, validate_crm_names

MAX_ITEMS = 1000
ITEM_FIELDS = (*CONTACT_COLUMNS, "attributes")
TOP_LEVEL_FIELDS = ("contacts", "crms")
# How much of a rejected item's email the answer repeats.
EMAIL_ECHO_LENGTH = 320
JSON_TYPES = ((bool, "a boolean"), (str, "a string"), (int, "a number"), (float, "a number"))
JSON_TYPES += ((list, "a list"), (dict, "an object"))


class ContactItemSerializer(serializers.Serializer):
    """One contact as the schema documents it; clean_item does the checking."""

    email = serializers.EmailField(max_length=254)
    first_name = serializers.CharField(max_length=150, required=False, allow_blank=True, allow_null=True)
    last_name = serializers.CharField(max_length=150, required=False, allow_blank=True, allow_null=True)
    phone = serializers.CharField(max_length=50, required=False, allow_blank=True, allow_null=True)
    company = serializers.CharField(max_length=255, required=False, allow_blank=True, allow_null=True)
    website = serializers.CharField(max_length=500, required=False, allow_blank=True, allow_null=True)
    source_url = serializers.CharField(max_length=2000, required=False, allow_blank=True, allow_null=True)
    attributes = serializers.DictField(
        child=serializers.CharField(max_length=ATTRIBUTE_MAX_LENGTH, allow_blank=True),
        required=False,
        allow_null=True,
        help_text="Any other values, kept in the contact's attributes and merged with what it has.",
    )


@extend_schema_field(ContactItemSerializer)
class ContactItemField(serializers.Field):
    """Takes any JSON value: an item that is not a valid contact is that item's
    rejection (clean_item), not the request's."""

    def to_internal_value(self, data):
        return data

    def to_representation(self, value):
        return value


class BulkUpsertSerializer(serializers.Serializer):
    contacts = serializers.ListField(child=ContactItemField(allow_null=True), min_length=1, max_length=MAX_ITEMS)

    def get_fields(self):
        # Built per serializer, so the schema's enum of CRMs is the registry's now.
        fields = super().get_fields()
        known = crm_names()
        fields["crms"] = serializers.ListField(
            child=serializers.ChoiceField(
                choices=known,
                error_messages={"invalid_choice": "Unknown CRM {input!r}. Known CRMs: %s." % ", ".join(known)},
            ),
            required=False,
            default=list,
            help_text="Select every contact of the request (changed or not) for these CRMs.",
        )
        return fields

    def validate_crms(self, value):
        # Each name is known (the field's choices): this only orders and de-duplicates.
        return validate_crm_names(value)

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(TOP_LEVEL_FIELDS))
        if unknown:
            raise serializers.ValidationError(
                {printable(name): ["Unknown field. The fields are: contacts, crms."] for name in unknown}
            )
        return attrs


class ItemResultSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="The item's position in the request, from 0.")
    email = serializers.CharField(allow_null=True, help_text="Canonical when accepted; as sent when rejected.")
    result = serializers.ChoiceField(choices=[Result.CREATED, Result.UPDATED, Result.UNCHANGED, Result.REJECTED])
    id = serializers.IntegerField(allow_null=True, help_text="The contact's id; null when rejected.")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Why the item was rejected, by field; empty otherwise.",
    )


class TotalsSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    rejected = serializers.IntegerField()


class BulkUpsertAnswerSerializer(serializers.Serializer):
    results = ItemResultSerializer(many=True)
    totals = TotalsSerializer()
    queued_count = serializers.IntegerField(help_text="(contact, CRM) pairs queued.")
    crms = serializers.ListField(child=serializers.CharField())


def clean_item(item):
    """(ContactRow, {}) for a valid item, or (None, {field: [reasons]})."""
    if not isinstance(item, dict):
        return None, {"non_field_errors": ["Expected an object (a contact), got %s." % json_type(item)]}
    errors = {
        printable(name): ["Unknown field. The fields are: %s." % ", ".join(ITEM_FIELDS)]
        for name in item
        if name not in ITEM_FIELDS
    }
    values = {}
    for name in CONTACT_COLUMNS:
        value = item.get(name)
        if isinstance(value, str):
            values[name] = value
        elif value is not None:
            errors[name] = ["Expected a string, got %s." % json_type(value)]
    attributes = _attributes(item.get("attributes"), errors)
    try:
        row = clean_contact(values, attributes)
    except InvalidContact as exc:
        for name, reasons in exc.errors.items():
            # A field whose type was wrong already says so; it was not checked further.
            errors.setdefault(name, reasons)
        row = None
    return (None, errors) if errors else (row, {})


def _attributes(value, errors):
    """The string attributes of an item; anything else is an error under "attributes"."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors["attributes"] = ["Expected an object of names to strings, got %s." % json_type(value)]
        return {}
    strings = {}
    for name, text in value.items():
        if isinstance(text, str):
            strings[name] = text
        elif text is not None:
            reason = "%s: expected a string, got %s." % (printable(name), json_type(text))
            errors.setdefault("attributes", []).append(reason)
    return strings


def echoed_email(item):
    """The email a rejected item sent, as far as the answer can repeat it."""
    email = item.get("email") if isinstance(item, dict) else None
    return printable(email[:EMAIL_ECHO_LENGTH]) if isinstance(email, str) else None


def printable(text):
    """`text` as UTF-8 can carry it: JSON may spell lone surrogates, which no answer
    could encode."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def json_type(value):
    if value is None:
        return "null"
    return next((name for kind, name in JSON_TYPES if isinstance(value, kind)), type(value).__name__)
