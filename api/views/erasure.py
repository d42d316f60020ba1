"""POST /api/v3/contacts/erase and GET /api/v3/erasures/{id}: the admin's "Erase from
every CRM" (contacts.erasure.start) and the proof it keeps."""

from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts import audit, erasure
from contacts.models import Erasure
from contacts.suppression import SuppressionKeyMissing, suppression_key

from ..erasure_serializers import (
    MAX_EMAILS,
    EraseAnswerSerializer,
    EraseRequestSerializer,
    ErasureProofSerializer,
)
from ..permissions import CanEraseContacts
from ..read_serializers import DetailErrorSerializer

ERASE_DESCRIPTION = (
    """
Erase up to %d people from every CRM (GDPR Art. 17), as the admin's "Erase from every
CRM" action does. For each distinct address (in its canonical form):

- each configured CRM is queued to erase the person (HubSpot: GDPR delete, which
  also blocks the email from being re-created there; Brevo and Mautic: the contact is
  deleted; n8n: an `erase` event is sent to the workflow, which must do the erasing).
  A CRM not configured is `not_configured`: erase the person there by hand;
- the email goes on the suppression list at once: imports, bulk upserts and
  enrichment callbacks with it are refused until staff lift it in the admin;
- once every CRM has confirmed (a CRM without the person counts as confirmed), the
  local contact is deleted and the erasure is `complete`.

The answer is 202: the CRMs are asked by the sync workers. Follow an erasure with
`GET /api/v3/erasures/{id}`. Every address is checked first: a malformed one refuses
the whole request (400, errors keyed by position) and nothing starts.

Without `CRMSYNC_SUPPRESSION_KEY` set on the server nothing can be erased: the answer
is 503 saying so (a server configuration problem, not the request's).
"""
    % MAX_EMAILS
)

KEY_MISSING = OpenApiResponse(
    DetailErrorSerializer,
    description="CRMSYNC_SUPPRESSION_KEY is not set on the server; nothing was started.",
    examples=[
        OpenApiExample(
            "No suppression key",
            value={"detail": str(SuppressionKeyMissing())},
            response_only=True,
            status_codes=["503"],
        )
    ],
)
NOT_ALLOWED = {
    401: OpenApiResponse(DetailErrorSerializer, description="No credentials, or a wrong token."),
    403: OpenApiResponse(DetailErrorSerializer, description="The user lacks contacts.erase_contact."),
    429: OpenApiResponse(DetailErrorSerializer, description="Too many requests for this token; retry later."),
}
STARTED_EXAMPLE = OpenApiExample(
    "Two erasures started, Brevo and HubSpot configured",
    value={
        "erasures": [
            {
                "id": 17,
                "status": "pending",
                "results": {
                    "brevo": "pending",
                    "hubspot": "pending",
                    "mautic": "not_configured",
                    "n8n": "not_configured",
                },
            },
            {
                "id": 18,
                "status": "pending",
                "results": {
                    "brevo": "pending",
                    "hubspot": "pending",
                    "mautic": "not_configured",
                    "n8n": "not_configured",
                },
            },
        ]
    },
    response_only=True,
    status_codes=["202"],
)
PROOF_EXAMPLE = OpenApiExample(
    "Complete",
    value={
        "id": 17,
        "status": "complete",
        "requested_by": "dpo",
        "requested_via": "api",
        "requested_at": "2026-12-05T08:10:00Z",
        "completed_at": "2026-12-05T08:11:02Z",
        "cancelled_by": "",
        "local_contact_deleted": True,
        "email_hash": "4f2a0c9e7d1b3a5c8e6f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a6b8c0d",
        "results": [
            {
                "crm": "brevo",
                "outcome": "erased",
                "attempts": 1,
                "first_attempt_at": "2026-12-05T08:11:00Z",
                "last_attempt_at": "2026-12-05T08:11:00Z",
                "confirmed_at": "2026-12-05T08:11:00Z",
                "http_status": 204,
                "answer": "",
            },
            {
                "crm": "mautic",
                "outcome": "not_configured",
                "attempts": 0,
                "first_attempt_at": None,
                "last_attempt_at": None,
                "confirmed_at": None,
                "http_status": None,
                "answer": "",
            },
        ],
    },
    response_only=True,
    status_codes=["200"],
)


class EraseView(APIView):
    permission_classes = [CanEraseContacts]

    @extend_schema(
        operation_id="contacts_erase",
        summary="Erase up to %d people from every CRM (GDPR)" % MAX_EMAILS,
        description=ERASE_DESCRIPTION,
        request=EraseRequestSerializer,
        responses={
            202: OpenApiResponse(EraseAnswerSerializer, description="The erasures started, one per address."),
            400: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="A malformed address (errors keyed by position), or no list, or more than %d "
                "addresses. Nothing was started." % MAX_EMAILS,
                examples=[
                    OpenApiExample(
                        "A bad address",
                        value={"emails": {"1": ["Enter a valid email address."]}},
                        response_only=True,
                        status_codes=["400"],
                    )
                ],
            ),
            503: KEY_MISSING,
            **NOT_ALLOWED,
        },
        examples=[
            OpenApiExample("Two people", value={"emails": ["ann@example.com", "bob@example.com"]}, request_only=True),
            STARTED_EXAMPLE,
        ],
        tags=["erasure"],
    )
    def post(self, request):
        serializer = EraseRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if not suppression_key():
            return _key_missing()
        try:
            started = erasure.start(
                serializer.validated_data["emails"], requested_by=request.user.get_username(), via="api"
            )
        except SuppressionKeyMissing:
            return _key_missing()
        audit.record_erasures(request.user, started, detail=audit.THROUGH_THE_API)
        # Read again: an erasure no configured CRM has to confirm is complete already.
        erasures = Erasure.objects.filter(pk__in=[e.pk for e in started]).prefetch_related("results").order_by("pk")
        answer = {
            "erasures": [
                {"id": e.pk, "status": e.status, "results": {r.crm: r.outcome for r in e.results.all()}}
                for e in erasures
            ]
        }
        return Response(EraseAnswerSerializer(answer).data, status=status.HTTP_202_ACCEPTED)


def _key_missing():
    return Response({"detail": str(SuppressionKeyMissing())}, status=status.HTTP_503_SERVICE_UNAVAILABLE)


class ErasureDetailView(APIView):
    permission_classes = [CanEraseContacts]

    @extend_schema(
        operation_id="erasures_retrieve",
        summary="An erasure's proof",
        description=(
            "Who asked and how, when, where it stands (pending until every CRM has confirmed, then "
            "complete; or cancelled), whether the local contact was deleted, the keyed hash of the "
            "email, and each CRM's answer with any email address removed. Never the email itself."
        ),
        responses={
            200: ErasureProofSerializer,
            404: OpenApiResponse(DetailErrorSerializer, description="No erasure has this id."),
            **NOT_ALLOWED,
        },
        examples=[PROOF_EXAMPLE],
        tags=["erasure"],
    )
    def get(self, request, pk):
        proof = get_object_or_404(Erasure.objects.prefetch_related("results"), pk=pk)
        return Response(ErasureProofSerializer(proof).data)


urlpatterns = [
    path("contacts/erase", EraseView.as_view(), name="contacts-erase"),
    path("erasures/<int:pk>", ErasureDetailView.as_view(), name="erasure-detail"),
]
