import json

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.humanize.templatetags.humanize import intcomma
from django.db import models
from django.db.models import Prefetch
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator, get_text_list
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from integrations.registry import UnknownCRM, crm_choices, get_backend_class, verbose_crm_name

from . import audit, selection
from .admin_badges import compact_when, crm_event_badge, event_kind, state_with_warning, when
from .admin_confirmation import crm_rows
from .admin_filters import (
    ContactCRMEventFilter,
    ContactCRMFilter,
    ContactOptedOutFilter,
    ContactProcessingStatusFilter,
    ContactSyncErrorFilter,
    ContactSyncStatusFilter,
    SyncCRMEventFilter,
    SyncCRMFilter,
    SyncDecisionFilter,
    SyncOptedOutFilter,
    SyncWarningFilter,
    SyncWorkFilter,
)
from .admin_readonly import ReadOnlyAdmin
from .erasure_admin import ContactErasureMixin
from .export import CSVExportMixin
from .forms import ContactForm, CRMChoiceForm
from .import_admin import ContactImportMixin
from .models import Contact, ContactSync, SyncAttempt, SyncStatus

RECENT_ATTEMPTS_SHOWN = 20
# A list cell shows this much of an error; its tooltip has all of it.
ERROR_SHOWN = 80


def crm_list(crms):
    return get_text_list([verbose_crm_name(crm) for crm in crms], _("and"))


def external_link(sync):
    """The CRM's id for the contact, linked to the CRM's own page when it has one."""
    try:
        url = get_backend_class(sync.crm).external_url(sync.external_id)
    except UnknownCRM:
        url = None
    if url:
        return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', url, sync.external_id)
    return sync.external_id


def clamped(text, length=ERROR_SHOWN):
    """Long text (an error) cut to `length` characters, all of it in the tooltip."""
    if not text:
        return ""
    return format_html('<span class="crm-clamp" title="{}">{}</span>', text, Truncator(text).chars(length))


