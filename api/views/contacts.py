"""GET /api/v3/contacts and GET /api/v3/contacts/{id}: contacts with their
per-CRM dual status, filtered by the admin list's rules (contacts.filters).

Each page costs the same queries whatever its size: the contacts, then their
sync rows in one prefetch (and, for one contact, its latest attempts in another).
"""

from django.db.models import Prefetch
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import ListAPIView, RetrieveAPIView
from rest_framework.pagination import CursorPagination

from contacts.filters import filter_contacts
from contacts.models import Contact, ContactSync, ProcessingStatus, SyncAttempt, SyncStatus

from ..permissions import CanViewSyncs
from ..read_serializers import (
    ContactDetailSerializer,
    ContactFilterErrorsSerializer,
    ContactFilterSerializer,
    ContactReadSerializer,
    DetailErrorSerializer,
)

# The attempts GET /contacts/{id} shows, newest first.
RECENT_ATTEMPTS = 20


class ContactCursorPagination(CursorPagination):
    """Pages in id order: ids are unique and indexed, and a contact created while a
    client pages through is never shown twice nor shifts the pages."""

    ordering = "id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request):
        """The page size asked for, or a 400: DRF would silently use the default for
        a value that is not a number, and the maximum for one above it."""
        raw = request.query_params.get(self.page_size_query_param, "")
        if not raw:
            return self.page_size
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= self.max_page_size):
            raise ValidationError({self.page_size_query_param: ["A whole number from 1 to %d." % self.max_page_size]})
        return int(raw)

    def decode_cursor(self, request):
        """DRF's cursor, or its 404 "Invalid cursor" when the position in it is not
        an id: DRF passes any text on to the id filter, a 500."""
        cursor = super().decode_cursor(request)
        position = cursor.position if cursor else None
        if position is not None and not (position.isascii() and position.isdigit()):
            raise NotFound(self.invalid_cursor_message)
        return cursor

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size, default=self.page_size)
        return parameters


def contacts_with_syncs():
    """Contacts with their sync rows in one prefetch query, in CRM order."""
    return Contact.objects.prefetch_related(Prefetch("syncs", queryset=ContactSync.objects.order_by("crm")))


NOT_ALLOWED = {
    401: OpenApiResponse(DetailErrorSerializer, description="No credentials, or a wrong token."),
    403: OpenApiResponse(DetailErrorSerializer, description="The user may not view contact syncs."),
    429: OpenApiResponse(DetailErrorSerializer, description="Too many requests for this token; retry later."),
}

SYNC_EXAMPLE = {
    "crm": "brevo",
    "sync_status": SyncStatus.ERROR,
    "processing_status": ProcessingStatus.ERROR,
    "attempts": 5,
    "last_error": "400: invalid phone number",
    "external_id": "",
    "synced_at": None,
    "next_attempt_at": None,
    "operation": "",
    "synced_email": "",
    "crm_event": "",
    "crm_event_at": None,
    "opted_out_at": None,
}
CONTACT_EXAMPLE = {
    "id": 42,
    "email": "jane@example.com",
    "first_name": "Jane",
    "last_name": "Doe",
    "phone": "+33 1 23 45 67 89",
    "company": "Example SA",
    "website": "https://example.com",
    "created_at": "2026-11-02T09:30:00Z",
    "updated_at": "2026-11-03T10:00:00Z",
    "syncs": [
        SYNC_EXAMPLE,
        {
            **SYNC_EXAMPLE,
            "crm": "hubspot",
            "sync_status": SyncStatus.COMPLETE,
            "processing_status": ProcessingStatus.COMPLETE,
            "attempts": 1,
            "last_error": "",
            "external_id": "51",
            "synced_at": "2026-11-03T10:05:00Z",
        },
    ],
}


# Query parameters the list takes besides its filters.
PAGING_PARAMETERS = ("cursor", "page_size", "format")


