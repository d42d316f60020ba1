from django.apps import AppConfig
from django.db import transaction
from django.db.models.signals import post_save


class ContactsConfig(AppConfig):
    name = "contacts"
    verbose_name = "Contacts"

    def ready(self):
        post_save.connect(
            _requeue_if_changed, sender=self.get_model("Contact"), dispatch_uid="contacts.requeue"
        )


def _requeue_if_changed(sender, instance, created, raw=False, using="default", **kwargs):
    # A new contact has no Complete rows; fixtures (raw) are loaded as they are.
    if created or raw:
        return
    from integrations.resync import requeue_if_changed

    pk = instance.pk
    # After commit, so the check reads what was saved; robust, so that a CRM's
    # configuration error is logged rather than failing a save already committed.
    transaction.on_commit(lambda: requeue_if_changed([pk]), using=using, robust=True)
