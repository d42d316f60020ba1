"""What the reads answer (contacts with their per-CRM state, the CRMs' state) and
the query parameters the contact list accepts."""

from rest_framework import serializers

from contacts.filters import NOT_OPTED_OUT, OPTED_OUT, SEARCH_FIELDS
from contacts.models import Contact, ContactSync, CRMEvent, ProcessingStatus, SyncAttempt, SyncStatus
from integrations.models import ERROR_MAX_LENGTH
from integrations.registry import crm_names

# The longest search text accepted: enough for several words, short enough that a
# request cannot make every row's fields scan for a page of text.
SEARCH_MAX_LENGTH = 200
# Processing status "" means "nothing going on", which the admin list does not filter by.
PROCESSING_STATUS_FILTERS = [(value, label) for value, label in ProcessingStatus.choices if value]
# Likewise, no CRM event is not one to filter by.
CRM_EVENT_FILTERS = [(value, label) for value, label in CRMEvent.choices if value]
OPTED_OUT_FILTERS = [(OPTED_OUT, "Opted out"), (NOT_OPTED_OUT, "Not opted out")]


def _choice_error(what, choices):
    return '"{input}" is not a valid %s. Valid values: %s.' % (what, ", ".join(value for value, _label in choices))


class ContactFilterSerializer(serializers.Serializer):
    """GET /contacts's query parameters, with the admin list's meaning
    (contacts.filters.filter_contacts). An empty value means "not filtered"."""

    crm = serializers.ChoiceField(
        choices=[],
        required=False,
        allow_blank=True,
        help_text="A known CRM: contacts decided for it; with a status, the status is tested for that CRM.",
    )
    sync_status = serializers.ChoiceField(
        choices=SyncStatus.choices,
        required=False,
        allow_blank=True,
        error_messages={"invalid_choice": _choice_error("sync status", SyncStatus.choices)},
        help_text="Staff's decision; new includes contacts without a row.",
    )
    processing_status = serializers.ChoiceField(
        choices=PROCESSING_STATUS_FILTERS,
        required=False,
        allow_blank=True,
        error_messages={"invalid_choice": _choice_error("processing status", PROCESSING_STATUS_FILTERS)},
        help_text="Where the work stands.",
    )
    sync_error = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=ERROR_MAX_LENGTH,
        help_text="Exactly this last error (the sync dashboard links its top errors here).",
    )
    crm_event = serializers.ChoiceField(
        choices=CRM_EVENT_FILTERS,
        required=False,
        allow_blank=True,
        error_messages={"invalid_choice": _choice_error("CRM event", CRM_EVENT_FILTERS)},
        help_text="The last event the CRM reported through its webhooks (for `crm`, or any CRM).",
    )
    opted_out = serializers.ChoiceField(
        choices=OPTED_OUT_FILTERS,
        required=False,
        allow_blank=True,
        error_messages={"invalid_choice": _choice_error("answer", OPTED_OUT_FILTERS)},
        help_text="yes: unsubscribed, bounced hard or complained of spam (in `crm`, or any CRM); no: the others.",
    )
    search = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=SEARCH_MAX_LENGTH,
        help_text="Every word in one of: %s (case-insensitive), as the admin searches. Example: jane acme."
        % ", ".join(SEARCH_FIELDS),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The known CRMs are read when asked (CRMSYNC_EXTRA_BACKENDS may add some), not at import.
        known = [(name, name) for name in crm_names()]
        crm = self.fields["crm"]
        crm.choices = known
        crm.error_messages["invalid_choice"] = '"{input}" is not a known CRM. Known CRMs: %s.' % ", ".join(
            name for name, _label in known
        )

    def filters(self):
        """The validated values as filter_contacts' keyword arguments (None when not given)."""
        return {name: self.validated_data.get(name) or None for name in self.fields}


class ContactSyncReadSerializer(serializers.ModelSerializer):
    """One CRM's dual status for a contact: staff's decision, where the work stands
    (processing_status not_in_crm or removed: the CRM has no record, last_error says
    why), the operation the next push does, and what the CRM last reported."""

    class Meta:
        model = ContactSync
        fields = [
            "crm",
            "operation",
            "sync_status",
            "processing_status",
            "attempts",
            "last_error",
            "external_id",
            "synced_email",
            "synced_at",
            "next_attempt_at",
            "crm_event",
            "crm_event_at",
            "opted_out_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "operation": {"help_text": "What the next push does: empty for create or update, remove, or erase."},
            "synced_email": {"help_text": "The email the CRM's record had after the last accepted push."},
            "crm_event": {"help_text": "The last event the CRM reported (its webhooks); empty for none."},
            "opted_out_at": {"help_text": "When the person opted out in this CRM; a sync never undoes it."},
        }


