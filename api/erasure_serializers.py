"""Erasure's request and answers: addresses to erase, and the proof (never the email)."""

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from rest_framework import serializers

from contacts.emails import canonical_email
from contacts.models import Erasure, ErasureOutcome, ErasureResult, ErasureStatus

MAX_EMAILS = 1000


class CanonicalEmailField(serializers.CharField):
    """An address in its canonical form (contacts.emails), valid by the CSV import's rule."""

    default_error_messages = {"invalid": "Enter a valid email address."}

    def to_internal_value(self, data):
        email = canonical_email(super().to_internal_value(data))
        try:
            validate_email(email)
        except ValidationError:
            self.fail("invalid")
        return email


class EraseRequestSerializer(serializers.Serializer):
    emails = serializers.ListField(
        child=CanonicalEmailField(max_length=254),
        min_length=1,
        max_length=MAX_EMAILS,
        help_text="The addresses to erase (1 to %d). Any bad one refuses the whole request." % MAX_EMAILS,
    )


class ErasureStartedSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The erasure's id: GET /api/v3/erasures/{id} is its proof.")
    status = serializers.ChoiceField(choices=ErasureStatus.choices)
    results = serializers.DictField(
        child=serializers.ChoiceField(choices=ErasureOutcome.choices),
        help_text="Each CRM's part, by CRM name: pending (queued) or not_configured (erase there by hand).",
    )


class EraseAnswerSerializer(serializers.Serializer):
    erasures = ErasureStartedSerializer(many=True, help_text="One per distinct address, in request order.")


class ErasureResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = ErasureResult
        fields = list(ErasureResult.PROOF_FIELDS)


class ErasureProofSerializer(serializers.ModelSerializer):
    """The proof: who asked, when, each CRM's answer and the keyed hash, never the email."""

    results = ErasureResultSerializer(many=True, read_only=True)

    class Meta:
        model = Erasure
        fields = [
            "id",
            "status",
            "requested_by",
            "requested_via",
            "requested_at",
            "completed_at",
            "cancelled_by",
            "local_contact_deleted",
            "email_hash",
            "results",
        ]
