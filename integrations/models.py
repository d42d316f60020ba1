import logging
from typing import NamedTuple

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .registry import validate_crm_name, verbose_crm_name

logger = logging.getLogger(__name__)

# Set in the extra of the log records that announce a pause, so that a command
# reporting pauses itself (sync_crm) can leave those out.
PAUSE_LOG_MARK = "crm_pause"

# The longest error or pause reason kept; a CRM's answer can be a whole page.
ERROR_MAX_LENGTH = 2000


def clip(message):
    message = message or ""
    return message if len(message) <= ERROR_MAX_LENGTH else message[: ERROR_MAX_LENGTH - 1] + "…"


class Pause(NamedTuple):
    until: object  # None for a staff pause, which lasts until resumed
    reason: str
    by: str = ""  # who paused it, for a staff pause


def staff_pause_reason(paused_by, paused_at):
    return "Paused by %s at %s; resume it on the sync dashboard." % (
        paused_by,
        paused_at.astimezone(timezone.get_current_timezone()).strftime("%Y-%m-%d %H:%M %Z"),
    )


def breaker_reason(crm_label, failing_since, next_probe_at):
    return (
        "%s is failing since %s (server errors, timeouts or refused connections); next probe at %s. "
        "Contacts wait without using their attempts." % (crm_label, _when(failing_since), _when(next_probe_at))
    )


def _when(moment):
    if moment is None:
        return "?"
    return moment.astimezone(timezone.get_current_timezone()).strftime("%Y-%m-%d %H:%M:%S %Z")


# What deciding a pause reads of a CRMState.
PAUSE_FIELDS = ("crm", "paused_until", "pause_reason", "paused_by", "paused_at", "failing_since", "next_probe_at")


class CRMStateQuerySet(models.QuerySet):
    """The one home of "is this CRM paused?", and of pausing and resuming it."""

    def ensure(self, crm):
        """Create the CRM's row if it has none yet; the updates below need it."""
        self.bulk_create([self.model(crm=crm)], ignore_conflicts=True)

    def paused(self, crm, now=None, *, label=None):
        """A Pause while the CRM is paused for every worker, else None: by staff
        (until resumed; it wins, since it lasts longest), by the CRM (a rate limit,
        bad credentials), or by the circuit breaker until its next probe. `label`
        names the CRM in the breaker's reason (default: its registered label)."""
        return self.pause_and_breaker(crm, now, label=label)[0]

    def pause_and_breaker(self, crm, now=None, *, label=None):
        """(the Pause as paused() decides it, or None; whether the circuit breaker
        is open) in one read: what a worker asks before each claim."""
        now = now or timezone.now()
        state = self.filter(crm=crm).only(*PAUSE_FIELDS).first()
        if state is None:
            return None, False
        return state.current_pause(now, label=label), state.next_probe_at is not None

    def stopped(self, now=None):
        """The CRMs paused by staff or by the CRM, or whose circuit breaker is open
        (even while a worker probes it): what every admin page warns about."""
        now = now or timezone.now()
        return self.filter(Q(paused_until__gt=now) | Q(paused_at__isnull=False) | Q(next_probe_at__isnull=False))

    def pause(self, crm, until, reason):
        """The CRM's own pause (a rate limit, bad credentials): no worker claims
        until `until`, unless it is already paused for longer."""
        self.ensure(crm)
        self.filter(crm=crm).filter(Q(paused_until__isnull=True) | Q(paused_until__lt=until)).update(
            paused_until=until, pause_reason=clip(reason)
        )
        logger.warning("crm=%s paused until %s: %s", crm, until.isoformat(), reason, extra={PAUSE_LOG_MARK: True})

    def pause_by_staff(self, crm, by):
        """Staff pause: no worker claims anything for `crm` until resume. Work already
        claimed finishes. Pausing a paused CRM keeps who paused it first, and when.
        Returns whether this call paused it."""
        now = timezone.now()
        self.ensure(crm)
        paused = self.filter(crm=crm, paused_at__isnull=True).update(paused_at=now, paused_by=by, updated_at=now)
        if paused:
            logger.warning("crm=%s paused by %s", crm, by)
        return bool(paused)

    def resume(self, crm, by):
        """End a staff pause. A pause the CRM itself asked for (a rate limit, bad
        credentials) runs its course. Returns whether this call resumed it."""
        resumed = self.filter(crm=crm, paused_at__isnull=False).update(
            paused_at=None, paused_by="", updated_at=timezone.now()
        )
        if resumed:
            logger.warning("crm=%s resumed by %s", crm, by)
        return bool(resumed)