class SyncAttemptReadSerializer(serializers.ModelSerializer):
    class Meta:
        model = SyncAttempt
        fields = ["crm", "attempted_at", "outcome", "http_status", "error"]
        read_only_fields = fields


CONTACT_FIELDS = ["id", "email", "first_name", "last_name", "phone", "company", "website", "created_at", "updated_at"]


class ContactReadSerializer(serializers.ModelSerializer):
    """A contact with one entry per CRM it has a row for; a CRM without one is New."""

    syncs = ContactSyncReadSerializer(many=True, read_only=True)
    # Not URLField's "uri" format: most contacts have none, and "" is not a URI.
    website = serializers.CharField(read_only=True, help_text="The contact's website, or empty.")

    class Meta:
        model = Contact
        fields = [*CONTACT_FIELDS, "syncs"]
        read_only_fields = fields


class ContactDetailSerializer(ContactReadSerializer):
    """The same, with its latest sync attempts, newest first (the view prefetches them)."""

    recent_attempts = SyncAttemptReadSerializer(many=True, read_only=True)

    class Meta(ContactReadSerializer.Meta):
        fields = [*ContactReadSerializer.Meta.fields, "recent_attempts"]
        read_only_fields = fields


class CRMPauseSerializer(serializers.Serializer):
    """Why no worker claims anything for the CRM now."""

    kind = serializers.ChoiceField(
        choices=[
            ("staff", "Paused by staff until resumed"),
            ("crm", "Paused by the CRM (a rate limit, bad credentials) until a time"),
            ("breaker", "The circuit breaker is open until its next probe"),
        ]
    )
    by = serializers.CharField(help_text="Who paused it, for a staff pause; else empty.")
    until = serializers.DateTimeField(allow_null=True, help_text="None for a staff pause, which lasts until resumed.")
    reason = serializers.CharField()


class CRMBreakerSerializer(serializers.Serializer):
    """The circuit breaker while it is open: the CRM fails for everyone."""

    failing_since = serializers.DateTimeField(allow_null=True)
    next_probe_at = serializers.DateTimeField()


class CRMStatusSerializer(serializers.Serializer):
    """One configured CRM: its queue, its errors, whether it is paused, and its runs."""

    name = serializers.CharField()
    label = serializers.CharField()
    queued = serializers.IntegerField(help_text="Rows queued, due or not.")
    due = serializers.IntegerField(help_text="Queued rows due now.")
    in_flight = serializers.IntegerField(help_text="Rows a worker has claimed and is pushing.")
    oldest_due_at = serializers.DateTimeField(allow_null=True, help_text="When the longest-waiting due row fell due.")
    errors = serializers.IntegerField(help_text="Rows in sync status Error (given up; staff may retry them).")
    paused = serializers.BooleanField(help_text="Whether workers claim nothing for this CRM now.")
    pause = CRMPauseSerializer(allow_null=True)
    breaker = CRMBreakerSerializer(allow_null=True, help_text="Set while the circuit breaker is open.")
    last_run_at = serializers.DateTimeField(allow_null=True)
    last_success_at = serializers.DateTimeField(allow_null=True, help_text="The last run that synced a contact.")


class CRMListSerializer(serializers.Serializer):
    results = CRMStatusSerializer(many=True)


class PauseChangeSerializer(serializers.Serializer):
    changed = serializers.BooleanField(help_text="Whether this call paused (or resumed) it; false if it already was.")
    crm = CRMStatusSerializer()


class SyncQueuedSerializer(serializers.Serializer):
    crm = serializers.CharField()
    task_id = serializers.CharField(help_text="The django-q2 task's id (its result appears in the admin's tasks).")
    message = serializers.CharField()


class DetailErrorSerializer(serializers.Serializer):
    """401, 403, 404 and 429 answers."""

    detail = serializers.CharField()


class CRMNotFoundSerializer(serializers.Serializer):
    detail = serializers.CharField()
    configured_crms = serializers.ListField(child=serializers.CharField())


class ContactFilterErrorsSerializer(serializers.Serializer):
    """A 400: the messages for each parameter that was refused."""

    crm = serializers.ListField(child=serializers.CharField(), required=False)
    sync_status = serializers.ListField(child=serializers.CharField(), required=False)
    processing_status = serializers.ListField(child=serializers.CharField(), required=False)
    sync_error = serializers.ListField(child=serializers.CharField(), required=False)
    crm_event = serializers.ListField(child=serializers.CharField(), required=False)
    opted_out = serializers.ListField(child=serializers.CharField(), required=False)
    search = serializers.ListField(child=serializers.CharField(), required=False)
    detail = serializers.CharField(
        required=False, help_text="A NUL character in the address or the Authorization header."
    )
    page_size = serializers.ListField(child=serializers.CharField(), required=False)
    parameters = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Query parameters this endpoint does not take."
    )
