"""Export the Contacts or Contact syncs list, as filtered and searched, to CSV.

The file is streamed: rows are read in chunks (QuerySet.iterator) and written as
they come, so a million contacts take the memory of one chunk. A contact's
per-CRM columns (sync status, processing status, ID in the CRM, last error) come
from one query per chunk of contacts, never one per row. Every cell a
spreadsheet would read as a formula is defused (FORMULA_STARTS, OWASP's CSV
injection advice)."""

import csv
import json
from itertools import islice

from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect, StreamingHttpResponse
from django.urls import path, reverse
from django.utils import timezone

from integrations.registry import crm_choices

from .models import Contact, ContactSync, Operation, ProcessingStatus, SyncStatus

CHUNK_SIZE = 2000
# A cell starting with one of these is a formula to Excel, LibreOffice or Google
# Sheets; a leading single quote makes it text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CONTACT_FIELDS = ("email", "first_name", "last_name", "phone", "company", "website", "source_url")
PER_CRM = ("sync status", "processing status", "external id", "last error")
SYNC_FIELDS = (
    "contact__email",
    "crm",
    "operation",
    "sync_status",
    "processing_status",
    "attempts",
    "next_attempt_at",
    "last_error",
    "warning",
    "external_id",
    "synced_at",
    "updated_at",
)
SYNC_HEADER = (
    "email",
    "crm",
    "operation",
    "sync status",
    "processing status",
    "attempts",
    "next attempt at",
    "last error",
    "warning",
    "external id",
    "synced at",
    "updated at",
)
LABELS = {
    "sync_status": dict(SyncStatus.choices),
    "processing_status": dict(ProcessingStatus.choices),
    "operation": dict(Operation.choices),
}


def batched(iterable, size):
    """Lists of `size` items of `iterable` in turn (itertools.batched, Python 3.12)."""
    iterator = iter(iterable)
    while chunk := list(islice(iterator, size)):
        yield chunk


def cell(value):
    """A value as a CSV cell: text, dates in ISO 8601, and formula-safe."""
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict) else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


class _Echo:
    """csv.writer writes into it; each row comes back as the text to stream."""

    def write(self, value):
        return value


def csv_response(rows, file_name):
    """A streamed CSV download of `rows` (iterables of cells, the header first)."""
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse(
        (writer.writerow([cell(value) for value in row]) for row in rows), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = 'attachment; filename="%s"' % file_name
    return response


def contact_rows(queryset):
    """The header, then one row per contact: its fields, attributes as JSON, and
    each CRM's four columns."""
    crms = [name for name, _label in crm_choices()]
    yield ("id", *CONTACT_FIELDS, "attributes", "created at", "updated at", *_crm_header(crms))
    values = queryset.prefetch_related(None).values_list(
        "pk", *CONTACT_FIELDS, "attributes", "created_at", "updated_at"
    )
    for chunk in batched(values.iterator(chunk_size=CHUNK_SIZE), CHUNK_SIZE):
        syncs = _syncs_of([row[0] for row in chunk], crms)
        for row in chunk:
            yield (*row, *_crm_cells(syncs.get(row[0], {}), crms))


def _crm_header(crms):
    labels = dict(crm_choices())
    return ["%s %s" % (labels[crm], column) for crm in crms for column in PER_CRM]


def _syncs_of(contact_ids, crms):
    """{contact id: {crm: (sync status, processing status, external id, last error)}}
    in one query."""
    rows = ContactSync.objects.filter(contact_id__in=contact_ids, crm__in=crms).values_list(
        "contact_id", "crm", "sync_status", "processing_status", "external_id", "last_error"
    )
    syncs = {}
    for contact_id, crm, sync_status, processing_status, external_id, last_error in rows:
        syncs.setdefault(contact_id, {})[crm] = (
            LABELS["sync_status"].get(sync_status, sync_status),
            LABELS["processing_status"].get(processing_status, processing_status) if processing_status else "",
            external_id,
            last_error,
        )
    return syncs


def _crm_cells(syncs, crms):
    # A contact never chosen for a CRM has no row there: it is New.
    never = (LABELS["sync_status"][SyncStatus.NEW], "", "", "")
    return [value for crm in crms for value in syncs.get(crm, never)]


def sync_rows(queryset):
    """The header, then one row per (contact, CRM) of the queryset."""
    yield SYNC_HEADER
    values = queryset.values_list(*SYNC_FIELDS)
    for row in values.iterator(chunk_size=CHUNK_SIZE):
        named = dict(zip(SYNC_FIELDS, row))
        for name, labels in LABELS.items():
            named[name] = labels.get(named[name], named[name]) if named[name] else ""
        yield tuple(named.values())


class CSVExportMixin:
    """An "Export to CSV" page for a changelist: its current filters, search and
    ordering (the same query string), streamed. Needs the view permission."""

    def get_urls(self):
        opts = self.model._meta
        name = "%s_%s_export" % (opts.app_label, opts.model_name)
        return [path("export/", self.admin_site.admin_view(self.export_view), name=name), *super().get_urls()]

    def export_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        # The changelist's own queryset: its filters and search read from the query string.
        try:
            queryset = self.get_changelist_instance(request).queryset
        except IncorrectLookupParameters:
            # As the list itself answers a filter it does not know.
            opts = self.model._meta
            return HttpResponseRedirect(reverse("admin:%s_%s_changelist" % (opts.app_label, opts.model_name)) + "?e=1")
        rows = contact_rows(queryset) if self.model is Contact else sync_rows(queryset)
        stamp = timezone.localtime().strftime("%Y-%m-%d-%H%M")
        return csv_response(rows, "%s-%s.csv" % (self.model._meta.verbose_name_plural.replace(" ", "-"), stamp))
