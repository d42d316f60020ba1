"""Import contacts from CSV: upsert by email, in batches, in constant memory.

A row that cannot be imported is reported with its line number and reason and
never stops the rest of the file.
"""

import codecs
import csv
import re
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email
from django.db import DatabaseError, transaction

from integrations.registry import validate_crm_names

from . import selection
from .emails import canonical_email
from .models import Contact

CONTACT_COLUMNS = ("email", "first_name", "last_name", "phone", "company", "website", "source_url")
ATTRIBUTE_MAX_LENGTH = 2000
DEFAULT_BATCH_SIZE = 1000
# Over-long values are rejected row by row; the csv module's own limit would
# instead stop the whole file.
csv.field_size_limit(16 * 1024 * 1024)
# A line ends with \r\n, \n or a lone \r (old Mac exports), even within one file.
LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
NOT_TEXT = ("\x00", "\ufffd")
HEADER_NAMES_SHOWN = 10


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
    run = _ImportRun(validate_crm_names(select), dry_run, batch_size, on_reject, on_progress)
    lines = _decoded_lines(binary_file, run.report)
    # strict: a stray quote, or one never closed, is an error for that row rather
    # than text silently swallowing the rows after it.
    reader = csv.reader(lines, strict=True)
    columns = _read_header(reader)
    for line, cells in _rows(reader, lines, run):
        try:
            pending = _parse_row(line, columns, cells)
        except RowError as exc:
            run.reject(line, str(exc))
            continue
        run.add(pending)
    run.finish()
    return run.report


class _ImportRun:
    """One import's report and the rows waiting to be written, keyed by email;
    they are written every `batch_size` emails and at the end."""

    def __init__(self, crms, dry_run, batch_size, on_reject, on_progress):
        self.report = ImportReport(crms=crms)
        self.crms = crms
        self.dry_run = dry_run
        self.batch_size = batch_size
        self.on_reject = on_reject
        self.on_progress = on_progress
        self.batch = {}
        self.seen_in_dry_run = set()

    def reject(self, line, reason):
        self.report.rejected += 1
        if self.on_reject:
            self.on_reject(line, reason)

    def add(self, pending):
        email = pending.values["email"]
        if email in self.batch:
            # A second row for an email updates the contact the first row names.
            self.batch[email] = _merge_rows(self.batch[email], pending)
            self.report.updated += 1
        else:
            self.batch[email] = pending
        if len(self.batch) >= self.batch_size:
            self.flush()

    def flush(self):
        _write_batch(self.batch, self.crms, self.dry_run, self.seen_in_dry_run, self.report, self.reject)
        self.batch.clear()
        if self.on_progress:
            self.on_progress(self.report)

    def finish(self):
        # With a progress callback, the last call reports the final figures even
        # when the last batch was already written.
        if self.batch or self.on_progress:
            self.flush()


def _rows(reader, lines, run):
    """(line number, cells) of each row that is not blank, counting each in the
    report. A row the csv module cannot read is rejected, and reading stops there
    if nothing past it can be read."""
    line_after_previous_row = reader.line_num + 1
    while True:
        line = line_after_previous_row
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            run.report.rows += 1
            message, readable = _csv_problem(exc, line, reader.line_num, lines)
            run.reject(line, message)
            if not readable:
                return
            line_after_previous_row = reader.line_num + 1
            continue
        line_after_previous_row = reader.line_num + 1
        if any(cell.strip() for cell in cells):
            run.report.rows += 1
            yield line, cells