@extend_schema(
    summary="List contacts with their per-CRM status",
    description=(
        "Contacts in id order, each with one entry per CRM it has a sync row for (a CRM without "
        "one is New for it). Filters have the admin list's meaning. Cursor pagination: follow "
        "`next`; `page_size` from 1 to %d (default %d). An unknown parameter or filter value, "
        "a parameter given twice or a page size out of range is refused with 400 naming the "
        "valid ones; a malformed cursor is answered 404."
    )
    % (ContactCursorPagination.max_page_size, ContactCursorPagination.page_size),
    # The serializer itself, so the schema's enum of CRMs is the registry's at the time it is built.
    parameters=[ContactFilterSerializer],
    responses={
        200: ContactReadSerializer(many=True),
        400: OpenApiResponse(ContactFilterErrorsSerializer, description="A filter value or parameter is refused."),
        404: OpenApiResponse(DetailErrorSerializer, description="The cursor is malformed."),
        **NOT_ALLOWED,
    },
    examples=[
        OpenApiExample(
            "A page",
            value={
                "next": "https://crm.example.com/api/v3/contacts?cursor=cD00Mg%3D%3D",
                "previous": None,
                "results": [CONTACT_EXAMPLE],
            },
            response_only=True,
            status_codes=["200"],
        ),
        OpenApiExample(
            "Unknown CRM",
            value={"crm": ['"zoho" is not a known CRM. Known CRMs: brevo, hubspot, mautic, n8n.']},
            response_only=True,
            status_codes=["400"],
        ),
    ],
)
class ContactListView(ListAPIView):
    permission_classes = [CanViewSyncs]
    serializer_class = ContactReadSerializer
    pagination_class = ContactCursorPagination

    def get_queryset(self):
        return filter_contacts(contacts_with_syncs(), **self.validated_filters())

    def validated_filters(self):
        params = self.request.query_params
        filters = ContactFilterSerializer(data={name: params[name] for name in params})
        self.refuse_repeated(params)
        unknown = sorted(set(params) - set(filters.fields) - set(PAGING_PARAMETERS))
        if unknown:
            raise ValidationError(
                {
                    "parameters": [
                        "Unknown parameter %r. This endpoint takes: %s."
                        % (name, ", ".join([*filters.fields, *PAGING_PARAMETERS]))
                        for name in unknown
                    ]
                }
            )
        filters.is_valid(raise_exception=True)
        return filters.filters()

    @staticmethod
    def refuse_repeated(params):
        """Each parameter takes one value: `crm=a&crm=b` would otherwise mean only b."""
        repeated = sorted(name for name in params if len(params.getlist(name)) > 1)
        if repeated:
            raise ValidationError({name: ["Give this parameter once."] for name in repeated})


@extend_schema(
    summary="One contact with its per-CRM status and recent attempts",
    parameters=[OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The contact's id.")],
    description="The contact as in the list, with its latest %d sync attempts, newest first." % RECENT_ATTEMPTS,
    responses={
        200: ContactDetailSerializer,
        400: OpenApiResponse(
            DetailErrorSerializer, description="A NUL character in the address or the Authorization header."
        ),
        404: OpenApiResponse(DetailErrorSerializer, description="No contact has this id."),
        **NOT_ALLOWED,
    },
    examples=[
        OpenApiExample(
            "A contact",
            value={
                **CONTACT_EXAMPLE,
                "recent_attempts": [
                    {
                        "crm": "hubspot",
                        "attempted_at": "2026-11-03T10:05:00Z",
                        "outcome": "accepted",
                        "http_status": 200,
                        "error": "",
                    },
                    {
                        "crm": "brevo",
                        "attempted_at": "2026-11-03T10:04:00Z",
                        "outcome": "failed",
                        "http_status": 400,
                        "error": "400: invalid phone number",
                    },
                ],
            },
            response_only=True,
            status_codes=["200"],
        ),
        OpenApiExample(
            "Unknown id",
            value={"detail": "No Contact matches the given query."},
            response_only=True,
            status_codes=["404"],
        ),
    ],
)
class ContactDetailView(RetrieveAPIView):
    permission_classes = [CanViewSyncs]
    serializer_class = ContactDetailSerializer

    def get_queryset(self):
        # A sliced prefetch: the latest attempts per contact in one query (a window function).
        recent = SyncAttempt.objects.order_by("-attempted_at", "-id")[:RECENT_ATTEMPTS]
        return contacts_with_syncs().prefetch_related(Prefetch("sync_attempts", recent, to_attr="recent_attempts"))


urlpatterns = [
    path("contacts", ContactListView.as_view(), name="contact-list"),
    # Any segment, not <int:pk>: an id that is not a number gets the API's JSON 404
    # (DRF's get_object), not Django's HTML page. v3_urls lists contacts/bulk before
    # this module, so that path still reaches its own view.
    path("contacts/<str:pk>", ContactDetailView.as_view(), name="contact-detail"),
]
