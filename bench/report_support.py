"""What bench/report.py's worker processes import by dotted path: the no-HTTP
backend and the naive one-task-per-contact django-q2 task."""

from django.utils import timezone

from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus
from integrations.backends.base import CRMBackend, Outcome, OutcomeKind, SyncItem
from integrations.exceptions import SyncError
from integrations.registry import get_enabled_backend_class


class NoopBackend(CRMBackend):
    """Accepts every contact at once: what is left is the engine and the database.
    Enabled by NOOP_ENABLED=1 (bench/report.py sets it for its workers only)."""

    name = "noop"
    verbose_name = "No-op (bench)"
    required_settings = ("ENABLED",)
    default_batch_size = 100

    def build_payload(self, contact):
        return {"email": contact.email}

    def push(self, items):
        return [Outcome.accepted(item, external_id=str(item.key)) for item in items]


def sync_one_contact(contact_id, crm):
    """One django-q2 task per contact, the way a first implementation queues them
    from an admin action: load it, push it alone through the CRM's backend (so
    within the CRM's pace), write the result."""
    contact = Contact.objects.get(pk=contact_id)
    backend = get_enabled_backend_class(crm)()
    item = SyncItem(key=contact.pk, contact=contact, payload=None)
    try:
        item = SyncItem(key=contact.pk, contact=contact, payload=backend.build_payload(contact))
        outcome = backend.push([item])[0]
    except SyncError as exc:
        outcome = Outcome.permanent(item, str(exc))
    finally:
        backend.close()
    accepted = outcome.kind is OutcomeKind.ACCEPTED
    status = ProcessingStatus.COMPLETE if accepted else ProcessingStatus.ERROR
    ContactSync.objects.filter(contact_id=contact_id, crm=crm).update(
        sync_status=SyncStatus.COMPLETE if accepted else SyncStatus.ERROR,
        processing_status=status,
        external_id=outcome.external_id,
        last_error=outcome.message,
        synced_at=timezone.now(),
    )
    return outcome.kind.value
