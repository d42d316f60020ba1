"""Import contacts from CSV: upsert by email, in batches, in constant memory.

A row that cannot be imported is reported with its line number and reason and
never stops the rest of the file.
"""

import codecs
import csv
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email
from django.db import DatabaseError, transaction

from integrations.backends import validate_crm_names

from . import selection
from .models import Contact

CONTACT_COLUMNS = ("email", "first_name", "last_name", "phone", "company", "website", "source_url")
ATTRIBUTE_MAX_LENGTH = 2000
DEFAULT_BATCH_SIZE = 1000
# Over-long values are rejected row by row; the csv module's own limit would
# instead stop the whole file.
csv.field_size_limit(16 * 1024 * 1024)


class ImportFileError(Exception):
    """The file as a whole cannot be imported (for example, no email column)."""


class RowError(ValueError):
    """One row cannot be imported; the message says why."""


@dataclass
class ImportReport:
    rows: int = 0
    created: int = 0
    updated: int = 0
    rejected: int = 0
    queued: int = 0
    bytes_read: int = 0
    crms: list = field(default_factory=list)


@dataclass
class PendingRow:
    line: int
    values: dict
    attributes: dict


def import_contacts(
    binary_file,
    *,
    select=(),
    dry_run=False,
    batch_size=DEFAULT_BATCH_SIZE,
    on_reject=None,
    on_progress=None,
):
    """Import a CSV file opened in binary mode and return an ImportReport.

    `select` names CRMs to queue every imported contact for. `on_reject(line,
    reason)` is called for each rejected row, `on_progress(report)` after each batch.
    """
    crms = validate_crm_names(select)
    report = ImportReport(crms=crms)
    reader = csv.reader(_decoded_lines(binary_file, report))
    columns = _read_header(reader)
    batch = {}
    seen_in_dry_run = set()

    def reject(line, reason):
        report.rejected += 1
        if on_reject:
            on_reject(line, reason)

    def flush():
        _write_batch(batch, crms, dry_run, seen_in_dry_run, report, reject)
        batch.clear()
        if on_progress:
            on_progress(report)

    line_after_previous_row = reader.line_num + 1
    while True:
        line = line_after_previous_row
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            report.rows += 1
            reject(line, "the CSV is malformed here (%s)" % exc)
            line_after_previous_row = reader.line_num + 1
            continue
        line_after_previous_row = reader.line_num + 1
        if not any(cell.strip() for cell in cells):
            continue
        report.rows += 1
        try:
            pending = _parse_row(line, columns, cells)
        except RowError as exc:
            reject(line, str(exc))
            continue
        email = pending.values["email"]
        if email in batch:
            # A second row for an email updates the contact the first row names.
            batch[email] = _merge_rows(batch[email], pending)
            report.updated += 1
        else:
            batch[email] = pending
        if len(batch) >= batch_size:
            flush()
    if batch or on_progress:
        flush()
    return report


