"""Contact imports uploaded in the admin: the file kept in the database, its
preview (a dry run) and the import itself, by contacts.importer, the code and
rules of `manage.py import_contacts`.

A file up to BACKGROUND_ABOVE_BYTES is checked and imported within the request.
A larger one is checked and imported by django-q2 workers, which any machine can
run: the file is in ImportChunk rows, read one chunk at a time, so memory stays
the same whatever the file's size. An import stops after a batch when its time
budget is spent and queues its own continuation, which resumes after the last
row written, so no task outlives django-q2's timeout. The chunks are deleted when
the import ends or is cancelled.
"""

import time

from django.conf import settings
from django.db import transaction
from django_q.tasks import async_task

from . import audit
from .importer import DEFAULT_BATCH_SIZE, ImportFileError, Result, import_contacts
from .models import ImportChunk, ImportJob

CHUNK_BYTES = 1024 * 1024
BATCH_SIZE = DEFAULT_BATCH_SIZE
# Larger files run in the background (about 10,000 rows of a typical export).
BACKGROUND_ABOVE_BYTES = 2 * 1024 * 1024
# The preview lists this many lines of each kind; a larger file shows counts for the rest.
LINES_SHOWN = 50
KINDS = (Result.CREATED, Result.UPDATED, Result.UNCHANGED, Result.REJECTED)
Status = ImportJob.Status


class OutOfTime(Exception):
    """Raised after a batch when an import's time budget is spent."""


def store_upload(uploaded_file, user, crms):
    """A new ImportJob holding `uploaded_file` (a Django UploadedFile) in chunks,
    read and written one chunk at a time."""
    with transaction.atomic():
        job = ImportJob.objects.create(
            file_name=uploaded_file.name[:255],
            size=uploaded_file.size,
            created_by=user,
            crms=list(crms),
            in_background=uploaded_file.size > BACKGROUND_ABOVE_BYTES,
        )
        # read() rather than chunks(): an upload held in memory gives all of it as one chunk.
        uploaded_file.seek(0)
        index = 0
        while data := uploaded_file.read(CHUNK_BYTES):
            ImportChunk.objects.create(job=job, index=index, data=data)
            index += 1
    return job


def file_lines(job):
    """The job's file as lines of bytes (each with its newline), as iterating a
    file opened in binary mode gives them; one chunk in memory at a time."""
    indexes = list(job.chunks.order_by("index").values_list("index", flat=True))
    pending = b""
    for index in indexes:
        pending += bytes(ImportChunk.objects.values_list("data", flat=True).get(job=job, index=index))
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line + b"\n"
    if pending:
        yield pending


def start_preview(job):
    """Check the file: at once for a small one, else in the background."""
    if job.in_background:
        _set(job, status=Status.PREVIEWING)
        async_task("contacts.import_jobs.preview_task", job.pk, task_name="Check import %d" % job.pk)
    else:
        preview(job)


def preview_task(job_id):
    preview(ImportJob.objects.get(pk=job_id))


def preview(job):
    """A dry run over the file: each kind's count and first LINES_SHOWN lines (line,
    email, reason), stored on the job; nothing is written."""
    lines = {kind: [] for kind in KINDS}

    def keep(line, item):
        if len(lines[item.result]) < LINES_SHOWN:
            lines[item.result].append([line, item.email, item.error])

    try:
        report = import_contacts(
            file_lines(job),
            select=job.crms,
            dry_run=True,
            batch_size=BATCH_SIZE,
            on_row=keep,
            on_progress=lambda report: _set(job, bytes_read=report.bytes_read),
        )
    except ImportFileError as exc:
        return _fail(job, str(exc))
    job.preview = {"counts": _counts(report), "lines": lines}
    _set(job, status=Status.PREVIEWED, preview=job.preview, bytes_read=report.bytes_read)


def confirm(job):
    """Run the import staff confirmed: at once for a small file, else in the background."""
    _set(job, status=Status.IMPORTING, bytes_read=0, counts=dict.fromkeys((*KINDS, "rows", "queued"), 0))
    if job.in_background:
        async_task("contacts.import_jobs.import_task", job.pk, task_name="Import %d" % job.pk)
    else:
        run_import(job, budget_seconds=None)


def import_task(job_id):
    job = ImportJob.objects.get(pk=job_id)
    if job.status == Status.IMPORTING:
        run_import(job, budget_seconds=budget_seconds())


def budget_seconds():
    """A slice of the import ends well before django-q2's timeout would kill it."""
    timeout = settings.Q_CLUSTER.get("timeout") or 600
    return max(5, timeout // 2)


def run_import(job, budget_seconds):
    """Import the job's file from where it stopped; with a budget, stop after the
    batch that spends it and queue the rest as a new task."""
    started, base = time.monotonic(), dict(job.counts)

    def progress(report):
        job.counts = {**base, **{name: base.get(name, 0) + value for name, value in _counts(report).items()}}
        _set(job, counts=job.counts, bytes_read=report.bytes_read, resume_line=report.last_line + 1)
        spent = budget_seconds is not None and time.monotonic() - started > budget_seconds
        if spent and not report.finished:
            raise OutOfTime

    try:
        import_contacts(
            file_lines(job),
            select=job.crms,
            batch_size=BATCH_SIZE,
            on_reject=lambda line, reason: _keep_rejected(job, line, reason),
            on_progress=progress,
            start_line=job.resume_line,
        )
    except OutOfTime:
        async_task("contacts.import_jobs.import_task", job.pk, task_name="Import %d (continued)" % job.pk)
        return
    except ImportFileError as exc:
        return _fail(job, str(exc))
    _finish(job)


def cancel(job):
    _set(job, status=Status.CANCELLED)
    job.chunks.all().delete()


def _finish(job):
    """The import is over: its file is deleted and the audit trail says what it did."""
    _set(job, status=Status.DONE, bytes_read=job.size)
    job.chunks.all().delete()
    counts = job.counts
    detail = "created %d, updated %d, unchanged %d, rejected %d from %s" % (
        counts["created"],
        counts["updated"],
        counts["unchanged"],
        counts["rejected"],
        job.file_name,
    )
    imported = counts["created"] + counts["updated"] + counts["unchanged"]
    audit.record(job.created_by, "Imported", count=imported, crms=job.crms, detail=detail)


def _keep_rejected(job, line, reason):
    if len(job.rejected_lines) < LINES_SHOWN:
        job.rejected_lines.append([line, reason])
        _set(job, rejected_lines=job.rejected_lines)


def _fail(job, message):
    _set(job, status=Status.FAILED, error=message)
    job.chunks.all().delete()


def _counts(report):
    return {name: getattr(report, name) for name in (*KINDS, "rows", "queued")}


def _set(job, **fields):
    """Write these fields of the job alone: a progress write must not undo a
    cancellation written meanwhile by another process."""
    for name, value in fields.items():
        setattr(job, name, value)
    ImportJob.objects.filter(pk=job.pk).update(**fields)
