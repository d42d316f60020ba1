import json
import logging
import sys
import threading
from contextlib import ExitStack, contextmanager
from datetime import UTC

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from crmsync_project.logging import ProgressLine
from integrations.conf import SyncPolicy, sandbox_url
from integrations.engine import RunResult
from integrations.exceptions import CRMConfigurationError, UnknownCRM
from integrations.models import PAUSE_LOG_MARK
from integrations.registry import enabled_backend_classes, get_enabled_backend_class
from integrations.workers import drain, due_count, preview

BAR_WIDTH = 30
# Exit statuses. A stopping error (1, 2, 3) comes before anything is sent; once the
# CRMs have run, one that ended paused makes it 4, whatever the others did.
EXIT_OK, EXIT_PAUSED = 0, 4
EXIT_STATUSES = (
    "Exit status: 0 every CRM ran and none is paused; 4 at least one CRM ended paused (by staff, by the CRM "
    "or by the circuit breaker; its released contacts wait in the queue), whatever the others did; 1 a bad "
    "option or a lost database connection; 2 an unknown CRM name; 3 a CRM not configured. A bad option, 2 and "
    "3 stop the command before anything is sent."
)
# The engine and CRMState log a pause as it happens, marked with PAUSE_LOG_MARK
# in the record's extra; the command says it once itself.
PAUSE_LOGGERS = ("integrations.engine", "integrations.models")


def said_by_the_command(record):
    """Logging filter: False for the pause records sync_crm reports itself."""
    return not getattr(record, PAUSE_LOG_MARK, False)


