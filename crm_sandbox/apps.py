from django.apps import AppConfig


class CrmSandboxConfig(AppConfig):
    """The CRM sandbox: always installed, so `manage.py crm_sandbox` exists in every
    image, but inert until CRMSYNC_SANDBOX_URL is set."""

    name = "crm_sandbox"
    verbose_name = "CRM sandbox"

    def ready(self):
        # The sandbox depends on integrations, never the reverse: it hands over
        # its settings here instead of production code importing them.
        from integrations.conf import register_sandbox

        from . import CRM_SETTINGS

        for crm, settings_for in CRM_SETTINGS.items():
            register_sandbox(crm, settings_for)