class CRMState(models.Model):
    """What every worker on every machine must know about one CRM: whether it is
    paused, by the CRM itself (a rate limit, bad credentials: until a time) or by
    staff (until resumed), and when it last ran. Its manager (CRMStateQuerySet) is the
    one place that decides whether a CRM is paused; the engine writes the rest."""

    crm = models.CharField(_("CRM"), max_length=32, unique=True, validators=[validate_crm_name])
    paused_until = models.DateTimeField(_("paused until"), null=True, blank=True)
    pause_reason = models.TextField(_("why it is paused"), blank=True)
    # A staff pause lasts until someone resumes it; paused_at is set while it does.
    paused_by = models.CharField(_("paused by"), max_length=150, blank=True)
    paused_at = models.DateTimeField(_("paused by staff at"), null=True, blank=True)
    last_run_at = models.DateTimeField(_("last run"), null=True, blank=True)
    last_success_at = models.DateTimeField(_("last run that synced a contact"), null=True, blank=True)
    # The next moment a request to this CRM may start, for every worker: see ratelimit.py.
    # No request before this time (a hold: the CRM said its quota is spent).
    next_request_at = models.DateTimeField(_("no request before"), null=True, blank=True)
    # The last request slots handed out (epoch seconds, at most the CRM's limit per
    # window): integrations.ratelimit paces by them.
    recent_request_slots = models.JSONField(_("recent request slots"), default=list, blank=True)
    # Totals since the row was made, for /metrics: every request any worker sent to
    # the CRM, and the answers of 429 among them. Counted in the database so that web
    # and workers in separate processes or machines report the same numbers.
    requests_sent = models.PositiveBigIntegerField(_("requests sent"), default=0)
    rate_limited_responses = models.PositiveBigIntegerField(_("answers of 429"), default=0)
    # Every batch push's duration since the row was made, in the fixed buckets of
    # integrations.push_histogram: each run of the engine adds its own.
    push_durations = models.JSONField(_("push durations"), default=dict, blank=True)
    # The circuit breaker (breaker.Breaker): failed batches in a row, and while it
    # is open, since when the CRM fails and when one worker may probe it next.
    failed_batches = models.PositiveIntegerField(_("failed batches in a row"), default=0)
    failing_since = models.DateTimeField(_("failing since"), null=True, blank=True)
    next_probe_at = models.DateTimeField(_("next probe at"), null=True, blank=True)
    probe_interval_seconds = models.FloatField(_("probe interval (s)"), default=0)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    objects = CRMStateQuerySet.as_manager()

    class Meta:
        verbose_name = _("CRM state")
        verbose_name_plural = _("CRM states")
        permissions = [("pause_crm", _("Can pause and resume a CRM's sync"))]

    def __str__(self):
        return verbose_crm_name(self.crm)

    # Each kind of pause, decided here only; CRMStateQuerySet.paused() combines them.

    def current_pause(self, now, *, label=None):
        """The Pause that stops the claims now, if any: staff, then the CRM's own, then
        the circuit breaker's."""
        return self.staff_pause() or self.crm_pause(now) or self.breaker_pause(now, label=label)

    def staff_pause(self):
        """Pause(None, why, who) while staff paused the CRM; it lasts until resumed."""
        if self.paused_at:
            return Pause(None, staff_pause_reason(self.paused_by, self.paused_at), self.paused_by)
        return None

    def crm_pause(self, now):
        """Pause(until, why) while the CRM's own pause (a rate limit, bad credentials) runs."""
        if self.paused_until and self.paused_until > now:
            return Pause(self.paused_until, self.pause_reason)
        return None

    def open_breaker(self, *, label=None):
        """Pause(next probe, why) while the circuit breaker is open, else None."""
        if self.next_probe_at:
            reason = breaker_reason(label or verbose_crm_name(self.crm), self.failing_since, self.next_probe_at)
            return Pause(self.next_probe_at, reason)
        return None

    def breaker_pause(self, now, *, label=None):
        """The open breaker's Pause until its next probe; once it is due, a worker may probe."""
        pause = self.open_breaker(label=label)
        return pause if pause and pause.until > now else None


