from django.apps import AppConfig
from django.core import checks


class ContactsConfig(AppConfig):
    name = "contacts"
    verbose_name = "Contacts"

    def ready(self):
        # Connects detach_removals to contacts_deleting.
        from . import selection  # noqa: F401
        from .checks import check_suppression_key

        checks.register(check_suppression_key)
