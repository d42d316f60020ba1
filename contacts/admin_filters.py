"""Changelist filters for contacts and their per-CRM sync rows.

The rules are in contacts.filters, shared with the HTTP API: here each filter
reads the chosen CRM from the request and hands it over.
"""

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from integrations.registry import crm_choices

from . import filters
from .models import CRMEvent, ProcessingStatus, SyncStatus

CRM_PARAMETER = "crm"
STATUS_PARAMETERS = ("sync_status", "processing_status", "sync_error", "crm_event", "opted_out")
CRM_EVENT_CHOICES = [choice for choice in CRMEvent.choices if choice[0]]
OPTED_OUT_CHOICES = [(filters.OPTED_OUT, _("Yes")), (filters.NOT_OPTED_OUT, _("No"))]
# Both statuses have a "Complete" and an "Error": the titles and the choices say
# which one a filter is about, staff's decision or where the work stands.
DECISION_TITLE = _("staff decision (sync status)")
WORK_TITLE = _("work (processing status)")
DECISION_CHOICES = [(value, format_lazy("{}: {}", _("Decision"), label)) for value, label in SyncStatus.choices]
WORK_CHOICES = [(value, format_lazy("{}: {}", _("Work"), label)) for value, label in ProcessingStatus.choices if value]


def _chosen_crm(request):
    # ContactCRMFilter, built with the others before any filter runs, has refused
    # a CRM it does not offer.
    return request.GET.get(CRM_PARAMETER) or None


class OfferedChoicesFilter(admin.SimpleListFilter):
    """A filter that takes only the values it offers. Anything else is Django's
    IncorrectLookupParameters (the list without it, flagged ?e=1), so a mistyped
    link never shows a list that looks filtered but is not, nor reaches a query."""

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        value = self.value()
        if value and value not in {str(key) for key, _label in self.lookup_choices}:
            raise IncorrectLookupParameters("%s has no choice %r." % (self.title, value))


class ContactCRMFilter(OfferedChoicesFilter):
    title = _("CRM")
    parameter_name = CRM_PARAMETER

    def lookups(self, request, model_admin):
        return crm_choices()

    def queryset(self, request, queryset):
        # On its own, a CRM narrows to contacts staff have decided something about
        # for it. With a status chosen, the status filter applies the CRM itself
        # (and "New" must include contacts with no row at all).
        if not self.value() or any(name in request.GET for name in STATUS_PARAMETERS):
            return queryset
        return filters.decided_for(queryset, self.value())


class ContactSyncStatusFilter(OfferedChoicesFilter):
    title = DECISION_TITLE
    parameter_name = STATUS_PARAMETERS[0]

    def lookups(self, request, model_admin):
        return DECISION_CHOICES

    def queryset(self, request, queryset):
        if self.value():
            return filters.with_sync_status(queryset, self.value(), _chosen_crm(request))
        return queryset


class ContactProcessingStatusFilter(OfferedChoicesFilter):
    title = WORK_TITLE
    parameter_name = STATUS_PARAMETERS[1]

    def lookups(self, request, model_admin):
        return WORK_CHOICES

    def queryset(self, request, queryset):
        if self.value():
            return filters.with_processing_status(queryset, self.value(), _chosen_crm(request))
        return queryset


class ContactSyncErrorFilter(admin.SimpleListFilter):
    """Contacts whose sync (for the chosen CRM) carries exactly this error: the
    sync dashboard links here, so staff can fix those contacts and retry them."""

    title = _("sync error")
    parameter_name = STATUS_PARAMETERS[2]

    def lookups(self, request, model_admin):
        # Only shown while a link chose an error; a list of every message would be useless.
        value = self.value()
        return [(value, value if len(value) <= 60 else value[:59] + "…")] if value else []

    def queryset(self, request, queryset):
        if self.value():
            return filters.with_sync_error(queryset, self.value(), _chosen_crm(request))
        return queryset


class ContactCRMEventFilter(OfferedChoicesFilter):
    """Contacts with a row (for the chosen CRM) whose CRM last reported this event."""

    title = _("CRM event")
    parameter_name = STATUS_PARAMETERS[3]

    def lookups(self, request, model_admin):
        return CRM_EVENT_CHOICES

    def queryset(self, request, queryset):
        if self.value():
            return filters.with_crm_event(queryset, self.value(), _chosen_crm(request))
        return queryset


class ContactOptedOutFilter(OfferedChoicesFilter):
    title = _("opted out")
    parameter_name = STATUS_PARAMETERS[4]

    def lookups(self, request, model_admin):
        return OPTED_OUT_CHOICES

    def queryset(self, request, queryset):
        if self.value():
            return filters.with_opted_out(queryset, self.value(), _chosen_crm(request))
        return queryset


class SyncCRMEventFilter(OfferedChoicesFilter):
    """The events only, not "(none)": a DISTINCT over the table is not needed either."""

    title = _("CRM event")
    parameter_name = "crm_event"

    def lookups(self, request, model_admin):
        return CRM_EVENT_CHOICES

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(crm_event=self.value())
        return queryset


class SyncOptedOutFilter(OfferedChoicesFilter):
    title = _("opted out")
    parameter_name = "opted_out"

    def lookups(self, request, model_admin):
        return OPTED_OUT_CHOICES

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(opted_out_at__isnull=self.value() != filters.OPTED_OUT)
        return queryset


class SyncCRMFilter(OfferedChoicesFilter):
    """Choices from the registry, not from a DISTINCT over a large table."""

    title = _("CRM")
    parameter_name = CRM_PARAMETER

    def lookups(self, request, model_admin):
        return crm_choices()

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(crm=self.value())
        return queryset


class SyncWarningFilter(OfferedChoicesFilter):
    """Rows whose CRM took the last push with a reservation (ContactSync.warning)."""

    title = _("has a warning")
    parameter_name = "has_warning"

    def lookups(self, request, model_admin):
        return [("yes", _("Yes")), ("no", _("No"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(warning="")
        if self.value() == "no":
            return queryset.filter(warning="")
        return queryset


class SyncDecisionFilter(OfferedChoicesFilter):
    """The Contact syncs list's sync status, titled as on the Contacts list; the
    parameter stays Django's field filter's, so links keep working."""

    title = DECISION_TITLE
    parameter_name = "sync_status__exact"

    def lookups(self, request, model_admin):
        return DECISION_CHOICES

    def queryset(self, request, queryset):
        return queryset.filter(sync_status=self.value()) if self.value() else queryset


class SyncWorkFilter(OfferedChoicesFilter):
    title = WORK_TITLE
    parameter_name = "processing_status__exact"

    def lookups(self, request, model_admin):
        return WORK_CHOICES

    def queryset(self, request, queryset):
        return queryset.filter(processing_status=self.value()) if self.value() else queryset
