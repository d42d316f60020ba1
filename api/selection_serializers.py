"""What PUT /api/v3/contacts/crm/select takes and answers.

The request is the old system's body, `{"contact_ids": [...], "crms": [...],
"action": "select"}`, where the contacts may instead be named by `emails` or by a
`filter` (the admin list's rules, contacts.filters). Every input is checked here,
so the view only runs the decision: a bad one is a 400 naming the field.
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from rest_framework import serializers

from contacts import selection
from contacts.emails import canonical_email
from contacts.models import ProcessingStatus, SyncStatus
from integrations.exceptions import UnknownCRM
from integrations.registry import crm_names, validate_crm_names

# Contacts named one by one per call; a filter has no limit (it runs as one query).
MAX_CONTACTS_PER_CALL = 10_000
# A contact's primary key is a 64-bit integer: anything larger names no contact.
MAX_CONTACT_ID = 2**63 - 1
MAX_SEARCH_LENGTH = 200
# Longer than any real address (RFC 5321), so an absurd string is refused early.
MAX_EMAIL_LENGTH = 254

CONTACT_SELECTORS = ("contact_ids", "emails", "filter")


def _refuse_unknown_keys(serializer, data):
    """A misspelt key would otherwise be ignored, and a filter without it select
    more contacts than meant: refuse any key the serializer does not declare."""
    if isinstance(data, dict):
        unknown = sorted(str(key) for key in data if key not in serializer.fields)
        if unknown:
            raise serializers.ValidationError(
                {key: ["Unknown key. Known keys: %s." % ", ".join(serializer.fields)] for key in unknown}
            )


class CheckedCharField(serializers.CharField):
    """A CharField that refuses NUL bytes before its own checks read the text
    (DRF's validator runs only after to_internal_value)."""

    def to_internal_value(self, data):
        text = super().to_internal_value(data)
        if "\x00" in text:
            raise serializers.ValidationError("Null characters are not allowed.")
        return text


class CRMNameField(CheckedCharField):
    """A CRM name the registry knows; the error lists the known ones."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 32)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        name = super().to_internal_value(data)
        if name not in crm_names():
            raise serializers.ValidationError(
                "Unknown CRM %r. Known CRMs: %s." % (name, ", ".join(crm_names()) or "none")
            )
        return name


class CanonicalEmailField(CheckedCharField):
    """An email as the rest of the app stores it (contacts.emails), validated like
    the CSV import's email column."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", MAX_EMAIL_LENGTH)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        email = canonical_email(super().to_internal_value(data))
        try:
            validate_email(email)
        except DjangoValidationError:
            raise serializers.ValidationError("%r is not a valid email address." % email[:80]) from None
        return email


class BoundedListField(serializers.ListField):
    """A ListField that refuses a list over max_length before validating its items,
    so an oversized body costs one len() and not a check of every item."""

    def to_internal_value(self, data):
        if isinstance(data, list) and self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


class ContactFilterSerializer(serializers.Serializer):
    """The admin contact list's filters (contacts.filters.filter_contacts)."""

    crm = CRMNameField(required=False, help_text="Contacts decided for this CRM, or the CRM the statuses apply to.")
    sync_status = serializers.ChoiceField(choices=SyncStatus.choices, required=False)
    # "(none)" is no filter at all in the admin, so it is not a value here.
    processing_status = serializers.ChoiceField(
        choices=[(value, label) for value, label in ProcessingStatus.choices if value], required=False
    )
    search = serializers.CharField(
        required=False,
        max_length=MAX_SEARCH_LENGTH,
        help_text="Every word in the email, first name, last name or company, as the admin's search box.",
    )

    def to_internal_value(self, data):
        _refuse_unknown_keys(self, data)
        return super().to_internal_value(data)


class SelectRequestSerializer(serializers.Serializer):
    contact_ids = BoundedListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_CONTACT_ID),
        required=False,
        allow_empty=False,
        max_length=MAX_CONTACTS_PER_CALL,
        help_text="Contacts by id, at most %d." % MAX_CONTACTS_PER_CALL,
    )
    emails = BoundedListField(
        child=CanonicalEmailField(),
        required=False,
        allow_empty=False,
        max_length=MAX_CONTACTS_PER_CALL,
        help_text="Contacts by email (any spelling of the address), at most %d." % MAX_CONTACTS_PER_CALL,
    )
    filter = ContactFilterSerializer(
        required=False, help_text="Contacts by the admin list's filters; {} is every contact. No limit."
    )
    crms = BoundedListField(child=CRMNameField(), allow_empty=False, max_length=100)
    action = serializers.ChoiceField(choices=selection.ACTIONS, default=selection.SELECT)

    def validate(self, attrs):
        given = [name for name in CONTACT_SELECTORS if name in attrs]
        if len(given) != 1:
            raise serializers.ValidationError(
                {
                    "non_field_errors": [
                        "Name the contacts by exactly one of contact_ids, emails or filter (got %s)."
                        % (", ".join(given) or "none")
                    ]
                }
            )
        try:
            attrs["crms"] = validate_crm_names(attrs["crms"])
        except UnknownCRM as unknown:  # the field checks each name; this only de-duplicates
            raise serializers.ValidationError({"crms": [str(unknown)]}) from None
        return attrs


class CRMReportSerializer(serializers.Serializer):
    crm = serializers.CharField()
    changed = serializers.IntegerField(
        help_text="Pairs that took the decision now (queued, unselected, skipped or retried)."
    )
    already = serializers.IntegerField(
        help_text="Pairs in that state already: for select, still queued and made due now with a fresh "
        "attempt budget (counted in queued_count); for skip and unselect, left as they were."
    )
    in_flight = serializers.IntegerField(
        help_text="Pairs a worker is pushing now: the decision is remembered and applied when the batch "
        "records (retry: none, those count as not_in_error)."
    )
    not_in_error = serializers.IntegerField(help_text="Retry only: pairs not in Error, left alone.")


class SelectResponseSerializer(serializers.Serializer):
    updated_count = serializers.IntegerField(help_text="Contacts found.")
    queued_count = serializers.IntegerField(
        help_text="(contact, CRM) pairs queued: for select, every pair queued now (already queued ones "
        "included); for retry, the failed pairs queued again; 0 for skip and unselect."
    )
    crms = serializers.ListField(child=serializers.CharField())
    action = serializers.ChoiceField(choices=selection.ACTIONS)
    message = serializers.CharField()
    per_crm = CRMReportSerializer(many=True)


class NotFoundSerializer(serializers.Serializer):
    detail = serializers.CharField()
