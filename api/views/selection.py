"""PUT (or POST) /api/v3/contacts/crm/select: the old system's call, which staff
decisions (select, unselect, skip, retry) go through.

One path takes the decision from the body's `action`, as the old frontends send
it; /contacts/crm/unselect, /skip and /retry are the same endpoint with the action
fixed by the path (a body naming another action is refused). The decision itself
is contacts.selection.decide(): the same rules and statements as the admin's
actions.
"""

from dataclasses import asdict

from django.urls import path
from django.utils.text import get_text_list
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts import audit, selection
from contacts.filters import filter_contacts
from contacts.models import Contact

from ..parsers import StrictJSONParser
from ..permissions import CanChangeContacts
from ..selection_serializers import (
    MAX_CONTACTS_PER_CALL,
    NotFoundSerializer,
    SelectRequestSerializer,
    SelectResponseSerializer,
)

# What each action did to a pair, for the message ("3 pairs queued for brevo").
_DONE = {
    selection.SELECT: "queued",
    selection.UNSELECT: "set back to New",
    selection.SKIP: "skipped",
    selection.RETRY: "queued again",
}

_ALREADY = {
    selection.SELECT: "%d of them were queued already: they are due now, with a fresh attempt budget.",
    selection.UNSELECT: "%d pair(s) were New already.",
    selection.SKIP: "%d pair(s) were skipped already.",
}
_LEFT_ALONE = ("already", "in_flight", "not_in_error")

_NOT_FOUND = {
    "contact_ids": "None of the contacts exists.",
    "emails": "No contact has any of these emails.",
    "filter": "No contact matches the filter.",
}


def contacts_named_by(data):
    """The Contact queryset a validated request names, and which way it named them."""
    if "contact_ids" in data:
        return Contact.objects.filter(pk__in=data["contact_ids"]), "contact_ids"
    if "emails" in data:
        return Contact.objects.filter(email__in=data["emails"]), "emails"
    return filter_contacts(Contact.objects.all(), **data["filter"]), "filter"


def message_for(decision, crms):
    """One sentence for staff, with what was left alone and why."""
    action = decision.action
    done = decision.queued if action in (selection.SELECT, selection.RETRY) else decision.changed
    parts = [
        "%d contact(s) found; %d (contact, CRM) pair(s) %s for %s."
        % (decision.found, done, _DONE[action], get_text_list(crms, "and"))
    ]
    totals = {name: sum(getattr(report, name) for report in decision.crms) for name in _LEFT_ALONE}
    if totals["already"]:
        parts.append(_ALREADY[action] % totals["already"])
    if totals["in_flight"]:
        parts.append(
            "%d pair(s) being pushed now will be %s when their push ends." % (totals["in_flight"], _DONE[action])
        )
    if totals["not_in_error"]:
        parts.append("%d pair(s) not in Error were left alone." % totals["not_in_error"])
    return " ".join(parts)


def answer(decision, crms):
    return {
        "updated_count": decision.found,
        "queued_count": decision.queued,
        "crms": crms,
        "action": decision.action,
        "message": message_for(decision, crms),
        "per_crm": [asdict(report) for report in decision.crms],
    }


_OLD_REQUEST = {"contact_ids": [101, 102, 103], "crms": ["brevo", "hubspot"], "action": "select"}
_DETAIL = OpenApiResponse(NotFoundSerializer, description="No or bad credentials (401), or no permission (403).")

