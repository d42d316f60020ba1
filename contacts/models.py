from django.conf import settings
from django.db import models, transaction
from django.db.models.functions import Lower
from django.dispatch import Signal
from django.utils.translation import gettext_lazy as _

from integrations.registry import validate_crm_name, verbose_crm_name

from .emails import canonical_email

# Sent with a queryset of contacts about to be deleted through the ORM (a
# QuerySet's or a contact's delete(); a raw SQL DELETE bypasses it).
contacts_deleting = Signal()


class LowercaseEmailField(models.EmailField):
    """An email stored and looked up in its canonical form (contacts.emails:
    stripped, NFC, lower-cased, the domain in Unicode after IDNA mapping), so that
    every spelling of one mailbox is one value: uniqueness and every lookup
    (filter, get_or_create, bulk upserts, the admin) ignore case, normalization and
    punycode."""

    def get_prep_value(self, value):
        return canonical_email(super().get_prep_value(value))

    def to_python(self, value):
        return canonical_email(super().to_python(value))


class ContactQuerySet(models.QuerySet):
    def delete(self):
        # Before the rows go: CRMs that mirror deletes keep what they need to
        # remove the contact there (contacts.selection.detach_removals). In the
        # delete's transaction, so that what receivers write stands or falls with
        # it (the attempt totals of /metrics count the history that goes).
        with transaction.atomic(using=self.db):
            contacts_deleting.send(sender=Contact, contacts=self)
            return super().delete()

    delete.alters_data = True
    delete.queryset_only = True


class Contact(models.Model):
    email = LowercaseEmailField(_("email"), max_length=254, unique=True)
    first_name = models.CharField(_("first name"), max_length=150, blank=True)
    last_name = models.CharField(_("last name"), max_length=150, blank=True)
    phone = models.CharField(_("phone"), max_length=50, blank=True)
    company = models.CharField(_("company"), max_length=255, blank=True)
    website = models.URLField(_("website"), max_length=500, blank=True)
    source_url = models.URLField(_("source URL"), max_length=2000, blank=True)
    attributes = models.JSONField(_("attributes"), default=dict, blank=True)
    # What enrichment workflows (n8n) found, merged; staff-entered fields stay apart.
    enrichment = models.JSONField(_("enrichment"), default=dict, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    objects = ContactQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # With this, the plain unique index on email is also case-insensitive,
            # whatever path (ORM, bulk insert, raw SQL) wrote the row.
            models.CheckConstraint(condition=models.Q(email=Lower("email")), name="contact_email_lowercase"),
        ]
        indexes = [
            # The drift sweep reads the contacts changed since its last run
            # (integrations.resync), in this order. updated_at moves on every change,
            # QuerySet.update and raw SQL included: a database trigger (migration
            # 0014) sets it when the statement did not.
            models.Index(fields=["updated_at", "id"], name="contact_changed"),
        ]
        permissions = [("erase_contact", _("Can erase contacts from every CRM (GDPR)"))]

    def __str__(self):
        return self.email

    def delete(self, *args, **kwargs):
        with transaction.atomic(using=kwargs.get("using") or self._state.db):
            contacts_deleting.send(sender=Contact, contacts=Contact.objects.filter(pk=self.pk))
            return super().delete(*args, **kwargs)

    @property
    def full_name(self):
        return " ".join(part for part in (self.first_name, self.last_name) if part)


class SyncStatus(models.TextChoices):
    """What staff decided for a contact and a CRM."""

    NEW = "new", _("New")
    SELECTED = "selected", _("Selected")
    COMPLETE = "complete", _("Complete")
    ERROR = "error", _("Error")
    SKIPPED = "skipped", _("Skipped")


class ProcessingStatus(models.TextChoices):
    """Where the work for a contact and a CRM stands."""

    NONE = "", _("(none)")
    QUEUED = "queued", _("Queued")
    PROCESSING = "processing", _("Processing")
    COMPLETE = "complete", _("Complete")
    ERROR = "error", _("Error")
    # The CRM has no record for it and crmsync will not create one without staff:
    # its id is gone (deleted or merged away in the CRM), or the CRM is written in
    # update_only mode and does not know the contact. last_error says which.
    NOT_IN_CRM = "not_in_crm", _("Not in the CRM")
    # A removal (mirror delete) or an erasure was confirmed by the CRM.
    REMOVED = "removed", _("Removed from the CRM")


