from django.apps import AppConfig
from django.core import checks
from django.db import transaction
from django.db.models.signals import post_migrate, post_save


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "CRM integrations"

    def ready(self):
        from .checks import check_alert_settings, check_crm_configuration, check_error_reporting

        checks.register(check_crm_configuration)
        checks.register(check_error_reporting)
        checks.register(check_alert_settings)
        post_migrate.connect(_ensure_schedules_after_migrate, sender=self)
        post_migrate.connect(_ensure_rollups_after_migrate, sender=self)
        # Wired here, on the side that reacts, so that contacts never imports integrations.
        post_save.connect(
            _requeue_if_changed,
            sender=self.apps.get_model("contacts", "Contact"),
            dispatch_uid="integrations.requeue_changed_contact",
        )
        from contacts.models import contacts_deleting

        from .attempt_totals import note_contacts_deleting

        contacts_deleting.connect(note_contacts_deleting, dispatch_uid="integrations.note_deleted_attempts")


def _ensure_schedules_after_migrate(using="default", **kwargs):
    from .schedules import ensure_schedules

    ensure_schedules(using=using)


def _ensure_rollups_after_migrate(using="default", plan=None, **kwargs):
    from .rollups import after_migrate

    after_migrate(using=using, plan=plan)


def _requeue_if_changed(sender, instance, created, raw=False, using="default", **kwargs):
    # A new contact has no Complete rows; fixtures (raw) are loaded as they are.
    if created or raw:
        return
    from .resync import requeue_if_changed

    pk = instance.pk
    # After commit, so the check reads what was saved; robust, so that a CRM's
    # configuration error is logged rather than failing a save already committed.
    transaction.on_commit(lambda: requeue_if_changed([pk]), using=using, robust=True)