SCHEMA = {
    "summary": "Select, unselect, skip or retry contacts for CRMs",
    "description": (
        "The old system's `PUT /api/v3/contacts/crm/select` (POST works too). Name the contacts by exactly "
        "one of `contact_ids`, `emails` (any spelling of the address) or `filter` (the admin list's filters; "
        "`{}` is every contact); at most %d ids or emails per call, a filter has no limit. `action`: "
        "`select` (default) queues them; `unselect` sets the decision back to New and clears the processing "
        "state (nothing is deleted in any CRM); `skip` marks them not to be synced; `retry` queues again the "
        "pairs in Error. `/contacts/crm/unselect`, `/skip` and `/retry` are the same endpoint with the "
        "action fixed by the path. A pair being pushed when the call comes keeps its push: the decision is "
        "remembered and applied when the batch records (retry leaves it alone). `updated_count` counts the "
        "contacts found; `queued_count` the (contact, CRM) pairs queued; `per_crm` says, per CRM, what "
        "changed and what was left alone and why. Other top-level keys are ignored, so that a "
        "frontend sending more keeps working (a filter's unknown keys are refused). Requires the "
        "`contacts.change_contact` permission."
    )
    % MAX_CONTACTS_PER_CALL,
    "request": SelectRequestSerializer,
    "responses": {
        200: SelectResponseSerializer,
        400: OpenApiResponse(OpenApiTypes.OBJECT, description="Field-level errors."),
        401: _DETAIL,
        403: _DETAIL,
        404: OpenApiResponse(NotFoundSerializer, description="None of the named contacts exists."),
        429: OpenApiResponse(NotFoundSerializer, description="Too many requests for this token."),
    },
    "examples": [
        OpenApiExample("The old system's call", value=_OLD_REQUEST, request_only=True),
        OpenApiExample(
            "By filter",
            value={"filter": {"crm": "brevo", "sync_status": "error"}, "crms": ["brevo"], "action": "retry"},
            request_only=True,
        ),
        OpenApiExample(
            "Selected",
            value={
                "updated_count": 3,
                "queued_count": 5,
                "crms": ["brevo", "hubspot"],
                "action": "select",
                "message": "3 contact(s) found; 5 (contact, CRM) pair(s) queued for brevo and hubspot. "
                "1 pair(s) being pushed now will be queued when their push ends.",
                "per_crm": [
                    {"crm": "brevo", "changed": 2, "already": 1, "in_flight": 0, "not_in_error": 0},
                    {"crm": "hubspot", "changed": 2, "already": 0, "in_flight": 1, "not_in_error": 0},
                ],
            },
            response_only=True,
            status_codes=["200"],
        ),
        OpenApiExample(
            "Unknown CRM",
            value={"crms": {"1": ["Unknown CRM 'salesforce'. Known CRMs: brevo, hubspot, mautic, n8n."]}},
            response_only=True,
            status_codes=["400"],
        ),
        OpenApiExample(
            "Nothing found",
            value={"detail": _NOT_FOUND["contact_ids"]},
            response_only=True,
            status_codes=["404"],
        ),
    ],
}


class SelectView(APIView):
    """The decision named by the body's `action` (or fixed by the path)."""

    permission_classes = [CanChangeContacts]
    # JSON only: the old frontends send it, and a form's QueryDict has no lists of its own.
    # The API's parser: a 400 for a body nested too deeply, a NUL or a lone surrogate.
    parser_classes = [StrictJSONParser]
    fixed_action = None

    @extend_schema(**SCHEMA)
    def put(self, request):
        return self.decide(request)

    @extend_schema(**SCHEMA)
    def post(self, request):
        return self.decide(request)

    def decide(self, request):
        serializer = SelectRequestSerializer(data=self.with_fixed_action(request.data))
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        contacts, named_by = contacts_named_by(data)
        decision = selection.decide(data["action"], contacts, data["crms"])
        if not decision.found:
            return Response({"detail": _NOT_FOUND[named_by]}, status=status.HTTP_404_NOT_FOUND)
        contact = contacts.only("pk").first() if decision.found == 1 else None
        detail = "%s %s" % (audit.THROUGH_THE_API, message_for(decision, data["crms"]))
        audit.record_decision(request.user, decision, contact=contact, detail=detail)
        return Response(answer(decision, data["crms"]))

    def with_fixed_action(self, data):
        if self.fixed_action is None or not isinstance(data, dict):
            return data
        if data.get("action", self.fixed_action) != self.fixed_action:
            raise serializers.ValidationError(
                {
                    "action": [
                        "This path takes only %r; use /contacts/crm/select to name the action." % self.fixed_action
                    ]
                }
            )
        return {**data, "action": self.fixed_action}


class UnselectView(SelectView):
    fixed_action = selection.UNSELECT


class SkipView(SelectView):
    fixed_action = selection.SKIP


class RetryView(SelectView):
    fixed_action = selection.RETRY


urlpatterns = [
    path("contacts/crm/select", SelectView.as_view(), name="contacts-crm-select"),
    path("contacts/crm/unselect", UnselectView.as_view(), name="contacts-crm-unselect"),
    path("contacts/crm/skip", SkipView.as_view(), name="contacts-crm-skip"),
    path("contacts/crm/retry", RetryView.as_view(), name="contacts-crm-retry"),
]
