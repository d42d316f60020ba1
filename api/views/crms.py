"""GET /api/v3/crms and POST /api/v3/crms/{crm}/pause, /resume and /sync: each
configured CRM's state, and the sync dashboard's controls.

The figures are the health check's (ContactSync.objects.queue_stats) and the
pause rules are CRMState's: this module only arranges them. GET /crms costs the
same four queries whatever the number of CRMs or rows.
"""

from django.urls import path
from django.utils import timezone
from django_q.tasks import async_task
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts import audit
from contacts.models import ContactSync
from integrations.models import CRMState
from integrations.registry import enabled_backend_classes
from integrations.schedules import sync_schedule_name

from ..permissions import CanPauseCRMs, CanViewSyncs
from ..read_serializers import (
    CRMListSerializer,
    CRMNotFoundSerializer,
    DetailErrorSerializer,
    PauseChangeSerializer,
    SyncQueuedSerializer,
)

# The task each CRM's Schedule runs (integrations.schedules.wanted_schedules).
SYNC_TASK = "integrations.tasks.sync_crm_task"


def crm_statuses(backend_classes, now):
    """One CRMStatusSerializer dict per backend class, in their order."""
    names = [backend_class.name for backend_class in backend_classes]
    queues = ContactSync.objects.queue_stats(names, now)
    errors = ContactSync.objects.error_counts(names)
    states = {state.crm: state for state in CRMState.objects.filter(crm__in=names)}
    return [
        {
            "name": backend_class.name,
            "label": backend_class.verbose_name,
            **queues[backend_class.name],
            "errors": errors[backend_class.name],
            **_pause_and_runs(states.get(backend_class.name) or CRMState(crm=backend_class.name), now),
        }
        for backend_class in backend_classes
    ]


def _pause_and_runs(state, now):
    pause = state.current_pause(now)
    breaker = state.open_breaker()
    return {
        "paused": pause is not None,
        "pause": _pause(state, pause, now),
        "breaker": {"failing_since": state.failing_since, "next_probe_at": breaker.until} if breaker else None,
        "last_run_at": state.last_run_at,
        "last_success_at": state.last_success_at,
    }


def _pause(state, pause, now):
    if pause is None:
        return None
    # current_pause() chose the pause; this only names which of the three it is.
    kind = "staff" if state.staff_pause() else "crm" if state.crm_pause(now) else "breaker"
    return {"kind": kind, "by": pause.by, "until": pause.until, "reason": pause.reason}


def configured_backend_class(crm):
    """The enabled backend class named `crm` (the sandbox's count), or a 404 naming them."""
    configured = {backend_class.name: backend_class for backend_class in enabled_backend_classes()}
    if crm not in configured:
        raise NotFound(
            {
                "detail": "No configured CRM is named %r. Configured CRMs: %s."
                % (crm, ", ".join(configured) or "none"),
                "configured_crms": list(configured),
            }
        )
    return configured[crm]


NOT_ALLOWED = {
    400: OpenApiResponse(
        DetailErrorSerializer, description="A NUL character in the address or the Authorization header."
    ),
    401: OpenApiResponse(DetailErrorSerializer, description="No credentials, or a wrong token."),
    403: OpenApiResponse(DetailErrorSerializer, description="The user lacks the permission this endpoint needs."),
    429: OpenApiResponse(DetailErrorSerializer, description="Too many requests for this token; retry later."),
}
NOT_CONFIGURED = {
    404: OpenApiResponse(CRMNotFoundSerializer, description="No configured CRM has this name; the answer lists them."),
}
CRM_EXAMPLE = {
    "name": "brevo",
    "label": "Brevo",
    "queued": 1200,
    "due": 800,
    "in_flight": 50,
    "oldest_due_at": "2026-12-05T08:10:00Z",
    "errors": 3,
    "paused": True,
    "pause": {
        "kind": "staff",
        "by": "alice",
        "until": None,
        "reason": "Paused by alice at 2026-12-05 08:15 UTC; resume it on the sync dashboard.",
    },
    "breaker": None,
    "last_run_at": "2026-12-05T08:14:00Z",
    "last_success_at": "2026-12-05T08:14:00Z",
}
NOT_CONFIGURED_EXAMPLE = OpenApiExample(
    "Unknown CRM",
    value={"detail": "No configured CRM is named 'zoho'. Configured CRMs: brevo.", "configured_crms": ["brevo"]},
    response_only=True,
    status_codes=["404"],
)