def readable_time(moment):
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class Command(BaseCommand):
    help = (
        "Push queued contacts to CRMs now, the way the schedule does. Without --crm, every configured CRM. "
        + EXIT_STATUSES
    )
    exit_status = EXIT_OK

    def add_arguments(self, parser):
        parser.add_argument(
            "--crm",
            action="append",
            default=[],
            metavar="NAME",
            help="A CRM to sync (brevo, hubspot, ...); repeat or comma-separate for several.",
        )
        parser.add_argument("--batch-size", type=int, help="Contacts per push (default: the CRM's setting).")
        parser.add_argument("--limit", type=int, help="Stop after claiming this many contacts per CRM.")
        parser.add_argument(
            "--until-empty",
            action="store_true",
            help="Keep going, waiting out back-offs and pauses, until nothing is queued.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Print the payloads the next due contacts would be sent with, and change nothing.",
        )
        parser.add_argument("--workers", type=int, default=1, help="Claim loops side by side per CRM.")

    def run_from_argv(self, argv):
        super().run_from_argv(argv)
        # A paused CRM is not an error (nothing to print on stderr), but scripts must see it.
        if self.exit_status:
            sys.exit(self.exit_status)

    def handle(self, *args, crm, batch_size, limit, until_empty, dry_run, workers, **options):
        for name, value in (("--batch-size", batch_size), ("--limit", limit), ("--workers", workers)):
            if value is not None and value < 1:
                raise CommandError("%s must be at least 1." % name)
        backend_classes = self._backend_classes(crm)
        if sandbox_url():
            self.stderr.write(
                self.style.WARNING(
                    "SANDBOX MODE: syncing to the local sandbox at %s, not to real CRMs." % sandbox_url()
                )
            )
        self.verbosity = options["verbosity"]
        self.on_terminal = self.stdout.isatty()
        self.progress_lock = threading.Lock()
        self.pauses_said = set()
        self.progress_line = None
        if dry_run:
            for backend_class in backend_classes:
                self._dry_run(backend_class, batch_size, limit)
            return
        with self._pause_logs_left_to_the_command():
            results = [
                self._sync(backend_class, batch_size, limit, until_empty, workers) for backend_class in backend_classes
            ]
        self._summary(results)
        self.exit_status = EXIT_PAUSED if any(self._ended_paused(result) for result in results) else EXIT_OK

    def _backend_classes(self, names):
        """The CRMs to sync, every one checked before any is: a configuration error
        stops the command before anything is sent."""
        names = [name.strip() for value in names for name in value.split(",") if name.strip()]
        try:
            classes = [get_enabled_backend_class(name) for name in dict.fromkeys(names)] or enabled_backend_classes()
            for backend_class in classes:
                SyncPolicy.for_backend(backend_class)
        except UnknownCRM as exc:
            raise CommandError(str(exc), returncode=2) from exc
        except CRMConfigurationError as exc:
            raise CommandError(str(exc), returncode=3) from exc
        if not classes:
            raise CommandError(
                "No CRM is configured. Set the credentials of at least one (for example "
                "BREVO_API_KEY) in the environment or .env.",
                returncode=3,
            )
        return list(classes)

    @contextmanager
    def _pause_logs_left_to_the_command(self):
        loggers = [logging.getLogger(name) for name in PAUSE_LOGGERS]
        for logger in loggers:
            logger.addFilter(said_by_the_command)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(said_by_the_command)

    def _sync(self, backend_class, batch_size, limit, until_empty, workers):
        crm = backend_class.name
        due_at_start = due_count(crm)
        shown = RunResult(crm)
        with ExitStack() as stack:
            self.progress_line = None
            if self.on_terminal and self.verbosity >= 1:
                self.progress_line = stack.enter_context(ProgressLine(self._write_raw, self.stdout.flush))
            return drain(
                backend_class,
                workers,
                batch_size=batch_size,
                limit=limit,
                until_empty=until_empty,
                on_batch=lambda batch: self._progress(crm, shown, batch, due_at_start, until_empty),
                on_connection_lost=lambda exc: self._connection_lost(crm, exc),
                on_wait=lambda seconds: self._waiting(crm, seconds),
            )

    def _write_raw(self, text):
        self.stdout.write(text, ending="")

    def _say(self, text, stream=None):
        """Write a line above the progress bar, if one is shown."""
        stream = stream or self.stdout
        if self.progress_line is None:
            stream.write(text)
            return
        with self.progress_line.set_aside():
            stream.write(text)

    def _progress(self, crm, total, batch, due_at_start, until_empty):
        """Called after each batch, from every worker thread; `total` is the display's sum."""
        with self.progress_lock:
            total.add(batch)
            if until_empty and batch.paused_until and not batch.paused_by:
                # The run waits this pause out: say it now, since the summary will not.
                self._say_pause(batch)
            self._show_progress(crm, total, due_at_start)

    def _show_progress(self, crm, total, due_at_start):
        done = total.claimed
        if self.progress_line is not None:
            share = min(1.0, done / due_at_start) if due_at_start else 1.0
            bar = "#" * int(share * BAR_WIDTH)
            self.progress_line.show(
                "%-8s [%-*s] %d/%d accepted %d retry %d failed %d"
                % (crm, BAR_WIDTH, bar, done, due_at_start, total.accepted, total.retry_scheduled, total.failed)
            )
        elif self.verbosity >= 2:
            # Off a terminal the engine logs every batch, and the summary ends the run:
            # running totals only when asked for.
            self.stdout.write(
                "%s: %d claimed, %d accepted, %d retry scheduled, %d failed, %d released"
                % (crm, done, total.accepted, total.retry_scheduled, total.failed, total.waited)
            )

    def _connection_lost(self, crm, exc):
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        self._say(
            self.style.WARNING(
                "%s: lost the database connection (%s); reconnecting. Contacts of the "
                "interrupted batch are synced again when their lease runs out." % (crm, reason)
            ),
            self.stderr,
        )

    def _waiting(self, crm, seconds):
        if self.verbosity >= 2:
            self._say("%s: waiting %.0f s for the next due contact" % (crm, seconds))

    def _dry_run(self, backend_class, batch_size, limit):
        count = limit or batch_size or SyncPolicy.for_backend(backend_class).batch_size
        shown = 0
        for contact, payload in preview(backend_class, count):
            self.stdout.write(
                json.dumps(
                    {"crm": backend_class.name, "contact": contact.email, "payload": payload}, ensure_ascii=False
                )
            )
            shown += 1
        self.stdout.write(
            self.style.WARNING(
                "Dry run: %d %s payloads shown, nothing sent or changed." % (shown, backend_class.verbose_name)
            )
        )

    def _summary(self, results):
        header = ("CRM", "claimed", "accepted", "retry scheduled", "failed", "released", "seconds", "contacts/s")
        rows = [
            (
                r.crm,
                str(r.claimed),
                str(r.accepted),
                str(r.retry_scheduled),
                str(r.failed),
                str(r.waited),
                "%.1f" % r.seconds,
                "%.0f" % r.contacts_per_second,
            )
            for r in results
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            self.stdout.write(
                "  ".join(
                    cell.rjust(width) if i else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths))
                )
            )
        for result in results:
            if result.not_in_crm:
                self.stdout.write(
                    self.style.WARNING(
                        "%s: %d contacts are not in the CRM and were not created (update_only, or their record "
                        "was deleted or merged there); the admin lists them as Not in the CRM."
                        % (result.crm, result.not_in_crm)
                    )
                )
            if self._ended_paused(result):
                self._say_pause(result)

    def _ended_paused(self, result):
        """Whether the run of this CRM ended on a pause (a staff pause, or one not over yet)."""
        return bool(result.paused_by) or bool(result.paused_until and result.paused_until > timezone.now())

    def _say_pause(self, result):
        """Say a pause once, with its end to the minute and the contacts it sent back to the queue."""
        if (result.crm, result.paused_until, result.paused_by) in self.pauses_said:
            return
        self.pauses_said.add((result.crm, result.paused_until, result.paused_by))
        if result.paused_by:
            text = "%s: %s" % (result.crm, result.pause_reason)
        else:
            text = "%s is paused until %s: %s" % (result.crm, readable_time(result.paused_until), result.pause_reason)
        if result.waited:
            text += " %d released contacts wait in the queue for it." % result.waited
        self._say(self.style.WARNING(text))
