"""Mappings in the browser: per CRM, staff see and edit what each CRM field
receives (a contact field, an attributes key or a constant, with a transform),
preview the payload of a chosen contact, and save.

Saving checks each field against the CRM's own field list (crm_fields, fetched
from the CRM; n8n takes any field, so its mapping is checked for form only), then
re-queues at once the contacts whose payload the new mapping changes, and writes
one entry in the admin log. A CRM without a saved mapping keeps its default field
map and <CRM>_FIELD_MAP from the environment.
"""

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _

from contacts.audit import record
from contacts.emails import canonical_email
from contacts.models import Contact

from .backends.base import CONTACT_FIELDS, CRMBackend, MappedField
from .conf import is_set, setting_name
from .exceptions import CRMConfigurationError, SyncError, UnknownCRM
from .mappings import field_problem, mapping_for, payload_or_why, use_mapping
from .models import FieldMapping, SourceKind, Transform
from .registry import enabled_backend_classes, get_enabled_backend_class
from .resync import requeue_changed_payloads

AUDIT_VERB = "Changed the mapping of"


class MappingRowForm(forms.Form):
    target = forms.CharField(label=_("CRM field"), max_length=100, widget=forms.TextInput(attrs={"list": "crm-fields"}))
    source_kind = forms.ChoiceField(label=_("receives"), choices=SourceKind.choices, initial=SourceKind.FIELD)
    source = forms.CharField(
        label=_("contact field, attributes key or constant"),
        max_length=200,
        widget=forms.TextInput(attrs={"list": "contact-fields"}),
    )
    transform = forms.ChoiceField(label=_("transform"), choices=Transform.choices, initial=Transform.NONE)

    def mapped_field(self):
        data = self.cleaned_data
        return MappedField(data["target"].strip(), data["source"], data["source_kind"], data["transform"])