def _decoded_lines(binary_file, report):
    """Text lines (with their line endings) of a UTF-8 file, counting bytes read
    so that progress can be shown without reading the file twice."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    for raw_line in binary_file:
        report.bytes_read += len(raw_line)
        text = decoder.decode(raw_line)
        if "\r" in text:
            yield from LINE.findall(text)
        elif text:
            yield text
    tail = decoder.decode(b"", final=True)
    if tail:
        yield from LINE.findall(tail)


def _csv_problem(exc, first_line, last_line, lines):
    """What the csv module's error means for the row from first_line to last_line,
    and whether the file can be read past it."""
    if "field larger than field limit" in str(exc):
        # The value may be a quoted one going on over the next lines: reading on
        # would take its text for rows.
        last_line += sum(1 for _ in lines)
        return (
            "a value is longer than %d characters, the most a CSV cell may hold; the file cannot "
            "be read past it, so lines %d-%d were not imported" % (csv.field_size_limit(), first_line, last_line),
            False,
        )
    where = "line %d" % first_line if last_line <= first_line else "lines %d-%d" % (first_line, last_line)
    if "unexpected end of data" in str(exc):
        return "a quoted value opened on line %d is never closed: the rest of the file (%s) is part of it" % (
            first_line,
            where,
        ), True
    return "the CSV is malformed in %s (%s)" % (where, exc), True


def _read_header(reader):
    """The column names of the first line that is not blank."""
    header = []
    while not any(cell.strip() for cell in header):
        try:
            header = next(reader)
        except StopIteration:
            raise ImportFileError("The file is empty: expected a header row with an email column.") from None
        except csv.Error as exc:
            raise ImportFileError("The header row (line %d) is not valid CSV: %s" % (reader.line_num, exc)) from None
    if any(mark in cell for cell in header for mark in NOT_TEXT):
        raise ImportFileError(
            "Line %d, the header row, is not UTF-8 text: the file may be binary (a spreadsheet, "
            "an archive), UTF-16 or another encoding. Save it as CSV UTF-8." % reader.line_num
        )
    columns = [name.strip().lower().replace(" ", "_") for name in header]
    if "email" not in columns:
        shown = ", ".join(repr(_preview(name)) for name in header[:HEADER_NAMES_SHOWN])
        if len(header) > HEADER_NAMES_SHOWN:
            shown += ", ... (%d in all)" % len(header)
        if any("@" in name for name in header):
            raise ImportFileError(
                "Line %d looks like a contact (%s), not a header row. The first row must name "
                "the columns: email, first_name, last_name, phone, company, website, ..." % (reader.line_num, shown)
            )
        raise ImportFileError(
            "The header row has no 'email' column (found: %s). The first row must name "
            "the columns: email, first_name, last_name, phone, company, website, ..." % (shown or "nothing")
        )
    duplicates = sorted({name for name in columns if name and columns.count(name) > 1})
    if duplicates:
        raise ImportFileError("The header row names these columns more than once: %s." % ", ".join(duplicates))
    return columns


def _parse_row(line, columns, cells):
    if len(cells) > len(columns):
        raise RowError("it has %d values but the header has %d columns" % (len(cells), len(columns)))
    values, attributes = {}, {}
    for name, cell in zip(columns, cells):
        cell = cell.strip()
        if "\x00" in cell:
            raise RowError("%s contains a NUL character, which is not text" % (name or "a column"))
        if "\ufffd" in cell:
            raise RowError("%s is not valid UTF-8 text" % (name or "a column"))
        if name in CONTACT_COLUMNS:
            values[name] = _clean_contact_value(name, cell)
        elif name and cell:
            if len(cell) > ATTRIBUTE_MAX_LENGTH:
                raise RowError(_too_long(name, cell, ATTRIBUTE_MAX_LENGTH))
            attributes[name] = cell
    if not values.get("email"):
        if len(cells) <= columns.index("email"):
            raise RowError(
                "it has %d values but the header has %d columns, so it has no email" % (len(cells), len(columns))
            )
        raise RowError("email is empty")
    return PendingRow(line=line, values=values, attributes=attributes)


def _clean_contact_value(name, value):
    limit = Contact._meta.get_field(name).max_length
    if len(value) > limit:
        raise RowError(_too_long(name, value, limit))
    if not value:
        return value
    if name == "email":
        # Canonical here, not only in the field: the batch is keyed by it, so two
        # spellings of one mailbox in a file update one contact.
        typed, value = value, canonical_email(value)
        try:
            validate_email(value)
        except ValidationError:
            raise RowError("email %r is not a valid email address" % _preview(typed)) from None
    elif name in ("website", "source_url"):
        url = value if "://" in value else "https://" + value
        try:
            URLValidator(schemes=["http", "https"])(url)
        except ValidationError:
            raise RowError("%s %r is not a valid web address" % (name, _preview(value))) from None
        value = url
    return value


def _too_long(name, value, limit):
    return "%s is %d characters long; the limit is %d" % (name, len(value), limit)


def _preview(value, length=60):
    return value if len(value) <= length else value[: length - 1] + "…"


def _merge_rows(earlier, later):
    """A later row for the same email fills in and overrides the earlier one."""
    values = {**earlier.values, **{k: v for k, v in later.values.items() if v}}
    return PendingRow(line=later.line, values=values, attributes={**earlier.attributes, **later.attributes})


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