class Operation(models.TextChoices):
    """What the next push of a row does in the CRM. Every operation is claimed,
    paced, retried and fenced by the engine alike."""

    UPSERT = "", _("Create or update")
    # Mirror a local delete or skip: HubSpot archives, Brevo and Mautic delete.
    REMOVE = "remove", _("Remove from the CRM")
    # A GDPR erasure: each CRM's own erase; never given up.
    ERASE = "erase", _("Erase (GDPR)")


class CRMEvent(models.TextChoices):
    """What the CRM last told us about the person (its inbound webhooks)."""

    NONE = "", _("(none)")
    UNSUBSCRIBED = "unsubscribed", _("Unsubscribed")
    HARD_BOUNCE = "hard_bounce", _("Hard bounce")
    SPAM_COMPLAINT = "spam_complaint", _("Spam complaint")
    DELETED = "deleted", _("Deleted in the CRM")
    PRIVACY_DELETED = "privacy_deleted", _("Privacy deletion in the CRM")
    MERGED = "merged", _("Merged in the CRM")


# Events that withdraw consent: crmsync never sends anything that would undo them.
OPT_OUT_EVENTS = (CRMEvent.UNSUBSCRIBED, CRMEvent.HARD_BOUNCE, CRMEvent.SPAM_COMPLAINT)
# Events after which the CRM has no record: not created again unless staff select it.
GONE_EVENTS = (CRMEvent.DELETED, CRMEvent.PRIVACY_DELETED)


class PendingDecision(models.TextChoices):
    """A staff decision taken while the row was in flight, applied when its batch records."""

    NONE = "", _("(none)")
    # Staff selected it again, or the contact changed: push again after the record.
    SELECT = "select", _("Queue again when the push in flight ends")
    SKIP = "skip", _("Skip when the push in flight ends")
    # Staff unselected it: back to New, nothing queued, nothing deleted in the CRM.
    UNSELECT = "unselect", _("Back to New when the push in flight ends")
    # An erasure began during a push: the row (operation erase) is queued after it.
    ERASE = "erase", _("Erase when the push in flight ends")


def _queued_due(now):
    return models.Q(processing_status=ProcessingStatus.QUEUED, next_attempt_at__lte=now)


def _lease_expired(now):
    return models.Q(processing_status=ProcessingStatus.PROCESSING, lease_expires_at__lt=now)


def _complete():
    return models.Q(sync_status=SyncStatus.COMPLETE, processing_status=ProcessingStatus.COMPLETE)


