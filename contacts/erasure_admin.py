"""Erasure in the admin: the contacts' "Erase from every CRM…" action (and the
same page from a contact's own page), the erasures as read-only proof, and the
suppression list with its "Lift suppression" action.

Every button here calls contacts.erasure or deletes suppression rows; nothing
shows an erased person's address: an Erasure keeps it only while a CRM has yet to
confirm, and it is the one thing the proof must not reveal.
"""

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.models import DELETION
from django.contrib.admin.utils import unquote
from django.contrib.humanize.templatetags.humanize import intcomma
from django.core.exceptions import PermissionDenied
from django.db.models import Case, Prefetch, Value, When
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from integrations.registry import crm_choices, get_backend_class

from . import audit, erasure
from .admin_readonly import ReadOnlyAdmin
from .models import Erasure, ErasureResult, ErasureStatus, Suppression
from .suppression import SuppressionKeyMissing, email_hash, suppression_key

ERASE_PERMISSION = "contacts.erase_contact"
SAMPLE_SIZE = 10
HASH_PREFIX_LENGTH = 16

# What "erase" means in each CRM is its backend's erase_description.
NOT_CONFIGURED = _("Not configured: erase there by hand.")


def can_erase(request):
    return request.user.has_perm(ERASE_PERMISSION)


def erase_plan():
    """[(CRM label, configured, what happens there)] for every known CRM."""
    plan = []
    for name, label in crm_choices():
        backend = get_backend_class(name)
        configured = backend.is_enabled()
        plan.append((label, configured, _(backend.erase_description) if configured else NOT_CONFIGURED))
    return plan


def key_missing_message():
    return _("Nothing was erased. %(reason)s") % {"reason": SuppressionKeyMissing()}


