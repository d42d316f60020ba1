from django.db import models
from django.utils.translation import gettext_lazy as _

from .backends import validate_crm_name, verbose_crm_name


class CRMState(models.Model):
    """What every worker on every machine must know about one CRM: whether it is
    paused (a rate limit, bad credentials) and when it last ran. Only
    integrations.engine writes it."""

    crm = models.CharField(_("CRM"), max_length=32, unique=True, validators=[validate_crm_name])
    paused_until = models.DateTimeField(_("paused until"), null=True, blank=True)
    pause_reason = models.TextField(_("why it is paused"), blank=True)
    last_run_at = models.DateTimeField(_("last run"), null=True, blank=True)
    last_success_at = models.DateTimeField(_("last run that synced a contact"), null=True, blank=True)
    # The next moment a request to this CRM may start, for every worker: see ratelimit.py.
    next_request_at = models.DateTimeField(_("next request slot"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("CRM state")
        verbose_name_plural = _("CRM states")

    def __str__(self):
        return verbose_crm_name(self.crm)