def _decoded_lines(binary_file, report):
    """Text lines (with their line endings) of a UTF-8 file, counting bytes read
    so that progress can be shown without reading the file twice."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    for raw_line in binary_file:
        report.bytes_read += len(raw_line)
        yield decoder.decode(raw_line)
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail


def _read_header(reader):
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError("The file is empty: expected a header row with an email column.")
    except csv.Error as exc:
        raise ImportFileError("The header row is not valid CSV: %s" % exc)
    columns = [name.strip().lower().replace(" ", "_") for name in header]
    if "email" not in columns:
        raise ImportFileError(
            "The header row has no 'email' column (found: %s). The first row must name "
            "the columns: email, first_name, last_name, phone, company, website, ..."
            % (", ".join(repr(name) for name in header) or "nothing")
        )
    duplicates = sorted({name for name in columns if name and columns.count(name) > 1})
    if duplicates:
        raise ImportFileError(
            "The header row names these columns more than once: %s." % ", ".join(duplicates)
        )
    return columns


def _parse_row(line, columns, cells):
    if len(cells) > len(columns):
        raise RowError(
            "it has %d values but the header has %d columns" % (len(cells), len(columns))
        )
    values, attributes = {}, {}
    for name, cell in zip(columns, cells):
        cell = cell.strip()
        if "\x00" in cell or "\ufffd" in cell:
            raise RowError("%s is not valid UTF-8 text" % (name or "a column"))
        if name in CONTACT_COLUMNS:
            values[name] = _clean_contact_value(name, cell)
        elif name and cell:
            if len(cell) > ATTRIBUTE_MAX_LENGTH:
                raise RowError(_too_long(name, cell, ATTRIBUTE_MAX_LENGTH))
            attributes[name] = cell
    if not values.get("email"):
        raise RowError("email is empty")
    return PendingRow(line=line, values=values, attributes=attributes)


def _clean_contact_value(name, value):
    limit = Contact._meta.get_field(name).max_length
    if len(value) > limit:
        raise RowError(_too_long(name, value, limit))
    if not value:
        return value
    if name == "email":
        value = value.lower()
        try:
            validate_email(value)
        except ValidationError:
            raise RowError("email %r is not a valid email address" % _preview(value))
    elif name in ("website", "source_url"):
        url = value if "://" in value else "https://" + value
        try:
            URLValidator(schemes=["http", "https"])(url)
        except ValidationError:
            raise RowError("%s %r is not a valid web address" % (name, _preview(value)))
        value = url
    return value


def _too_long(name, value, limit):
    return "%s is %d characters long; the limit is %d" % (name, len(value), limit)


def _preview(value, length=60):
    return value if len(value) <= length else value[: length - 1] + "…"


def _merge_rows(earlier, later):
    """A later row for the same email fills in and overrides the earlier one."""
    values = {**earlier.values, **{k: v for k, v in later.values.items() if v}}
    return PendingRow(
        line=later.line, values=values, attributes={**earlier.attributes, **later.attributes}
    )


def _write_batch(batch, crms, dry_run, seen_in_dry_run, report, reject):
    if not batch:
        return
    existing = {c.email: c for c in Contact.objects.filter(email__in=list(batch))}
    contacts = [_merged_contact(existing.get(email), row) for email, row in batch.items()]
    new = {email for email in batch if email not in existing and email not in seen_in_dry_run}
    if dry_run:
        seen_in_dry_run.update(new)
        report.created += len(new)
        report.updated += len(batch) - len(new)
        return
    try:
        with transaction.atomic():
            _save(contacts, crms, report)
        report.created += len(new)
        report.updated += len(contacts) - len(new)
    except DatabaseError:
        # Validation should have caught everything; if the database still refuses
        # the batch, find the rows it refuses and keep the rest.
        for contact, row in zip(contacts, batch.values()):
            try:
                with transaction.atomic():
                    _save([contact], crms, report)
            except DatabaseError as exc:
                reject(row.line, "the database refused it: %s" % str(exc).strip().splitlines()[0])
                continue
            if contact.email in new:
                report.created += 1
            else:
                report.updated += 1


def _merged_contact(existing, row):
    """An unsaved Contact for the upsert; an empty cell keeps what the database has."""
    if existing is None:
        return Contact(**row.values, attributes=row.attributes)
    values = {name: getattr(existing, name) for name in CONTACT_COLUMNS}
    values.update({name: value for name, value in row.values.items() if value})
    return Contact(**values, attributes={**(existing.attributes or {}), **row.attributes})


def _save(contacts, crms, report):
    Contact.objects.bulk_create(
        contacts,
        update_conflicts=True,
        unique_fields=["email"],
        update_fields=[*CONTACT_COLUMNS[1:], "attributes", "updated_at"],
    )
    if crms:
        emails = [contact.email for contact in contacts]
        report.queued += selection.select(Contact.objects.filter(email__in=emails), crms)
