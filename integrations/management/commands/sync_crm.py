import json
import threading

from django.core.management.base import BaseCommand, CommandError

from integrations.conf import SyncPolicy, sandbox_url
from integrations.engine import RunResult
from integrations.exceptions import CRMConfigurationError, UnknownCRM
from integrations.registry import enabled_backend_classes, get_enabled_backend_class
from integrations.workers import drain, due_count, preview

BAR_WIDTH = 30


class Command(BaseCommand):
    help = "Push queued contacts to CRMs now, the way the schedule does. Without --crm, every configured CRM."

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
        if dry_run:
            for backend_class in backend_classes:
                self._dry_run(backend_class, batch_size, limit)
            return
        results = [
            self._sync(backend_class, batch_size, limit, until_empty, workers) for backend_class in backend_classes
        ]
        self._summary(results)

    def _backend_classes(self, names):
        names = [name.strip() for value in names for name in value.split(",") if name.strip()]
        try:
            if names:
                return [get_enabled_backend_class(name) for name in dict.fromkeys(names)]
        except UnknownCRM as exc:
            raise CommandError(str(exc), returncode=2) from exc
        except CRMConfigurationError as exc:
            raise CommandError(str(exc), returncode=3) from exc
        classes = enabled_backend_classes()
        if not classes:
            raise CommandError(
                "No CRM is configured. Set the credentials of at least one (for example "
                "BREVO_API_KEY) in the environment or .env.",
                returncode=3,
            )
        return list(classes)

    def _sync(self, backend_class, batch_size, limit, until_empty, workers):
        crm = backend_class.name
        try:
            SyncPolicy.for_backend(backend_class)
        except CRMConfigurationError as exc:
            raise CommandError(str(exc), returncode=3) from exc
        due_at_start = due_count(crm)
        shown = RunResult(crm)
        total = drain(
            backend_class,
            workers,
            batch_size=batch_size,
            limit=limit,
            until_empty=until_empty,
            on_batch=lambda batch: self._progress(crm, shown, batch, due_at_start),
            on_connection_lost=lambda exc: self._connection_lost(crm, exc),
            on_wait=lambda seconds: self._waiting(crm, seconds),
        )
        self._end_progress()
        return total

    def _progress(self, crm, total, batch, due_at_start):
        """Called after each batch, from every worker thread; `total` is the display's sum."""
        with self.progress_lock:
            total.add(batch)
            self._show_progress(crm, total, due_at_start)

    def _show_progress(self, crm, total, due_at_start):
        if self.verbosity < 1:
            return
        done = total.claimed
        if self.on_terminal:
            share = min(1.0, done / due_at_start) if due_at_start else 1.0
            bar = "#" * int(share * BAR_WIDTH)
            self.stdout.write(
                "\r%-8s [%-*s] %d/%d accepted %d retry %d failed %d"
                % (crm, BAR_WIDTH, bar, done, due_at_start, total.accepted, total.retry_scheduled, total.failed),
                ending="",
            )
            self.stdout.flush()
        else:
            self.stdout.write(
                "%s: %d claimed, %d accepted, %d retry scheduled, %d failed"
                % (crm, done, total.accepted, total.retry_scheduled, total.failed)
            )

    def _end_progress(self):
        if self.on_terminal and self.verbosity >= 1:
            self.stdout.write("")

    def _connection_lost(self, crm, exc):
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        self.stderr.write(
            self.style.WARNING(
                "%s: lost the database connection (%s); reconnecting. Contacts of the "
                "interrupted batch are synced again when their lease runs out." % (crm, reason)
            )
        )

    def _waiting(self, crm, seconds):
        if self.verbosity >= 2:
            self.stdout.write("%s: waiting %.0f s for the next due contact" % (crm, seconds))

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
        header = ("CRM", "claimed", "accepted", "retry scheduled", "failed", "seconds", "contacts/s")
        rows = [
            (
                r.crm,
                str(r.claimed),
                str(r.accepted),
                str(r.retry_scheduled),
                str(r.failed),
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
            if result.paused_by:
                self.stdout.write(self.style.WARNING("%s: %s" % (result.crm, result.pause_reason)))
            elif result.paused_until:
                self.stdout.write(
                    self.style.WARNING(
                        "%s is paused until %s: %s" % (result.crm, result.paused_until.isoformat(), result.pause_reason)
                    )
                )
