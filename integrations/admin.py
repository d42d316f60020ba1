from django.contrib import admin
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .models import CRMState, Enrichment


@admin.register(CRMState)
class CRMStateAdmin(admin.ModelAdmin):
    """Read-only: the engine writes these rows; staff see pauses and runs here."""

    list_display = ("__str__", "is_paused", "paused_until", "pause_reason", "last_run_at", "last_success_at")
    readonly_fields = ("crm", "paused_until", "pause_reason", "last_run_at", "last_success_at", "updated_at")

    @admin.display(description=_("paused"), boolean=True)
    def is_paused(self, obj):
        # By staff, by the CRM or by the circuit breaker: the rules live with the model.
        return obj.current_pause(timezone.now()) is not None

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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
