import os
import sys
import time

from django.core.management.base import BaseCommand, CommandError

from contacts.importer import DEFAULT_BATCH_SIZE, ImportFileError, import_contacts
from integrations.registry import UnknownCRM, verbose_crm_name


class Command(BaseCommand):
    help = (
        "Import contacts from a CSV file, upserting by email. The header row names the "
        "columns: email, first_name, last_name, phone, company, website, source_url; any "
        "other column is kept in the contact's attributes. Rejected rows are reported "
        "with their line number and never stop the rest of the file."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="Path of the CSV file (UTF-8), or - for standard input.")
        parser.add_argument(
            "--select",
            default="",
            metavar="CRM[,CRM...]",
            help="Queue every imported contact for these CRMs, e.g. brevo,hubspot.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Check the file and report what would happen, writing nothing.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            help="Rows written per database round trip (default: %(default)s).",
        )

    def handle(self, *args, file, select, dry_run, batch_size, **options):
        crms = [name.strip() for name in select.split(",") if name.strip()]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        self.show_progress = self.stdout.isatty() and options["verbosity"] > 0
        started = time.monotonic()
        binary_file, total_bytes = self._open(file)
        try:
            report = import_contacts(
                binary_file,
                select=crms,
                dry_run=dry_run,
                batch_size=batch_size,
                on_reject=self._report_rejection,
                on_progress=lambda report: self._report_progress(report, total_bytes, started),
            )
        except UnknownCRM as exc:
            raise CommandError(str(exc)) from None
        except ImportFileError as exc:
            raise CommandError("%s: %s" % (file, exc)) from None
        finally:
            if binary_file is not sys.stdin.buffer:
                binary_file.close()
        self._clear_progress()
        self._summarise(report, dry_run, time.monotonic() - started)

    def _open(self, path):
        if path == "-":
            return sys.stdin.buffer, None
        try:
            return open(path, "rb"), os.path.getsize(path)
        except OSError as exc:
            raise CommandError("Cannot read %s: %s" % (path, exc.strerror)) from None

    def _report_rejection(self, line, reason):
        self._clear_progress()
        self.stderr.write("line %d: rejected: %s" % (line, reason))

    def _report_progress(self, report, total_bytes, started):
        if not self.show_progress:
            return
        done = "%d rows" % report.rows
        if total_bytes:
            done += " (%d%%)" % (100 * report.bytes_read // total_bytes)
        rate = report.rows / max(time.monotonic() - started, 1e-6)
        self.stdout.write("\rImporting: %s, %d rows/s " % (done, rate), ending="")
        self.stdout.flush()

    def _clear_progress(self):
        if self.show_progress:
            self.stdout.write("\r\033[K", ending="")

    def _summarise(self, report, dry_run, seconds):
        template = (
            "Would create %d, update %d, leave unchanged %d, reject %d of %d rows (%.1f s)."
            if dry_run
            else "Created %d, updated %d, unchanged %d, rejected %d of %d rows in %.1f s."
        )
        summary = template % (
            report.created,
            report.updated,
            report.unchanged,
            report.rejected,
            report.rows,
            seconds,
        )
        style = self.style.WARNING if report.rejected or not report.rows else self.style.SUCCESS
        self.stdout.write(style(summary))
        if not report.rows:
            self.stdout.write(style("The file has a header row but no contacts after it."))
        if report.crms and not dry_run:
            self.stdout.write(
                "Queued %d syncs for %s." % (report.queued, ", ".join(verbose_crm_name(crm) for crm in report.crms))
            )
        if dry_run:
            self.stdout.write("Dry run: nothing was written.")