def attribute_text(value):
    """An attribute's value as text: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def sync_badge(sync, crm):
    """A small coloured label for one CRM; the tooltip says where things stand, and
    a mark shows an event the CRM reported (an opt-out, a deletion, a merge)."""
    if sync is None:
        css, tooltip = SyncStatus.NEW, "%s: %s" % (verbose_crm_name(crm), SyncStatus.NEW.label)
    else:
        css = sync.sync_status
        tooltip = "%s: %s" % (verbose_crm_name(crm), sync.get_sync_status_display())
        if sync.processing_status:
            tooltip += " / %s" % sync.get_processing_status_display()
        if sync.attempts:
            tooltip += " (%s)" % ngettext("%s attempt", "%s attempts", sync.attempts) % intcomma(sync.attempts)
        if sync.crm_event:
            tooltip += "\n%s %s" % (sync.get_crm_event_display(), when(sync.crm_event_at))
            css += " crm-badge--event-%s" % event_kind(sync.crm_event)
        if sync.last_error:
            tooltip += "\n%s" % Truncator(sync.last_error).chars(300)
        if sync.warning:
            tooltip += "\n%s" % Truncator(sync.warning).chars(300)
            css += " crm-badge--warning"
    return format_html(
        '<span class="crm-badge crm-badge--{}" title="{}">{}</span>',
        css,
        tooltip,
        verbose_crm_name(crm),
    )


class ContactSyncInline(admin.TabularInline):
    model = ContactSync
    extra = 0
    can_delete = False
    fields = (
        "crm_label",
        "sync_status",
        "state",
        "crm_event_shown",
        "attempts",
        "next_attempt",
        "error_shown",
        "external_link",
        "synced_email",
        "synced",
    )
    readonly_fields = fields
    verbose_name_plural = _("CRM sync status")
    # Django's tabular inline without the row's caption ("1000 for Brevo").
    template = "admin/contacts/contact/sync_status_inline.html"

    @admin.display(description=_("CRM"))
    def crm_label(self, obj):
        return obj.crm_label

    @admin.display(description=_("processing status"))
    def state(self, obj):
        return state_with_warning(obj)

    @admin.display(description=_("CRM event"))
    def crm_event_shown(self, obj):
        return crm_event_badge(obj)

    @admin.display(description=_("next attempt at"))
    def next_attempt(self, obj):
        return compact_when(obj.next_attempt_at)

    @admin.display(description=_("last error"))
    def error_shown(self, obj):
        return clamped(obj.last_error)

    @admin.display(description=_("ID in the CRM"))
    def external_link(self, obj):
        return external_link(obj)

    @admin.display(description=_("synced at"))
    def synced(self, obj):
        return compact_when(obj.synced_at)

    def has_add_permission(self, request, obj=None):
        # Rows come from the actions, which follow the state machine.
        return False


def only_contact(contacts, count):
    """The one contact of `contacts` when `count` (its size, counted already) is 1,
    for the log entry to show on its History page; otherwise None."""
    return contacts.only("pk").first() if count == 1 else None


def sole_contact(syncs):
    """The contact all the rows of a ContactSync queryset belong to, if there is one
    (two cheap queries: the first row's contact, then whether any row is another's)."""
    first = syncs.order_by().values_list("contact_id", flat=True).first()
    if first is None or syncs.exclude(contact_id=first).exists():
        return None
    return Contact(pk=first)


def record_retry(user, retried, *, contact=None):
    """One log entry for a retry: how many (contact, CRM) syncs were queued again
    ({crm: number}), for which CRMs."""
    crms = [crm for crm, number in retried.items() if number]
    return audit.record(user, "Retried", count=sum(retried.values()), crms=crms, contact=contact, model=ContactSync)


@admin.register(Contact)
class ContactAdmin(ContactImportMixin, CSVExportMixin, ContactErasureMixin, admin.ModelAdmin):
    # Sized for a 1366 px laptop (contacts/static/contacts/admin.css): long values
    # are clamped to a few lines with all of it in the tooltip.
    list_display = ("email_shown", "full_name", "company_shown", "crm_status", "created")
    list_filter = (
        ContactCRMFilter,
        ContactSyncStatusFilter,
        ContactProcessingStatusFilter,
        ContactCRMEventFilter,
        ContactOptedOutFilter,
        ContactSyncErrorFilter,
    )
    search_fields = ("email", "first_name", "last_name", "company")
    show_full_result_count = False
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    actions = ("queue_for_crm", "skip_for_crm", "unselect_for_crm", "retry_failed", "erase_from_every_crm")
    inlines = (ContactSyncInline,)
    form = ContactForm
    readonly_fields = ("created_at", "updated_at", "recent_attempts", "enrichment_found", "attributes_shown")
    fieldsets = (
        (None, {"fields": ("email", "first_name", "last_name", "phone", "company")}),
        (_("Web"), {"fields": ("website", "source_url")}),
        (_("Other attributes"), {"fields": ("attributes_shown",)}),
        (_("Edit other attributes"), {"fields": ("attributes",), "classes": ("collapse",)}),
        (_("Enrichment"), {"fields": ("enrichment_found",), "classes": ("collapse",)}),
        (_("History"), {"fields": ("created_at", "updated_at", "recent_attempts")}),
    )

    class Media:
        css = {"all": ("contacts/admin.css",)}

    def get_queryset(self, request):
        syncs = ContactSync.objects.only(
            "contact_id",
            "crm",
            "sync_status",
            "processing_status",
            "attempts",
            "last_error",
            "warning",
            "crm_event",
            "crm_event_at",
        )
        return super().get_queryset(request).prefetch_related(Prefetch("syncs", queryset=syncs))

    @admin.display(description=_("email"), ordering="email")
    def email_shown(self, obj):
        return clamped(obj.email)

    @admin.display(description=_("name"), ordering="last_name")
    def full_name(self, obj):
        return clamped(obj.full_name)

    @admin.display(description=_("company"), ordering="company")
    def company_shown(self, obj):
        return clamped(obj.company)

    @admin.display(description=_("created"), ordering="created_at")
    def created(self, obj):
        return compact_when(obj.created_at)

    @admin.display(description=_("CRM sync"))
    def crm_status(self, obj):
        by_crm = {sync.crm: sync for sync in obj.syncs.all()}
        badges = format_html_join(" ", "{}", ((sync_badge(by_crm.get(crm), crm),) for crm, _label in crm_choices()))
        return format_html('<span class="crm-badges">{}</span>', badges)

    @admin.display(description=_("what enrichment found"))
    def enrichment_found(self, obj):
        if not obj.enrichment:
            return _("Nothing yet.")
        return format_html("<pre>{}</pre>", json.dumps(obj.enrichment, indent=2, ensure_ascii=False, sort_keys=True))

    @admin.display(description=_("other attributes"))
    def attributes_shown(self, obj):
        """The attributes as a two-column table, names in order; the JSON editor is
        in its own fieldset below."""
        if not obj.attributes:
            return _("None.")
        rows = format_html_join(
            "",
            '<tr><th scope="row">{}</th><td>{}</td></tr>',
            ((name, attribute_text(value)) for name, value in sorted(obj.attributes.items())),
        )
        return format_html('<table class="crm-attributes"><tbody>{}</tbody></table>', rows)

    @admin.display(description=_("recent sync attempts"))
    def recent_attempts(self, obj):
        attempts = obj.sync_attempts.all()[:RECENT_ATTEMPTS_SHOWN] if obj.pk else []
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    when(attempt.attempted_at),
                    verbose_crm_name(attempt.crm),
                    attempt.get_outcome_display(),
                    attempt.http_status or "",
                    clamped(attempt.error),
                )
                for attempt in attempts
            ),
        )
        if not rows:
            return _("No attempts yet.")
        return format_html(
            '<table class="crm-attempts"><thead><tr><th>{}</th><th>{}</th><th>{}</th>'
            "<th>{}</th><th>{}</th></tr></thead><tbody>{}</tbody></table>",
            _("When"),
            _("CRM"),
            _("Outcome"),
            _("HTTP"),
            _("Error"),
            rows,
        )

    @admin.action(description=_("Queue for CRM sync…"), permissions=["change"])
    def queue_for_crm(self, request, queryset):
        return self._apply_to_crms(
            request,
            queryset,
            action="queue_for_crm",
            title=_("Queue contacts for CRM sync"),
            decision=selection.SELECT,
            verb="Queued",
            done=lambda n, crms: (
                ngettext(
                    "%(count)s contact queued for %(crms)s.",
                    "%(count)s contacts queued for %(crms)s.",
                    n,
                )
                % {"count": intcomma(n), "crms": crm_list(crms)}
            ),
        )

    @admin.action(description=_("Skip for CRM…"), permissions=["change"])
    def skip_for_crm(self, request, queryset):
        return self._apply_to_crms(
            request,
            queryset,
            action="skip_for_crm",
            title=_("Skip contacts for CRMs"),
            decision=selection.SKIP,
            verb="Skipped",
            done=lambda n, crms: (
                ngettext(
                    "%(count)s contact will be skipped for %(crms)s.",
                    "%(count)s contacts will be skipped for %(crms)s.",
                    n,
                )
                % {"count": intcomma(n), "crms": crm_list(crms)}
            ),
        )

    @admin.action(description=_("Set back to New for CRM…"), permissions=["change"])
    def unselect_for_crm(self, request, queryset):
        return self._apply_to_crms(
            request,
            queryset,
            action="unselect_for_crm",
            title=_("Set contacts back to New for CRMs"),
            decision=selection.UNSELECT,
            verb="Unselected",
            done=lambda n, crms: (
                ngettext(
                    "%(count)s contact set back to New for %(crms)s; nothing is deleted in any CRM.",
                    "%(count)s contacts set back to New for %(crms)s; nothing is deleted in any CRM.",
                    n,
                )
                % {"count": intcomma(n), "crms": crm_list(crms)}
            ),
        )

    @admin.action(description=_("Retry failed syncs"), permissions=["change"])
    def retry_failed(self, request, queryset):
        decision = selection.decide(selection.RETRY, queryset, [crm for crm, _label in crm_choices()])
        count = decision.changed
        if count:
            retried = {report.crm: report.changed for report in decision.crms}
            record_retry(request.user, retried, contact=only_contact(queryset, decision.found))
            self.message_user(
                request,
                ngettext("%s failed sync queued again.", "%s failed syncs queued again.", count) % intcomma(count),
                messages.SUCCESS,
            )
        else:
            self.message_user(request, _("None of the selected contacts has a failed sync."), messages.WARNING)

    def _apply_to_crms(self, request, queryset, *, action, title, decision, verb, done):
        """Django's confirmation-page pattern: the first POST shows the CRM choice,
        the second (with `post`) applies it (a contacts.selection decision), records
        it in the admin log and returns to the list."""
        form = CRMChoiceForm(request.POST if request.POST.get("post") else None)
        if form.is_bound and form.is_valid():
            crms = form.cleaned_data["crms"]
            decided = selection.decide(decision, queryset, crms)
            if decided.found:
                contact = only_contact(queryset, decided.found)
                audit.record(request.user, verb, count=decided.found, crms=crms, contact=contact)
            self.message_user(request, done(decided.found, crms), messages.SUCCESS)
            left = sum(report.in_flight for report in decided.crms)
            if left > 0:
                self.message_user(
                    request,
                    ngettext(
                        "%s sync is being pushed right now; the decision takes effect when its push ends.",
                        "%s syncs are being pushed right now; the decision takes effect when their push ends.",
                        left,
                    )
                    % intcomma(left),
                    messages.WARNING,
                )
            return None
        select_across = request.POST.get("select_across") == "1"
        contact_count = queryset.count()
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "subtitle": None,
            "opts": self.model._meta,
            "form": form,
            "action": action,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "select_across": select_across,
            # Django runs an action only when row ids are posted, even with
            # select_across; the browser sends those of the page it showed.
            "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "contact_count": contact_count,
            "sample_contacts": queryset[:10],
            "crm_rows": crm_rows(form, queryset),
            "changelist_url": request.get_full_path(),
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/contacts/contact/crm_action_confirmation.html", context)


@admin.register(ContactSync)
class ContactSyncAdmin(CSVExportMixin, admin.ModelAdmin):
    list_display = (
        "contact_link",
        "crm_and_event",
        "sync_status",
        "state",
        "attempts_and_next",
        "short_error",
        "in_the_crm",
    )
    # The contact column links to the contact itself; the row's own page is
    # reached from the CRM column, so no link sits inside another.
    list_display_links = ("crm_and_event",)
    list_filter = (
        SyncCRMFilter,
        SyncDecisionFilter,
        SyncWorkFilter,
        SyncCRMEventFilter,
        SyncOptedOutFilter,
        SyncWarningFilter,
    )
    search_fields = ("contact__email", "last_error", "external_id")
    search_help_text = _("Search by contact email, error text or ID in the CRM.")
    list_select_related = ("contact",)

    class Media:
        css = {"all": ("contacts/admin.css",)}

    show_full_result_count = False
    actions = ("retry_failed_syncs",)
    readonly_fields = [field.name for field in ContactSync._meta.fields]

    @admin.display(description=_("contact"), ordering="contact__email")
    def contact_link(self, obj):
        if obj.contact_id is None:
            # Deleted locally while a removal or an erasure is still to be delivered.
            return _("(deleted contact)")
        url = reverse("admin:contacts_contact_change", args=[obj.contact_id])
        return format_html('<a href="{}">{}</a>', url, clamped(obj.contact.email))

    @admin.display(description=_("CRM"), ordering="crm")
    def crm_label(self, obj):
        return obj.crm_label

    @admin.display(description=_("processing status"), ordering="processing_status")
    def state(self, obj):
        return state_with_warning(obj)

    @admin.display(description=_("CRM event"), ordering="crm_event_at")
    def crm_event_shown(self, obj):
        return crm_event_badge(obj)

    @admin.display(description=_("ID in the CRM"), ordering="external_id")
    def external_link(self, obj):
        # One line: a long id is cut with an ellipsis, all of it in the tooltip.
        return format_html('<span class="crm-ellipsis" title="{}">{}</span>', obj.external_id, external_link(obj))

    @admin.display(description=_("CRM"), ordering="crm")
    def crm_and_event(self, obj):
        """The CRM with the last event it reported below it: one column where two did
        not fit a laptop screen (the event's time is on the contact page)."""
        event = crm_event_badge(obj)
        return format_html("{}<br>{}", obj.crm_label, event) if event else obj.crm_label

    @admin.display(description=_("last error"))
    def short_error(self, obj):
        return clamped(obj.last_error, ERROR_SHOWN * 3)

    @admin.display(description=_("attempts, next"), ordering="attempts")
    def attempts_and_next(self, obj):
        """The attempts made, and below them when the next is due while one is."""
        if not obj.next_attempt_at:
            return intcomma(obj.attempts)
        return format_html(
            '{}<span class="crm-reason" title="{}">{}</span>',
            intcomma(obj.attempts),
            _("next attempt"),
            compact_when(obj.next_attempt_at),
        )

    @admin.display(description=_("in the CRM"), ordering="synced_at")
    def in_the_crm(self, obj):
        """The CRM's id (linked, one line, all of it in the tooltip) and when it was
        last synced: one column where two did not fit a laptop screen."""
        return format_html(
            '<span class="crm-ellipsis" title="{}">{}</span><span class="crm-reason">{}</span>',
            obj.external_id,
            external_link(obj),
            compact_when(obj.synced_at),
        )

    @admin.action(description=_("Retry failed syncs"), permissions=["change"])
    def retry_failed_syncs(self, request, queryset):
        # One statement per CRM, so that the log entry can name the CRMs retried.
        retried = {crm: selection.retry_syncs(queryset.filter(crm=crm)) for crm, _label in crm_choices()}
        count = sum(retried.values())
        if count:
            record_retry(request.user, retried, contact=sole_contact(queryset))
        self.message_user(
            request,
            ngettext("%s failed sync queued again.", "%s failed syncs queued again.", count) % intcomma(count),
            messages.SUCCESS if count else messages.WARNING,
        )

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(SyncAttempt)
class SyncAttemptAdmin(ReadOnlyAdmin):
    list_display = ("attempted", "contact_shown", "crm", "outcome", "http_status", "duration", "error_shown")
    list_filter = (SyncCRMFilter, "outcome")
    search_fields = ("contact__email", "error")
    list_select_related = ("contact",)
    show_full_result_count = False
    date_hierarchy = "attempted_at"

    class Media:
        css = {"all": ("contacts/admin.css",)}

    @admin.display(description=_("attempted at"), ordering="attempted_at")
    def attempted(self, obj):
        return compact_when(obj.attempted_at)

    @admin.display(description=_("contact"), ordering="contact__email")
    def contact_shown(self, obj):
        return clamped(obj.contact.email) if obj.contact_id else _("(deleted contact)")

    @admin.display(description=_("duration"), ordering="duration_ms")
    def duration(self, obj):
        return "%s ms" % intcomma(obj.duration_ms)

    @admin.display(description=_("error"))
    def error_shown(self, obj):
        # Whole errors made rows 200 px tall; two lines and the tooltip say enough.
        return clamped(obj.error, ERROR_SHOWN * 3)