@extend_schema(
    summary="Each configured CRM's state",
    description=(
        "Every configured CRM (its settings are set, or the local sandbox emulates it): queue depth "
        "(queued, due now, in flight), the oldest due row, rows given up in Error, whether workers "
        "are paused and why (staff until resumed, the CRM until a time, or the circuit breaker until "
        "its next probe), the breaker, and the last runs. Not paginated: one entry per configured CRM."
    ),
    responses={200: CRMListSerializer, **NOT_ALLOWED},
    examples=[OpenApiExample("Brevo paused by staff", value={"results": [CRM_EXAMPLE]}, response_only=True)],
)
class CRMListView(APIView):
    permission_classes = [CanViewSyncs]

    def get(self, request):
        statuses = crm_statuses(enabled_backend_classes(), timezone.now())
        return Response(CRMListSerializer({"results": statuses}).data)


class PauseChangeView(APIView):
    """POST changes the CRM's staff pause with `change` (a CRMStateQuerySet method)."""

    permission_classes = [CanPauseCRMs]
    change = None
    # What the change is called in the admin log (contacts.audit).
    verb = None

    def post(self, request, crm):
        backend_class = configured_backend_class(crm)
        changed = self.change(crm, request.user.get_username())
        if changed:
            audit.record(request.user, self.verb, count=None, crms=[crm], model=CRMState, detail=audit.THROUGH_THE_API)
        state = crm_statuses([backend_class], timezone.now())[0]
        return Response(PauseChangeSerializer({"changed": changed, "crm": state}).data)


def _pause_change_schema(summary, description, example_changed):
    return extend_schema(
        summary=summary,
        description=description,
        request=None,
        responses={200: PauseChangeSerializer, **NOT_CONFIGURED, **NOT_ALLOWED},
        examples=[
            OpenApiExample("Changed", value=example_changed, response_only=True, status_codes=["200"]),
            NOT_CONFIGURED_EXAMPLE,
        ],
    )


@_pause_change_schema(
    "Pause a CRM",
    "Staff pause: no worker claims anything for the CRM until it is resumed; work already claimed "
    "finishes. 200 either way; `changed` is false when it was already paused by staff (who paused "
    "it first, and when, are kept). No request body.",
    {"changed": True, "crm": CRM_EXAMPLE},
)
class PauseView(PauseChangeView):
    verb = "Paused"

    def change(self, crm, by):
        return CRMState.objects.pause_by_staff(crm, by=by)


@_pause_change_schema(
    "Resume a CRM",
    "Ends a staff pause. A pause the CRM asked for (a rate limit, bad credentials) or an open "
    "circuit breaker runs its course, so `paused` may stay true. 200 either way; `changed` is "
    "false when it was not paused by staff. No request body.",
    {"changed": True, "crm": {**CRM_EXAMPLE, "paused": False, "pause": None}},
)
class ResumeView(PauseChangeView):
    verb = "Resumed"

    def change(self, crm, by):
        return CRMState.objects.resume(crm, by=by)


@extend_schema(
    summary="Run one sync tick for a CRM now",
    description=(
        "Queues, through django-q2, the task the CRM's schedule runs (one tick: its workers claim "
        "and push due rows within the tick's time budget). 202 with the task's id; a cluster must "
        "be running to take it. A paused CRM's tick claims nothing. No request body."
    ),
    request=None,
    responses={202: SyncQueuedSerializer, **NOT_CONFIGURED, **NOT_ALLOWED},
    examples=[
        OpenApiExample(
            "Queued",
            value={
                "crm": "brevo",
                "task_id": "5f0a3c9e2b7d4e1f8a6b9c0d1e2f3a4b",
                "message": "A Brevo sync tick is queued.",
            },
            response_only=True,
            status_codes=["202"],
        ),
        NOT_CONFIGURED_EXAMPLE,
    ],
)
class SyncNowView(APIView):
    permission_classes = [CanPauseCRMs]

    def post(self, request, crm):
        backend_class = configured_backend_class(crm)
        # The schedule's group, so that this tick's result is listed with the scheduled ones.
        task_id = async_task(SYNC_TASK, crm, group=sync_schedule_name(crm))
        audit.record(
            request.user, "Queued a sync tick for", count=None, crms=[crm], model=CRMState, detail=audit.THROUGH_THE_API
        )
        message = "A %s sync tick is queued." % backend_class.verbose_name
        queued = SyncQueuedSerializer({"crm": crm, "task_id": task_id, "message": message})
        return Response(queued.data, status=status.HTTP_202_ACCEPTED)


urlpatterns = [
    path("crms", CRMListView.as_view(), name="crm-list"),
    path("crms/<str:crm>/pause", PauseView.as_view(), name="crm-pause"),
    path("crms/<str:crm>/resume", ResumeView.as_view(), name="crm-resume"),
    path("crms/<str:crm>/sync", SyncNowView.as_view(), name="crm-sync"),
]
