from django.contrib import admin
from django.db.models import F
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from contacts.admin_badges import when
from contacts.admin_readonly import ReadOnlyAdmin

from . import mapping_admin  # noqa: F401 (registers the field mappings' pages)
from .models import AlertIncident, CRMState, Enrichment

# The list shows this much of a pause's reason; the tooltip has all of it.
REASON_SHOWN = 90


@admin.register(CRMState)
class CRMStateAdmin(ReadOnlyAdmin):
    """Read-only: the engine writes these rows; staff see pauses and runs here."""

    list_display = ("__str__", "is_paused", "paused_by_shown", "paused_until_shown", "reason", "last_run_at")
    readonly_fields = (
        "crm",
        "paused_by",
        "paused_at",
        "paused_until",
        "pause_reason",
        "failing_since",
        "next_probe_at",
        "last_run_at",
        "last_success_at",
        "updated_at",
    )

    class Media:
        css = {"all": ("contacts/admin.css",)}

    @admin.display(description=_("paused"), boolean=True)
    def is_paused(self, obj):
        # By staff, by the CRM or by the circuit breaker: the rules live with the model.
        return obj.current_pause(timezone.now()) is not None

    @admin.display(description=_("paused by"))
    def paused_by_shown(self, obj):
        """Who stopped the CRM: a staff member (and since when), the CRM itself or
        the circuit breaker; empty while it runs."""
        now = timezone.now()
        if obj.staff_pause():
            return format_html("{} <span class='crm-reason'>{}</span>", obj.paused_by, when(obj.paused_at))
        if obj.crm_pause(now):
            return _("the CRM")
        if obj.breaker_pause(now):
            return _("the circuit breaker")
        return ""

    @admin.display(description=_("paused until"))
    def paused_until_shown(self, obj):
        pause = obj.current_pause(timezone.now())
        if pause is None:
            return ""
        return when(pause.until) if pause.until else _("until resumed")

    @admin.display(description=_("why"))
    def reason(self, obj):
        """Why it is paused now; once a pause of the CRM's own has ended, its reason
        stays, marked as over, for staff to see what happened last."""
        pause = obj.current_pause(timezone.now())
        reason = pause.reason if pause else obj.pause_reason
        if not reason:
            return ""
        return format_html(
            '<span class="crm-clamp{}" title="{}">{}{}</span>',
            "" if pause else " crm-reason",
            reason,
            "" if pause else _("Last pause, over: "),
            Truncator(reason).chars(REASON_SHOWN),
        )


@admin.register(Enrichment)
class EnrichmentAdmin(admin.ModelAdmin):
    list_display = ("enrichment_id", "contact", "status", "updated_fields", "received_at")
    list_filter = ("status",)
    search_fields = ("enrichment_id", "contact__email")
    list_select_related = ("contact",)
    readonly_fields = ("enrichment_id", "contact", "status", "data", "metadata", "updated_fields", "received_at")
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(AlertIncident)
class AlertIncidentAdmin(ReadOnlyAdmin):
    """Read-only: what staff were alerted about (integrations.alerts), open ones first."""

    list_display = ("__str__", "kind", "opened_at", "resolved_at", "is_open")
    list_filter = ("kind", "crm", ("resolved_at", admin.EmptyFieldListFilter))
    readonly_fields = ("crm", "kind", "opened_at", "resolved_at", "summary")
    show_full_result_count = False

    @admin.display(description=_("open"), boolean=True)
    def is_open(self, obj):
        return obj.resolved_at is None

    def get_ordering(self, request):
        # Open first (NULL resolved_at), then the newest.
        return (F("resolved_at").desc(nulls_first=True), "-opened_at")