class EnrichmentStatus(models.TextChoices):
    COMPLETE = "complete", _("Complete")
    PARTIAL = "partial", _("Partial")
    FAILED = "failed", _("Failed")


class Enrichment(models.Model):
    """One enrichment callback, kept so that a resent callback changes nothing."""

    enrichment_id = models.CharField(_("enrichment id"), max_length=100, unique=True)
    contact = models.ForeignKey(
        "contacts.Contact", on_delete=models.CASCADE, related_name="enrichments", verbose_name=_("contact")
    )
    status = models.CharField(_("status"), max_length=16, choices=EnrichmentStatus.choices)
    data = models.JSONField(_("enriched data"), default=dict, blank=True)
    metadata = models.JSONField(_("metadata"), default=dict, blank=True)
    updated_fields = models.JSONField(_("contact fields filled"), default=list, blank=True)
    received_at = models.DateTimeField(_("received"), auto_now_add=True)

    class Meta:
        verbose_name = _("enrichment")
        verbose_name_plural = _("enrichments")
        ordering = ["-received_at", "-id"]

    def __str__(self):
        return self.enrichment_id


class WebhookEvent(models.Model):
    """An inbound CRM event already taken: the same event again (a CRM retries
    until it sees a 2xx) changes nothing. Keyed by the CRM's own event id, or where
    a CRM sends none, by a digest of the event (see each CRM's webhook parser)."""

    crm = models.CharField(_("CRM"), max_length=32, validators=[validate_crm_name])
    event_id = models.CharField(_("event id"), max_length=200)
    kind = models.CharField(_("event"), max_length=32)
    received_at = models.DateTimeField(_("received at"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("CRM webhook event")
        verbose_name_plural = _("CRM webhook events")
        constraints = [models.UniqueConstraint(fields=["crm", "event_id"], name="webhookevent_unique_event")]

    def __str__(self):
        return "%s %s %s" % (verbose_crm_name(self.crm), self.kind, self.event_id)


class SourceKind(models.TextChoices):
    # The values of integrations.backends.base.SOURCE_KINDS.
    FIELD = "field", _("contact field")
    ATTRIBUTE = "attribute", _("attributes key")
    CONSTANT = "constant", _("constant")


class Transform(models.TextChoices):
    # The keys of integrations.backends.base.TRANSFORMS.
    NONE = "none", _("as it is")
    STRIP = "strip", _("without surrounding spaces")
    LOWER = "lower", _("lower case")
    UPPER = "upper", _("upper case")
    TITLE = "title", _("Title Case")
    DIGITS_ONLY = "digits_only", _("digits only")


class FieldMapping(models.Model):
    """What one CRM field receives, set by staff in the admin. A CRM with rows here
    is sent these fields instead of its default field map and <CRM>_FIELD_MAP
    (integrations.mappings loads them and hands them to the backend)."""

    crm = models.CharField(_("CRM"), max_length=32, validators=[validate_crm_name])
    target = models.CharField(_("CRM field"), max_length=100)
    source_kind = models.CharField(_("from"), max_length=16, choices=SourceKind.choices, default=SourceKind.FIELD)
    # A Contact field's name, an attributes key, or the constant text itself.
    source = models.CharField(_("source"), max_length=200)
    transform = models.CharField(_("transform"), max_length=16, choices=Transform.choices, default=Transform.NONE)
    position = models.PositiveSmallIntegerField(_("position"), default=0)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    updated_by = models.CharField(_("updated by"), max_length=150, blank=True)

    class Meta:
        verbose_name = _("field mapping")
        verbose_name_plural = _("field mappings")
        ordering = ["crm", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["crm", "target"], name="fieldmapping_unique_target")]

    def __str__(self):
        return "%s %s" % (verbose_crm_name(self.crm), self.target)


class SyncStatusCount(models.Model):
    """Part of the count of ContactSync rows per CRM, sync status, processing
    status and whether the contact is deleted locally (detached). Database
    triggers write it as rows change (integrations.rollups, migration 0008): a
    key's count is the sum of its rows, a compacted one plus the deltas written
    since (`delta`). Nothing in Python writes it but the rebuild."""

    crm = models.CharField(_("CRM"), max_length=32)
    sync_status = models.CharField(_("sync status"), max_length=16)
    processing_status = models.CharField(_("processing status"), max_length=16, blank=True)
    detached = models.BooleanField(_("contact deleted locally"))
    number = models.BigIntegerField(_("rows"))
    delta = models.BooleanField(_("not yet compacted"))

    class Meta:
        verbose_name = _("sync status count")
        verbose_name_plural = _("sync status counts")
        default_permissions = ()
        indexes = [
            # What the compaction looks for: the few rows written since the last one.
            models.Index(fields=["id"], condition=Q(delta=True), name="syncstatuscount_deltas"),
        ]

    def __str__(self):
        return "%s %s/%s: %d" % (self.crm, self.sync_status, self.processing_status, self.number)


class AttemptCount(models.Model):
    """Part of the count of SyncAttempt rows per CRM, outcome and quarter of an
    hour (UTC; every time zone's hours start on one), kept by database triggers
    like SyncStatusCount."""

    crm = models.CharField(_("CRM"), max_length=32)
    outcome = models.CharField(_("outcome"), max_length=16)
    period_start = models.DateTimeField(_("quarter hour from"))
    number = models.BigIntegerField(_("attempts"))
    delta = models.BooleanField(_("not yet compacted"))

    class Meta:
        verbose_name = _("attempt count")
        verbose_name_plural = _("attempt counts")
        default_permissions = ()
        indexes = [
            # The dashboard reads the last 24 hours; SQLite's triggers find a key's row.
            models.Index(fields=["period_start", "crm", "outcome"], name="attemptcount_period"),
            models.Index(fields=["id"], condition=Q(delta=True), name="attemptcount_deltas"),
        ]

    def __str__(self):
        return "%s %s at %s: %d" % (self.crm, self.outcome, self.period_start, self.number)


class DeletedAttemptCount(models.Model):
    """SyncAttempt rows deleted (pruned after their retention, or with their
    contact), per CRM and outcome, written in the transaction that deletes them:
    with AttemptCount, a total of attempts that never goes down (/metrics).
    Insert-only, so that deleting never waits on a shared row."""

    crm = models.CharField(_("CRM"), max_length=32)
    outcome = models.CharField(_("outcome"), max_length=16)
    number = models.BigIntegerField(_("attempts"))
    deleted_at = models.DateTimeField(_("deleted at"), default=timezone.now)

    class Meta:
        verbose_name = _("deleted attempt count")
        verbose_name_plural = _("deleted attempt counts")
        default_permissions = ()

    def __str__(self):
        return "%s %s deleted: %d" % (self.crm, self.outcome, self.number)


class ContactCount(models.Model):
    """Part of the count of Contact rows, kept by database triggers like
    SyncStatusCount."""

    number = models.BigIntegerField(_("contacts"))
    delta = models.BooleanField(_("not yet compacted"))

    class Meta:
        verbose_name = _("contact count")
        verbose_name_plural = _("contact counts")
        default_permissions = ()
        indexes = [models.Index(fields=["id"], condition=Q(delta=True), name="contactcount_deltas")]

    def __str__(self):
        return "%d contacts" % self.number


class AlertKind(models.TextChoices):
    """What staff are told about (integrations.alerts): each needs a person."""

    PAUSED = "paused", _("Paused for credentials or configuration")
    BREAKER = "breaker", _("Circuit breaker open")
    ERROR_RATE = "error_rate", _("Failed contacts above the alert rate")
    STALE_SCHEDULE = "stale_schedule", _("Sync schedule stopped")


class AlertIncident(models.Model):
    """One incident staff were alerted about, from the alert to its recovery notice.

    At most one is open per CRM and kind (the partial unique constraint): the
    worker or web process whose INSERT wins sends the alert, and the one whose
    UPDATE closes it sends the recovery, however many noticed (integrations.alerts).
    `summary` is the alert's own text: no contact data, no secret."""

    crm = models.CharField(_("CRM"), max_length=32, validators=[validate_crm_name])
    kind = models.CharField(_("kind"), max_length=32, choices=AlertKind.choices)
    opened_at = models.DateTimeField(_("opened at"), default=timezone.now)
    resolved_at = models.DateTimeField(_("resolved at"), null=True, blank=True)
    summary = models.TextField(_("summary"), blank=True)

    class Meta:
        verbose_name = _("alert incident")
        verbose_name_plural = _("alert incidents")
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["crm", "kind"], condition=Q(resolved_at__isnull=True), name="alertincident_one_open"
            )
        ]

    def __str__(self):
        return "%s: %s" % (verbose_crm_name(self.crm), self.get_kind_display())