class ContactErasureMixin:
    """ContactAdmin's part: the erase action, a per-contact erase page linked from
    the contact's page, and the permission both need (contacts.erase_contact)."""

    def has_erase_permission(self, request):
        return can_erase(request)

    @admin.action(description=_("Erase from every CRM…"), permissions=["erase"])
    def erase_from_every_crm(self, request, queryset):
        if not suppression_key():
            self.message_user(request, key_missing_message(), messages.ERROR)
            return None
        if request.POST.get("post"):
            return self._start_erasure(request, queryset)
        hidden = [
            ("action", "erase_from_every_crm"),
            ("index", "0"),
            *[(helpers.ACTION_CHECKBOX_NAME, pk) for pk in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)],
        ]
        if request.POST.get("select_across") == "1":
            hidden.append(("select_across", "1"))
        return self._erase_confirmation(request, queryset, hidden, request.get_full_path())

    def get_urls(self):
        erase = path(
            "<path:object_id>/erase/",
            self.admin_site.admin_view(self.erase_view),
            name="%s_%s_erase" % (self.model._meta.app_label, self.model._meta.model_name),
        )
        return [erase, *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "can_erase": can_erase(request)}
        return super().change_view(request, object_id, form_url, extra_context)

    def erase_view(self, request, object_id):
        """One contact's erase page, the action's confirmation for that contact alone."""
        if not can_erase(request):
            raise PermissionDenied
        # get_object, as Django's own object pages: an id that is not one is a 404.
        contact = self.get_object(request, unquote(object_id))
        if contact is None:
            raise Http404
        change_url = reverse("admin:contacts_contact_change", args=[contact.pk])
        if not suppression_key():
            self.message_user(request, key_missing_message(), messages.ERROR)
            return HttpResponseRedirect(change_url)
        queryset = self.model.objects.filter(pk=contact.pk)
        if request.method == "POST" and request.POST.get("post"):
            return self._start_erasure(request, queryset)
        return self._erase_confirmation(request, queryset, [], change_url)

    def _start_erasure(self, request, queryset):
        emails = list(queryset.values_list("email", flat=True))
        try:
            started = erasure.start(emails, requested_by=request.user.get_username(), via="admin")
        except SuppressionKeyMissing:
            self.message_user(request, key_missing_message(), messages.ERROR)
            return None
        audit.record_erasures(request.user, started)
        self.message_user(
            request,
            ngettext(
                "Erasure started for %(count)d contact: each configured CRM is asked to erase it.",
                "Erasure started for %(count)d contacts: each configured CRM is asked to erase them.",
                len(started),
            )
            % {"count": len(started)},
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:contacts_erasure_changelist"))

    def _erase_confirmation(self, request, queryset, hidden, back_url):
        count = queryset.count()
        context = {
            **self.admin_site.each_context(request),
            "title": _("Erase from every CRM"),
            "subtitle": None,
            "opts": self.model._meta,
            "contact_count": count,
            "sample_contacts": queryset[:SAMPLE_SIZE],
            "plan": erase_plan(),
            "hidden_fields": hidden,
            "back_url": back_url,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/contacts/contact/erase_confirmation.html", context)


class ErasureResultInline(admin.TabularInline):
    model = ErasureResult
    extra = 0
    can_delete = False
    fields = ErasureResult.PROOF_FIELDS
    readonly_fields = fields
    verbose_name_plural = _("each CRM's answer")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ProofAdmin(ReadOnlyAdmin):
    """Erasures and suppressions are proof and a staff decision: never added or
    edited here. Who may erase may also read them."""

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) or can_erase(request)

    def has_erase_permission(self, request):
        return can_erase(request)


@admin.register(Erasure)
class ErasureAdmin(ProofAdmin):
    list_display = ("id", "status", "requested_by", "requested_via", "requested_at", "completed_at", "crm_outcomes")
    list_filter = ("status",)
    show_facets = admin.ShowFacets.ALWAYS
    # Pending first: they are the ones waiting for a CRM (or for staff).
    ordering = (
        Case(When(status=ErasureStatus.PENDING, then=Value(0)), default=Value(1)).asc(),
        "-requested_at",
        "-id",
    )
    fields = (
        "status",
        "requested_by",
        "requested_via",
        "requested_at",
        "completed_at",
        "cancelled_by",
        "local_contact_deleted",
        "email_hash",
    )
    # The address, kept while a CRM has yet to confirm, is never shown.
    exclude = ("email",)
    readonly_fields = fields
    inlines = (ErasureResultInline,)
    actions = ("cancel_erasure",)
    search_fields = ("email_hash",)
    search_help_text = _("Search by email (its keyed hash is looked up) or by the start of a hash.")

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related(Prefetch("results"))

    def get_search_results(self, request, queryset, search_term):
        return search_by_email_hash(self, request, queryset, search_term)

    def changelist_view(self, request, extra_context=None):
        pending = Erasure.objects.filter(status=ErasureStatus.PENDING).count()
        return super().changelist_view(request, {**(extra_context or {}), "pending_count": pending})

    @admin.display(description=_("each CRM"))
    def crm_outcomes(self, obj):
        labels = dict(crm_choices())
        return format_html_join(
            ", ",
            '<span class="erasure-outcome erasure-outcome--{}" title="{}: {}">{}: {}</span>',
            ((r.outcome, *([labels.get(r.crm, r.crm), r.get_outcome_display()] * 2)) for r in obj.results.all()),
        )

    @admin.action(description=_("Cancel erasure"), permissions=["erase"])
    def cancel_erasure(self, request, queryset):
        # The one erasure, if it is one, for its History page (at most two rows read).
        pending = list(queryset.filter(status=ErasureStatus.PENDING).order_by()[:2])
        count = erasure.cancel(queryset, cancelled_by=request.user.get_username())
        if count:
            one = pending[0] if count == len(pending) == 1 else None
            audit.record(request.user, "Cancelled", count=count, model=Erasure, obj=one)
            message = ngettext(
                "%s erasure cancelled; its email stays on the suppression list until lifted.",
                "%s erasures cancelled; their emails stay on the suppression list until lifted.",
                count,
            )
            self.message_user(request, message % intcomma(count), messages.SUCCESS)
        else:
            self.message_user(request, _("None of the selected erasures is pending."), messages.WARNING)


@admin.register(Suppression)
class SuppressionAdmin(ProofAdmin):
    list_display = ("hash_prefix", "created_at", "erasure_link")
    actions = ("lift_suppression",)
    search_fields = ("email_hash",)
    search_help_text = _("Search by email (its keyed hash is looked up) or by the start of a hash.")
    list_select_related = ("erasure",)

    @admin.display(description=_("keyed hash of the email"), ordering="email_hash")
    def hash_prefix(self, obj):
        return "%s…" % obj.email_hash[:HASH_PREFIX_LENGTH]

    @admin.display(description=_("erasure"), ordering="erasure")
    def erasure_link(self, obj):
        if obj.erasure_id is None:
            return "-"
        url = reverse("admin:contacts_erasure_change", args=[obj.erasure_id])
        return format_html('<a href="{}">{}</a>', url, obj.erasure)

    def get_search_results(self, request, queryset, search_term):
        return search_by_email_hash(self, request, queryset, search_term)

    @admin.action(description=_("Lift suppression…"), permissions=["erase"])
    def lift_suppression(self, request, queryset):
        if request.POST.get("post"):
            count = queryset.count()
            queryset.delete()
            # One entry for the action, not one per row as Django's delete action writes.
            audit.record(request.user, "Lifted", count=count, model=Suppression, flag=DELETION)
            message = ngettext(
                "%d email lifted from the suppression list: it may be imported and synced again.",
                "%d emails lifted from the suppression list: they may be imported and synced again.",
                count,
            )
            self.message_user(request, message % count, messages.SUCCESS)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": _("Lift suppression"),
            "subtitle": None,
            "opts": self.model._meta,
            "suppression_count": queryset.count(),
            "sample": queryset[:SAMPLE_SIZE],
            "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across") == "1",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "back_url": request.get_full_path(),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/contacts/suppression/lift_confirmation.html", context)


def search_by_email_hash(model_admin, request, queryset, search_term):
    """An email is looked up by its keyed hash (the only form kept); anything else
    matches the start of a hash."""
    term = search_term.strip()
    if not term:
        return queryset, False
    if "@" not in term:
        return queryset.filter(email_hash__startswith=term.lower()), False
    try:
        return queryset.filter(email_hash=email_hash(term)), False
    except SuppressionKeyMissing as exc:
        model_admin.message_user(request, str(exc), messages.ERROR)
        return queryset.none(), False
