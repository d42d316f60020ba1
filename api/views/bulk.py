"""POST /api/v3/contacts/bulk: upsert up to 1,000 contacts by email, by the CSV
import's rules (contacts.importer.upsert_contacts), answering per item."""

from django.db import transaction
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts import audit
from contacts.importer import Result, upsert_contacts
from contacts.models import Contact
from integrations.resync import requeue_if_changed

from ..bulk_serializers import (
    MAX_ITEMS,
    BulkUpsertAnswerSerializer,
    BulkUpsertSerializer,
    clean_item,
    echoed_email,
)
from ..parsers import TOO_DEEP
from ..permissions import CanChangeContacts

DESCRIPTION = """
Create or update up to %d contacts per request, matched by email, by the same rules
as the CSV import (`manage.py import_contacts`):

- The email is matched in its canonical form: case, Unicode normalization and a
  punycode domain do not make a new contact.
- An empty, null or missing value keeps what the contact has; attributes are merged
  into the contact's.
- Website and source URL get `https://` when they have no scheme.
- Items for the same email apply in order, each to what the earlier ones left.
- An item that changes nothing is `unchanged` and is not written.
- An updated contact already synced to a CRM is queued again for it when the data
  that CRM gets changed, as a save in the admin does.

**Valid items are applied even when others are rejected.** Each item is checked on
its own: a malformed email, a NUL character, a value too long, an unknown field or a
value of the wrong type makes that item `rejected`, with the reasons by field, and
it changes nothing. So does an email on the suppression list (a person erased under
GDPR, until staff lift it in the admin), with the reason under `email`. The answer
is then still 200, with one result per item in request order and the totals. The
request as a whole is refused (400, nothing written) only when it is not JSON that
parses, is not an object with a `contacts` list of 1 to %d items, has an unknown
top-level field, or names an unknown CRM.

With `crms`, every accepted contact of the request (changed or not) is selected
for those CRMs, as the admin's Select action does; `queued_count` counts the
(contact, CRM) pairs queued. A contact being pushed right now is queued again when
its push ends and is not counted.
""" % (MAX_ITEMS, MAX_ITEMS)

REQUEST_EXAMPLE = OpenApiExample(
    "Two contacts, selected for Brevo",
    request_only=True,
    value={
        "contacts": [
            {"email": "ann@example.com", "first_name": "Ann", "company": "Acme", "attributes": {"tier": "gold"}},
            {"email": "not-an-email", "first_name": "Bob"},
        ],
        "crms": ["brevo"],
    },
)
ANSWER_EXAMPLE = OpenApiExample(
    "One created, one rejected",
    response_only=True,
    status_codes=["200"],
    value={
        "results": [
            {"index": 0, "email": "ann@example.com", "result": "created", "id": 42, "errors": {}},
            {
                "index": 1,
                "email": "not-an-email",
                "result": "rejected",
                "id": None,
                "errors": {"email": ["email 'not-an-email' is not a valid email address"]},
            },
        ],
        "totals": {"created": 1, "updated": 0, "unchanged": 0, "rejected": 1},
        "queued_count": 1,
        "crms": ["brevo"],
    },
)
BAD_REQUEST_EXAMPLE = OpenApiExample(
    "Too many items and an unknown CRM",
    response_only=True,
    status_codes=["400"],
    value={
        "contacts": ["Ensure this field has no more than %d elements." % MAX_ITEMS],
        "crms": {"1": ["Unknown CRM 'salesforce'. Known CRMs: brevo, hubspot, mautic, n8n."]},
    },
)


