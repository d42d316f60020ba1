from django.db import models
from django.utils.translation import gettext_lazy as _

from .registry import validate_crm_name, verbose_crm_name


class CRMState(models.Model):
    """What every worker on every machine must know about one CRM: whether it is
    paused, by the CRM itself (a rate limit, bad credentials: until a time) or by
    staff (until resumed), and when it last ran. Only integrations.engine writes it."""

    crm = models.CharField(_("CRM"), max_length=32, unique=True, validators=[validate_crm_name])
    paused_until = models.DateTimeField(_("paused until"), null=True, blank=True)
    pause_reason = models.TextField(_("why it is paused"), blank=True)
    # A staff pause lasts until someone resumes it; paused_at is set while it does.
    paused_by = models.CharField(_("paused by"), max_length=150, blank=True)
    paused_at = models.DateTimeField(_("paused by staff at"), null=True, blank=True)
    last_run_at = models.DateTimeField(_("last run"), null=True, blank=True)
    last_success_at = models.DateTimeField(_("last run that synced a contact"), null=True, blank=True)
    # The next moment a request to this CRM may start, for every worker: see ratelimit.py.
    next_request_at = models.DateTimeField(_("next request slot"), null=True, blank=True)
    # The circuit breaker (engine.Breaker): failed batches in a row, and while it
    # is open, since when the CRM fails and when one worker may probe it next.
    failed_batches = models.PositiveIntegerField(_("failed batches in a row"), default=0)
    failing_since = models.DateTimeField(_("failing since"), null=True, blank=True)
    next_probe_at = models.DateTimeField(_("next probe at"), null=True, blank=True)
    probe_interval_seconds = models.FloatField(_("probe interval (s)"), default=0)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("CRM state")
        verbose_name_plural = _("CRM states")
        permissions = [("pause_crm", _("Can pause and resume a CRM's sync"))]

    def __str__(self):
        return verbose_crm_name(self.crm)


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
