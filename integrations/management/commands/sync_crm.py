import json
import threading
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import InterfaceError, OperationalError, connections
from django.db.models import Min, Q
from django.utils import timezone

from contacts.models import ContactSync, ProcessingStatus
from integrations.registry import enabled_backend_classes, get_enabled_backend_class
from integrations.backends.base_requests import sandbox_url
from integrations.conf import SyncPolicy
from integrations.engine import RunResult, SyncEngine, run_workers
from integrations.exceptions import CRMConfigurationError, InvalidContact, UnknownCRM

BAR_WIDTH = 30
MAX_WAIT_SECONDS = 10
# Lost database connections in a row that --until-empty rides out before giving up.
MAX_CONNECTION_LOSSES = 3


class Command(BaseCommand):
    help = (
        "Push queued contacts to CRMs now, the way the schedule does. Without --crm, "
        "every configured CRM."
    )

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
                self.style.WARNING("SANDBOX MODE: syncing to the local sandbox at %s, not to real CRMs." % sandbox_url())
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
            raise CommandError(str(exc), returncode=2)
        except CRMConfigurationError as exc:
            raise CommandError(str(exc), returncode=3)
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
            raise CommandError(str(exc), returncode=3)
        due_at_start = self._due_count(crm)
        total, shown = RunResult(crm), RunResult(crm)
        started = time.monotonic()
        losses = 0
        while True:
            remaining = None if limit is None else limit - total.claimed
            if remaining is not None and remaining <= 0:
                break
            try:
                result = run_workers(
                    backend_class,
                    workers,
                    batch_size=batch_size,
                    max_contacts=remaining,
                    on_batch=lambda batch: self._progress(crm, shown, batch, due_at_start),
                )
            except (InterfaceError, OperationalError) as exc:
                losses += 1
                if not until_empty or losses > MAX_CONNECTION_LOSSES:
                    raise
                result = self._connection_lost(crm, exc)
            else:
                losses = 0
            total.add(result)
            # A staff pause lasts until someone resumes it: waiting would never end.
            if result.paused_by or not until_empty or not self._wait_for_more(crm, result.paused_until):
                break
        total.seconds = time.monotonic() - started
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
        """A run stopped on a lost database connection: the transaction it was in
        rolled back, and rows it had claimed but not recorded are claimed again when
        their lease runs out. Carry on over a fresh connection."""
        connections.close_all()
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        self.stderr.write(
            self.style.WARNING(
                "%s: lost the database connection (%s); reconnecting. Contacts of the "
                "interrupted batch are synced again when their lease runs out." % (crm, reason)
            )
        )
        return RunResult(crm)

    def _wait_for_more(self, crm, paused_until=None):
        """Sleep until the next row falls due, and the CRM's pause (if any) is over;
        False when nothing is left queued."""
        pending = ContactSync.objects.filter(
            crm=crm, processing_status__in=[ProcessingStatus.QUEUED, ProcessingStatus.PROCESSING]
        )
        # A claimed row keeps the next_attempt_at it was queued with: only a queued
        # row's counts, or a row in flight would look due at once and keep us spinning.
        next_due = pending.aggregate(
            queued=Min("next_attempt_at", filter=Q(processing_status=ProcessingStatus.QUEUED)),
            leased=Min("lease_expires_at", filter=Q(processing_status=ProcessingStatus.PROCESSING)),
        )
        moments = [moment for moment in next_due.values() if moment]
        if not moments:
            return False
        # Rows that fell due while the CRM is paused wait for the pause to end.
        wait = (max(min(moments), paused_until or min(moments)) - timezone.now()).total_seconds()
        if wait > 0:
            if self.verbosity >= 2:
                self.stdout.write("%s: waiting %.0f s for the next due contact" % (crm, wait))
            time.sleep(min(wait, MAX_WAIT_SECONDS))
        return True

    @staticmethod
    def _due_count(crm):
        now = timezone.now()
        return ContactSync.objects.filter(crm=crm).filter(SyncEngine._due_condition(now)).count()

    def _dry_run(self, backend_class, batch_size, limit):
        backend = backend_class()
        count = limit or batch_size or SyncPolicy.for_backend(backend_class).batch_size
        due = (
            ContactSync.objects.filter(crm=backend_class.name)
            .filter(SyncEngine._due_condition(timezone.now()))
            .select_related("contact")
            .order_by("next_attempt_at", "pk")[:count]
        )
        shown = 0
        for row in due:
            try:
                payload = backend.build_payload(row.contact)
            except InvalidContact as exc:
                payload = {"invalid": exc.message}
            self.stdout.write(json.dumps({"crm": backend_class.name, "contact": row.contact.email, "payload": payload}, ensure_ascii=False))
            shown += 1
        self.stdout.write(
            self.style.WARNING("Dry run: %d %s payloads shown, nothing sent or changed." % (shown, backend_class.verbose_name))
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
            self.stdout.write("  ".join(cell.rjust(width) if i else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths))))
        for result in results:
            if result.paused_by:
                self.stdout.write(self.style.WARNING("%s: %s" % (result.crm, result.pause_reason)))
            elif result.paused_until:
                self.stdout.write(
                    self.style.WARNING(
                        "%s is paused until %s: %s"
                        % (result.crm, result.paused_until.isoformat(), result.pause_reason)
                    )
                )