class ContactSyncQuerySet(models.QuerySet):
    """The questions every part of the sync asks of the rows, each written once.
    The queued and processing filters match the partial indexes below
    (contactsync_due_queued, contactsync_leased), so they read only those."""

    def for_crm(self, crm):
        return self.filter(crm=crm)

    def queued(self):
        return self.filter(processing_status=ProcessingStatus.QUEUED)

    def in_flight(self):
        """Claimed by a worker (Processing), whether its lease runs or ran out."""
        return self.filter(processing_status=ProcessingStatus.PROCESSING)

    def queued_due(self, now):
        return self.filter(_queued_due(now))

    def expired_leases(self, now):
        """Processing rows whose worker died: their lease ran out before it recorded."""
        return self.filter(_lease_expired(now))

    def due(self, now):
        """What a worker may claim now: queued and due, or Processing with an expired
        lease. The SQLite claim re-checks it as its compare-and-set."""
        return self.filter(_queued_due(now) | _lease_expired(now))

    def held_by(self, token):
        """The rows still in flight under a batch's claim token."""
        return self.in_flight().filter(claim_token=token)

    def complete(self):
        return self.filter(_complete())

    def complete_or_in_flight(self):
        return self.filter(_complete() | models.Q(processing_status=ProcessingStatus.PROCESSING))

    def oldest_due_at(self, now):
        """When the longest-waiting due row fell due, or None; the claim's partial
        index answers it without reading the queue."""
        return self.queued_due(now).order_by("next_attempt_at").values_list("next_attempt_at", flat=True).first()

    def queue_stats(self, crms, now):
        """{crm: {"queued", "due", "in_flight", "oldest_due_at"}} for each name in
        `crms`: two GROUP BY queries read from the partial indexes alone
        (contactsync_due_queued, contactsync_leased), whatever the number of rows.
        The health check and the API's CRM list both report these."""
        rows = self.filter(crm__in=crms).values("crm").order_by()
        due = models.Q(next_attempt_at__lte=now)
        queued = rows.queued().annotate(
            queued=models.Count("*"),
            due=models.Count("next_attempt_at", filter=due),
            oldest_due_at=models.Min("next_attempt_at", filter=due),
        )
        stats = {crm: {"queued": 0, "due": 0, "in_flight": 0, "oldest_due_at": None} for crm in crms}
        for row in queued:
            stats[row.pop("crm")].update(row)
        for row in rows.in_flight().annotate(in_flight=models.Count("*")):
            stats[row["crm"]]["in_flight"] = row["in_flight"]
        return stats

    def error_counts(self, crms):
        """{crm: rows in sync status Error} (given up, waiting for staff to retry),
        one GROUP BY over the status index."""
        rows = self.filter(crm__in=crms, sync_status=SyncStatus.ERROR).values_list("crm").order_by()
        counts = dict.fromkeys(crms, 0)
        counts.update(rows.annotate(rows=models.Count("*")))
        return counts

    def next_due_at(self):
        """When the next row falls due (a queued row's time, or a claimed row's lease
        end), or None when nothing is queued or in flight."""
        # A claimed row keeps the next_attempt_at it was queued with: only a queued
        # row's counts, or a row in flight would look due at once.
        moments = self.filter(processing_status__in=[ProcessingStatus.QUEUED, ProcessingStatus.PROCESSING]).aggregate(
            queued=models.Min("next_attempt_at", filter=models.Q(processing_status=ProcessingStatus.QUEUED)),
            leased=models.Min("lease_expires_at", filter=models.Q(processing_status=ProcessingStatus.PROCESSING)),
        )
        moments = [moment for moment in moments.values() if moment]
        return min(moments) if moments else None


