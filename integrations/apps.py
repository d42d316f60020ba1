from django.apps import AppConfig
from django.core import checks
from django.db.models.signals import post_migrate


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "CRM integrations"

    def ready(self):
        from .checks import check_crm_configuration, check_error_reporting

        checks.register(check_crm_configuration)
        checks.register(check_error_reporting)
        post_migrate.connect(_ensure_schedules_after_migrate, sender=self)


def _ensure_schedules_after_migrate(using="default", **kwargs):
    from .schedules import ensure_schedules

    ensure_schedules(using=using)