class BaseMappingFormSet(forms.BaseFormSet):
    """The rows of one CRM's mapping; `backend` checks their form, and when
    `crm_fields` (the CRM's field list) is given, their names and types."""

    def __init__(self, *args, backend, crm_fields=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = backend
        self.crm_fields = crm_fields

    def kept_forms(self):
        """The filled rows not marked for removal (a blank extra row is skipped)."""
        return [form for form in self.forms if form.cleaned_data.get("target") and not self._should_delete_form(form)]

    def clean(self):
        if any(self.errors):
            return
        seen = set()
        for form in self.kept_forms():
            field = form.mapped_field()
            problem = field_problem(self.backend, field, self.crm_fields)
            key = self.backend.custom_field_key(field.target)
            if not problem and key in seen:
                problem = "%s is mapped twice." % field.target
            seen.add(key)
            if problem:
                form.add_error("target", problem)
        if any(self.errors):
            raise ValidationError(_("Nothing was saved: correct the rows marked below."))

    def mapping(self):
        return [form.mapped_field() for form in self.kept_forms()]


MappingFormSet = forms.formset_factory(MappingRowForm, formset=BaseMappingFormSet, extra=2, can_delete=True)


class MappingOptionsForm(forms.Form):
    contact = forms.CharField(label=_("Preview for contact (id or email)"), required=False)
    save_unchecked = forms.BooleanField(
        label=_("Save without checking against the CRM (it could not be reached)"), required=False
    )

    def chosen_contact(self):
        """The contact named by id or email, None when none is named; an error on
        the form when no such contact exists."""
        text = (self.cleaned_data.get("contact") or "").strip()
        if not text:
            return None
        found = Contact.objects.filter(pk=int(text)) if text.isdigit() else Contact.objects.none()
        found = found or Contact.objects.filter(email=canonical_email(text))
        contact = found.first()
        if contact is None:
            self.add_error("contact", _("No contact has this id or email."))
        return contact


def save_mapping(crm, mapping, user):
    """Replace the CRM's mapping with `mapping` (MappedField list; empty: back to
    the environment's field maps), queue again at once the contacts whose payload
    changes, and log it once. Returns how many were queued."""
    with transaction.atomic():
        FieldMapping.objects.filter(crm=crm).delete()
        FieldMapping.objects.bulk_create(
            FieldMapping(
                crm=crm,
                target=field.target,
                source_kind=field.kind,
                source=field.source,
                transform=field.transform,
                position=position,
                updated_by=user.get_username(),
            )
            for position, field in enumerate(mapping)
        )
    backend = use_mapping(get_enabled_backend_class(crm)())
    try:
        requeued = requeue_changed_payloads(backend)
    finally:
        backend.close()
    record(user, AUDIT_VERB, count=requeued, crms=[crm])
    return requeued


def environment_note(backend_class):
    """Where the CRM's mapping comes from without a saved one."""
    name = setting_name(backend_class.name, "FIELD_MAP")
    if is_set(name):
        return name
    return "%s's default field map" % backend_class.verbose_name


class FieldMappingAdmin(admin.ModelAdmin):
    """The list shows every saved row, under one line per CRM; a mapping is edited
    and saved whole on its CRM's page, never one row at a time."""

    list_display = ("crm", "target", "source_kind", "source", "transform", "updated_by", "updated_at")
    list_display_links = None
    list_filter = ("crm",)
    change_list_template = "admin/integrations/fieldmapping/change_list.html"

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        # Only the list and the CRMs' pages: a row's own change page would save
        # it unchecked and queue nothing.
        info = self.opts.app_label, self.opts.model_name
        return [
            path("", self.admin_site.admin_view(self.changelist_view), name="%s_%s_changelist" % info),
            path("<str:crm>/", self.admin_site.admin_view(self.mapping_view), name="integrations_fieldmapping_crm"),
        ]

    def changelist_view(self, request, extra_context=None):
        crms = [self._crm_summary(backend_class) for backend_class in enabled_backend_classes()]
        return super().changelist_view(request, {**(extra_context or {}), "crms": crms, "title": _("Field mappings")})

    def _crm_summary(self, backend_class):
        rows = list(FieldMapping.objects.filter(crm=backend_class.name).order_by("-updated_at")[:1])
        return {
            "label": backend_class.verbose_name,
            "url": reverse("admin:integrations_fieldmapping_crm", args=[backend_class.name]),
            "count": FieldMapping.objects.filter(crm=backend_class.name).count(),
            "latest": rows[0] if rows else None,
            "environment": environment_note(backend_class),
        }

    def mapping_view(self, request, crm):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        try:
            backend = get_enabled_backend_class(crm)()
        except (UnknownCRM, CRMConfigurationError):
            raise Http404("No enabled CRM is called %r." % crm) from None
        try:
            if request.method == "POST":
                return self._post(request, backend)
            # Fetched to offer the CRM's field names; a CRM that cannot be reached is said so.
            crm_fields, unreachable = self._crm_fields(backend, False)
            formset = self._formset(backend, crm_fields=crm_fields)
            return self._render(request, backend, formset, MappingOptionsForm(), unreachable=unreachable)
        finally:
            backend.close()

    def _formset(self, backend, data=None, crm_fields=None):
        """The rows as submitted, or unbound: the saved mapping, else the
        environment's field map in effect."""
        initial = None
        if data is None:
            saved = mapping_for(backend.name)
            fields = saved if saved is not None else backend.mapped_fields()
            initial = [
                {"target": f.target, "source_kind": f.kind, "source": f.source, "transform": f.transform}
                for f in fields
            ]
        return MappingFormSet(data, initial=initial, backend=backend, crm_fields=crm_fields, prefix="mapping")

    def _post(self, request, backend):
        options = MappingOptionsForm(request.POST)
        options.is_valid()
        if "_preview" in request.POST:
            return self._preview(request, backend, options)
        if not self.has_change_permission(request):
            raise PermissionDenied
        crm_fields, unreachable = self._crm_fields(backend, options.cleaned_data.get("save_unchecked"))
        formset = self._formset(backend, request.POST, crm_fields)
        if unreachable or not formset.is_valid():
            return self._render(request, backend, formset, options, unreachable=unreachable)
        requeued = save_mapping(backend.name, formset.mapping(), request.user)
        messages.success(
            request,
            "The %s mapping was saved; %s contact%s queued again, whose payload it changes."
            % (backend.verbose_name, "{:,}".format(requeued), "" if requeued == 1 else "s"),
        )
        return HttpResponseRedirect(request.path)

    def _crm_fields(self, backend, unchecked):
        """(the CRM's field list, "") or (None, why it could not be fetched); with
        `unchecked`, (None, "") so that only the form is checked."""
        if unchecked:
            return None, ""
        try:
            return backend.crm_fields(), ""
        except SyncError as exc:
            return None, str(exc)

    def _preview(self, request, backend, options):
        formset = self._formset(backend, request.POST)
        contact = options.chosen_contact() if options.is_valid() else None
        preview = None
        if contact is not None and formset.is_valid():
            backend.mapping = formset.mapping() or None
            preview = {"contact": contact, "payload": _pretty(payload_or_why(backend, contact))}
        return self._render(request, backend, formset, options, preview=preview)

    def _render(self, request, backend, formset, options, **extra):
        saved = FieldMapping.objects.filter(crm=backend.name)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("%s mapping") % backend.verbose_name,
            "crm_label": backend.verbose_name,
            "formset": formset,
            "options": options,
            "saved": saved.order_by("-updated_at").first(),
            "environment": environment_note(type(backend)),
            "form_only": type(backend).crm_fields is CRMBackend.crm_fields,
            "contact_fields": CONTACT_FIELDS,
            "crm_field_names": sorted(formset.crm_fields or ()),
            "can_change": self.has_change_permission(request),
            "changelist_url": reverse("admin:integrations_fieldmapping_changelist"),
            **extra,
        }
        return TemplateResponse(request, "admin/integrations/fieldmapping/mapping.html", context)


def _pretty(payload):
    return json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=True, default=str)


admin.site.register(FieldMapping, FieldMappingAdmin)
