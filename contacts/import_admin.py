"""Import contacts in the admin: upload a CSV, read what each line would do, then
confirm. The pages of ContactImportMixin, for ContactAdmin; the work is in
contacts.import_jobs (and contacts.importer, shared with `manage.py import_contacts`)."""

from django import forms
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _

from integrations.registry import crm_choices

from . import import_jobs
from .models import ImportJob

Status = ImportJob.Status


class ImportForm(forms.Form):
    file = forms.FileField(
        label=_("CSV file"),
        help_text=_(
            "UTF-8, with a header row naming the columns: email, first_name, last_name, phone, company, "
            "website, source_url; any other column is kept in the contact's attributes."
        ),
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,text/csv"}),
    )
    crms = forms.MultipleChoiceField(
        label=_("Queue the imported contacts for"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("Optional. A contact the file leaves unchanged is not queued where it is already Complete."),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["crms"].choices = crm_choices()


class ContactImportMixin:
    """Pages of the import: upload, the job (preview, confirm, progress, result)
    and its progress as JSON for the page to poll."""

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("import/", view(self.import_upload_view), name="contacts_contact_import"),
            path("import/<str:job_id>/", view(self.import_job_view), name="contacts_contact_import_job"),
            path(
                "import/<str:job_id>/progress.json",
                view(self.import_progress_view),
                name="contacts_contact_import_progress",
            ),
            path(
                "import/<str:job_id>/confirm/", view(self.import_confirm_view), name="contacts_contact_import_confirm"
            ),
            path("import/<str:job_id>/cancel/", view(self.import_cancel_view), name="contacts_contact_import_cancel"),
            *super().get_urls(),
        ]

    def has_import_permission(self, request):
        return self.has_add_permission(request) and self.has_change_permission(request)

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_import": self.has_import_permission(request)}
        return super().changelist_view(request, extra_context)

    def _import_context(self, request, title, **context):
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "changelist_url": reverse("admin:contacts_contact_changelist"),
            **context,
        }

    def _job(self, request, job_id):
        if not self.has_import_permission(request):
            raise PermissionDenied
        # <str:>, not <int:>: an id that is not a number would otherwise fall through
        # to the contact pages' <path:object_id> and be redirected, not refused.
        if not job_id.isascii() or not job_id.isdigit():
            raise Http404("No such import.")
        return get_object_or_404(ImportJob, pk=int(job_id))

    def import_upload_view(self, request):
        if not self.has_import_permission(request):
            raise PermissionDenied
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            job = import_jobs.store_upload(form.cleaned_data["file"], request.user, form.cleaned_data["crms"])
            import_jobs.start_preview(job)
            return HttpResponseRedirect(reverse("admin:contacts_contact_import_job", args=[job.pk]))
        context = self._import_context(
            request,
            _("Import contacts"),
            form=form,
            background_above_mb=import_jobs.BACKGROUND_ABOVE_BYTES // (1024 * 1024),
        )
        return TemplateResponse(request, "admin/contacts/import/upload.html", context)

    def import_job_view(self, request, job_id):
        job = self._job(request, job_id)
        context = self._import_context(
            request, _("Import of %s") % job.file_name, job=job, progress=progress(job), kinds=_kinds(job)
        )
        return TemplateResponse(request, "admin/contacts/import/job.html", context)

    def import_progress_view(self, request, job_id):
        return JsonResponse(progress(self._job(request, job_id)))

    def import_confirm_view(self, request, job_id):
        job = self._job(request, job_id)
        if request.method == "POST" and job.status == Status.PREVIEWED:
            import_jobs.confirm(job)
        return HttpResponseRedirect(reverse("admin:contacts_contact_import_job", args=[job.pk]))

    def import_cancel_view(self, request, job_id):
        job = self._job(request, job_id)
        if request.method == "POST" and job.status in (Status.UPLOADED, Status.PREVIEWING, Status.PREVIEWED):
            import_jobs.cancel(job)
            return HttpResponseRedirect(reverse("admin:contacts_contact_changelist"))
        return HttpResponseRedirect(reverse("admin:contacts_contact_import_job", args=[job.pk]))


def progress(job):
    """What the job page shows and polls: its status, how far through the file it
    is (percent of bytes), and the counts so far."""
    done = job.status in (Status.PREVIEWED, Status.DONE, Status.FAILED, Status.CANCELLED)
    percent = 100 if done or not job.size else min(100, 100 * job.bytes_read // job.size)
    return {
        "status": job.status,
        "status_label": str(job.get_status_display()),
        "percent": percent,
        "counts": job.counts if job.status in (Status.IMPORTING, Status.DONE) else job.preview.get("counts", {}),
        "finished": done,
    }


KIND_LABELS = {
    "created": _("Would be created"),
    "updated": _("Would be updated"),
    "unchanged": _("Unchanged (left as they are)"),
    "rejected": _("Rejected"),
}


def _kinds(job):
    """The preview's kinds in order: label, count, first lines, and how many more."""
    counts, lines = job.preview.get("counts", {}), job.preview.get("lines", {})
    kinds = []
    for kind in import_jobs.KINDS:
        shown = lines.get(kind, [])
        count = counts.get(kind, 0)
        kinds.append(
            {"kind": kind, "label": KIND_LABELS[kind], "count": count, "lines": shown, "more": count - len(shown)}
        )
    return kinds