class ItemwiseJSONParser(JSONParser):
    """The API's JSON parsing, except that a NUL or a lone surrogate in an item is
    that item's rejection (clean_item), not the whole request's 400 as elsewhere:
    valid items are applied even when others are rejected."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(TOO_DEEP) from None


def _detail(description, message):
    return OpenApiResponse(
        response=OpenApiTypes.OBJECT,
        description=description,
        examples=[OpenApiExample(description, value={"detail": message}, response_only=True)],
    )


class BulkUpsertView(APIView):
    permission_classes = [CanChangeContacts]
    parser_classes = [ItemwiseJSONParser]

    @extend_schema(
        operation_id="contacts_bulk_upsert",
        summary="Create or update up to %d contacts by email" % MAX_ITEMS,
        description=DESCRIPTION,
        request=BulkUpsertSerializer,
        responses={
            200: OpenApiResponse(BulkUpsertAnswerSerializer, description="One result per item, in request order."),
            400: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="The request as a whole is malformed; errors by field. Nothing was written.",
                examples=[BAD_REQUEST_EXAMPLE],
            ),
            401: _detail("No credentials", "Authentication credentials were not provided."),
            403: _detail("Not allowed", "You do not have permission to perform this action."),
            415: _detail("Not JSON", 'Unsupported media type "text/plain" in request.'),
            429: _detail("Throttled", "Request was throttled. Expected available in 10 seconds."),
        },
        examples=[REQUEST_EXAMPLE, ANSWER_EXAMPLE],
        tags=["contacts"],
    )
    def post(self, request):
        request_serializer = BulkUpsertSerializer(data=request.data)
        request_serializer.is_valid(raise_exception=True)
        items = request_serializer.validated_data["contacts"]
        crms = request_serializer.validated_data["crms"]
        checked = [clean_item(item) for item in items]
        batch = upsert_contacts([row for row, _ in checked if row], crms)
        _requeue_updated(batch)
        answer = _answer(items, checked, batch, crms)
        _record(request.user, answer)
        return Response(answer)


def _requeue_updated(batch):
    """Updated contacts already synced are queued again if their CRM payload changed,
    as a save in the admin does (the post_save signal, which bulk writes skip)."""
    updated = {item.contact_id for item in batch.results if item.result == Result.UPDATED}
    if updated:
        # Robust, as for the signal: a CRM's configuration error is logged, and the
        # upsert, already committed, is still answered.
        transaction.on_commit(lambda: requeue_if_changed(sorted(updated)), robust=True)


def _record(user, answer):
    """One admin log entry for the request: the contacts it created, updated or
    left unchanged (and selected, with `crms`); nothing when all were rejected."""
    totals = answer["totals"]
    accepted = [result["id"] for result in answer["results"] if result["result"] != Result.REJECTED]
    if not accepted:
        return
    detail = "%s %s; %d (contact, CRM) pair(s) queued." % (
        audit.THROUGH_THE_API,
        ", ".join("%d %s" % (number, result) for result, number in totals.items()),
        answer["queued_count"],
    )
    # Items for the same email are one contact.
    contact = Contact(pk=accepted[0]) if len(set(accepted)) == 1 else None
    audit.record(user, "Upserted", count=len(set(accepted)), crms=answer["crms"], contact=contact, detail=detail)


def _answer(items, checked, batch, crms):
    """One result per item in request order: the accepted items take upsert_contacts'
    results in turn, the rejected ones their own errors."""
    written = iter(batch.results)
    results = []
    for index, (item, (row, errors)) in enumerate(zip(items, checked)):
        outcome = next(written) if row else None
        if outcome and outcome.result != Result.REJECTED:
            results.append(_result(index, outcome.email, outcome.result, outcome.contact_id, {}))
        elif outcome:
            reasons = {outcome.field or "non_field_errors": [outcome.error]}
            results.append(_result(index, outcome.email, Result.REJECTED, None, reasons))
        else:
            results.append(_result(index, echoed_email(item), Result.REJECTED, None, errors))
    totals = dict.fromkeys((Result.CREATED, Result.UPDATED, Result.UNCHANGED, Result.REJECTED), 0)
    for result in results:
        totals[result["result"]] += 1
    return {"results": results, "totals": totals, "queued_count": batch.queued, "crms": crms}


def _result(index, email, result, contact_id, errors):
    return {"index": index, "email": email, "result": result, "id": contact_id, "errors": errors}


urlpatterns = [
    path("contacts/bulk", BulkUpsertView.as_view(), name="contacts-bulk"),
]