class ContactSync(models.Model):
    """The dual status of one contact for one CRM. Only contacts.selection (staff)
    and integrations.engine with its breaker and leases (worker) write its status
    fields."""

    # NULL once the contact was deleted locally while a removal (mirror delete) or
    # an erasure for it is still to be delivered: the row keeps what the engine
    # needs (the CRM's id) and goes when the CRM confirms. See selection.detach_removals.
    contact = models.ForeignKey(
        Contact,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="syncs",
        verbose_name=_("contact"),
        # Found through contactsync_unique_contact_crm (contact first): an index of
        # its own would be one more to write on every status change (see Meta).
        db_index=False,
    )
    crm = models.CharField(_("CRM"), max_length=32, validators=[validate_crm_name])
    operation = models.CharField(
        _("operation"), max_length=16, choices=Operation.choices, default=Operation.UPSERT, blank=True
    )
    sync_status = models.CharField(_("sync status"), max_length=16, choices=SyncStatus.choices, default=SyncStatus.NEW)
    processing_status = models.CharField(
        _("processing status"),
        max_length=16,
        choices=ProcessingStatus.choices,
        default=ProcessingStatus.NONE,
        blank=True,
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True)
    lease_expires_at = models.DateTimeField(_("lease expires at"), null=True, blank=True)
    claim_token = models.UUIDField(_("claim token"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    external_id = models.CharField(_("ID in the CRM"), max_length=100, blank=True)
    synced_at = models.DateTimeField(_("synced at"), null=True, blank=True)
    synced_hash = models.CharField(_("hash of the synced payload"), max_length=64, blank=True)
    # What the CRM took with a reservation on the last accepted push (a value it
    # cannot take was left out, a record left as it was): shown to staff beside
    # the status; cleared by the next push that has nothing to say.
    warning = models.TextField(_("warning"), blank=True)
    # The email the CRM's record had after the last accepted push, in crmsync's
    # form: a push after an email change tells the CRM the old one (n8n) and staff
    # see which address the CRM knows.
    synced_email = models.CharField(_("email in the CRM"), max_length=254, blank=True)
    # The CRM's id of an asynchronous bulk import that carries this row (Brevo's
    # processId), recorded as soon as the CRM answers: a worker that claims the row
    # after the first one died follows that import instead of sending it again.
    crm_process_id = models.CharField(_("CRM import process"), max_length=100, blank=True)
    crm_event = models.CharField(
        _("CRM event"), max_length=20, choices=CRMEvent.choices, default=CRMEvent.NONE, blank=True
    )
    crm_event_at = models.DateTimeField(_("CRM event at"), null=True, blank=True)
    # Set by an opt-out event (unsubscribe, hard bounce, spam complaint): shown to
    # staff and never undone by a sync (no payload carries a subscription state).
    opted_out_at = models.DateTimeField(_("opted out at"), null=True, blank=True)
    # The erasure this row delivers (operation erase), whose proof it writes to.
    erasure = models.ForeignKey(
        "Erasure",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="syncs",
        verbose_name=_("erasure"),
        db_index=False,  # contactsync_erasure holds only the rows that have one
    )
    # Set while Processing by a staff decision or a change to the contact; the
    # record step applies it, so nothing decided mid-push is lost.
    pending_decision = models.CharField(
        _("decision taken during the push"),
        max_length=16,
        choices=PendingDecision.choices,
        default=PendingDecision.NONE,
        blank=True,
    )
    # When the current run of failures began: giving up needs both the attempts
    # and this much time (CRMSYNC_GIVE_UP_AFTER_HOURS).
    first_failed_at = models.DateTimeField(_("failing since"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    objects = ContactSyncQuerySet.as_manager()

    class Meta:
        verbose_name = _("contact sync")
        verbose_name_plural = _("contact syncs")
        constraints = [
            models.UniqueConstraint(fields=["contact", "crm"], name="contactsync_unique_contact_crm"),
        ]
        # Every status change (claim, record, selection) writes a new version of the
        # row into every index below, because the status columns are indexed (no
        # HOT update): at a million rows each index is a cold page per row, so
        # there are no more of them than the questions asked need (bench/claim.py).
        indexes = [
            # The claim query reads due rows for one CRM; only queued rows are due,
            # so the index stays small however many rows are complete.
            models.Index(
                fields=["crm", "next_attempt_at"],
                condition=models.Q(processing_status=ProcessingStatus.QUEUED),
                name="contactsync_due_queued",
            ),
            # Rows whose worker died are found by their lease; few rows are
            # processing at any time, so this index stays tiny too.
            models.Index(
                fields=["crm", "lease_expires_at"],
                condition=models.Q(processing_status=ProcessingStatus.PROCESSING),
                name="contactsync_leased",
            ),
            # The dashboard's counts by status read this index alone (an index-only
            # scan), not the table: a third of the time at a million rows.
            models.Index(fields=["crm", "sync_status", "processing_status"], name="contactsync_status_counts"),
            # A CRM's webhook names its records by their id: found without a scan.
            models.Index(
                fields=["crm", "external_id"],
                condition=~models.Q(external_id=""),
                name="contactsync_external_id",
            ),
            # The rows delivering an erasure, among the few that have one.
            models.Index(fields=["erasure"], condition=models.Q(erasure__isnull=False), name="contactsync_erasure"),
            # The dashboard's top errors: rows with an error are few.
            models.Index(
                fields=["crm", "updated_at"],
                condition=~models.Q(last_error=""),
                name="contactsync_recent_errors",
            ),
        ]

    def __str__(self):
        return "%s for %s" % (self.contact_id or "(deleted contact)", self.crm_label)

    @property
    def crm_label(self):
        return verbose_crm_name(self.crm)


class AttemptOutcome(models.TextChoices):
    ACCEPTED = "accepted", _("Accepted")
    RETRY = "retry", _("Retry scheduled")
    # A rate limit or an unavailable CRM: queued again without using up an attempt.
    WAITED = "waited", _("Waited for the CRM")
    FAILED = "failed", _("Failed")


class SyncAttempt(models.Model):
    """One push of one contact to one CRM: the history behind ContactSync."""

    contact = models.ForeignKey(
        Contact, on_delete=models.CASCADE, related_name="sync_attempts", verbose_name=_("contact")
    )
    crm = models.CharField(_("CRM"), max_length=32, validators=[validate_crm_name])
    attempted_at = models.DateTimeField(_("attempted at"), db_index=True)
    outcome = models.CharField(_("outcome"), max_length=16, choices=AttemptOutcome.choices)
    http_status = models.PositiveSmallIntegerField(_("HTTP status"), null=True, blank=True)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), default=0)
    error = models.TextField(_("error"), blank=True)

    class Meta:
        verbose_name = _("sync attempt")
        verbose_name_plural = _("sync attempts")
        ordering = ["-attempted_at", "-id"]
        indexes = [
            models.Index(fields=["contact", "-attempted_at"], name="syncattempt_contact_recent"),
            # The dashboard's contacts synced per hour, read from the index alone.
            models.Index(
                fields=["attempted_at", "crm"],
                condition=models.Q(outcome=AttemptOutcome.ACCEPTED),
                name="syncattempt_accepted",
            ),
        ]

    def __str__(self):
        return "%s to %s at %s: %s" % (
            self.contact_id,
            verbose_crm_name(self.crm),
            self.attempted_at,
            self.outcome,
        )


class DriftSweep(models.Model):
    """How far the drift sweep of one CRM has read (integrations.resync): the next
    sweep compares only the contacts changed since `changed_since`, unless what
    shapes the CRM's payloads besides the contact (`payload_fingerprint`: field map,
    lists, defaults) changed, in which case it compares every Complete row."""

    crm = models.CharField(_("CRM"), max_length=32, unique=True, validators=[validate_crm_name])
    changed_since = models.DateTimeField(_("contacts changed since"))
    payload_fingerprint = models.CharField(_("payload fingerprint"), max_length=64)
    swept_at = models.DateTimeField(_("swept at"))

    class Meta:
        verbose_name = _("drift sweep")
        verbose_name_plural = _("drift sweeps")

    def __str__(self):
        return "%s: contacts changed since %s" % (verbose_crm_name(self.crm), self.changed_since)


class ErasureStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    COMPLETE = "complete", _("Complete")
    CANCELLED = "cancelled", _("Cancelled")


class Erasure(models.Model):
    """Proof that a person was erased from every CRM (GDPR Art. 17), kept without
    personal data: who asked, when, a keyed hash of the email (contacts.suppression)
    and each CRM's answer (ErasureResult). The address itself is kept only while
    some CRM has yet to confirm, since it is what the CRMs are asked to erase, and
    is blanked when the erasure completes or is cancelled."""

    email_hash = models.CharField(_("keyed hash of the email"), max_length=64, db_index=True)
    email = models.CharField(_("email (until erased)"), max_length=254, blank=True)
    requested_by = models.CharField(_("requested by"), max_length=150)
    requested_via = models.CharField(_("requested via"), max_length=16)
    requested_at = models.DateTimeField(_("requested at"))
    status = models.CharField(
        _("status"), max_length=16, choices=ErasureStatus.choices, default=ErasureStatus.PENDING, db_index=True
    )
    completed_at = models.DateTimeField(_("completed at"), null=True, blank=True)
    cancelled_by = models.CharField(_("cancelled by"), max_length=150, blank=True)
    # Whether the local contact was found and deleted when every CRM confirmed.
    local_contact_deleted = models.BooleanField(_("local contact deleted"), default=False)

    class Meta:
        verbose_name = _("erasure")
        verbose_name_plural = _("erasures")
        ordering = ["-requested_at", "-id"]

    def __str__(self):
        return "Erasure %s (%s)" % (self.pk, self.get_status_display())


class ErasureOutcome(models.TextChoices):
    PENDING = "pending", _("Pending")
    ERASED = "erased", _("Erased")
    NOT_FOUND = "not_found", _("Not found: nothing to erase")
    NOT_CONFIGURED = "not_configured", _("Not configured: erase there by hand")
    CANCELLED = "cancelled", _("Cancelled")


class ErasureResult(models.Model):
    """One CRM's part of an erasure: its answer with any email removed."""

    # What the proof shows of each CRM, in the admin and the API alike.
    PROOF_FIELDS = (
        "crm",
        "outcome",
        "attempts",
        "first_attempt_at",
        "last_attempt_at",
        "confirmed_at",
        "http_status",
        "answer",
    )

    erasure = models.ForeignKey(Erasure, on_delete=models.CASCADE, related_name="results")
    crm = models.CharField(_("CRM"), max_length=32, validators=[validate_crm_name])
    outcome = models.CharField(
        _("outcome"), max_length=16, choices=ErasureOutcome.choices, default=ErasureOutcome.PENDING
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    first_attempt_at = models.DateTimeField(_("first attempt at"), null=True, blank=True)
    last_attempt_at = models.DateTimeField(_("last attempt at"), null=True, blank=True)
    confirmed_at = models.DateTimeField(_("confirmed at"), null=True, blank=True)
    http_status = models.PositiveSmallIntegerField(_("HTTP status"), null=True, blank=True)
    answer = models.TextField(_("the CRM's answer (emails removed)"), blank=True)

    class Meta:
        verbose_name = _("erasure result")
        verbose_name_plural = _("erasure results")
        constraints = [models.UniqueConstraint(fields=["erasure", "crm"], name="erasureresult_unique_crm")]
        ordering = ["crm"]

    def __str__(self):
        return "%s: %s" % (verbose_crm_name(self.crm), self.get_outcome_display())


class Suppression(models.Model):
    """An erased person's keyed email hash: imports, API upserts and enrichment
    callbacks with that email are refused until staff lift it."""

    email_hash = models.CharField(_("keyed hash of the email"), max_length=64, unique=True)
    erasure = models.ForeignKey(Erasure, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(_("suppressed at"), auto_now_add=True)

    class Meta:
        verbose_name = _("suppressed email")
        verbose_name_plural = _("suppressed emails")
        ordering = ["-created_at"]

    def __str__(self):
        return "Suppressed %s…" % self.email_hash[:12]


class ImportJob(models.Model):
    """A CSV file staff uploaded in the admin to import (contacts.import_jobs): its
    bytes in ImportChunk rows, so that any worker on any machine can read it, the
    preview of what it would do, and the progress and result of the import. The
    chunks are deleted when the import ends or is cancelled; the job stays as a
    record."""

    class Status(models.TextChoices):
        UPLOADED = "uploaded", _("Uploaded")
        PREVIEWING = "previewing", _("Checking the file")
        PREVIEWED = "previewed", _("Ready to import")
        IMPORTING = "importing", _("Importing")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    file_name = models.CharField(_("file name"), max_length=255)
    size = models.PositiveBigIntegerField(_("size in bytes"), default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("uploaded by"),
    )
    created_at = models.DateTimeField(_("uploaded at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    crms = models.JSONField(_("CRMs to queue for"), default=list, blank=True)
    status = models.CharField(_("status"), max_length=12, choices=Status.choices, default=Status.UPLOADED)
    in_background = models.BooleanField(_("runs in the background"), default=False)
    # {"counts": {...}, "lines": {result: [[line, email, reason], ...]}} of the dry run.
    preview = models.JSONField(_("preview"), default=dict, blank=True)
    # The import's own counts so far ({created, updated, unchanged, rejected, rows,
    # queued}), its first rejected lines, and where a stopped run resumes.
    counts = models.JSONField(_("counts"), default=dict, blank=True)
    rejected_lines = models.JSONField(_("first rejected lines"), default=list, blank=True)
    bytes_read = models.PositiveBigIntegerField(_("bytes read"), default=0)
    resume_line = models.PositiveIntegerField(_("resume at line"), default=0)
    error = models.TextField(_("error"), blank=True)

    class Meta:
        verbose_name = _("contact import")
        verbose_name_plural = _("contact imports")
        ordering = ["-created_at"]

    def __str__(self):
        return self.file_name


class ImportChunk(models.Model):
    """One piece of an ImportJob's file, in order; read one at a time."""

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    data = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="importchunk_unique_index")]

    def __str__(self):
        return "%s, part %d" % (self.job_id, self.index)
