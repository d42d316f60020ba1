"""Totals of sync attempts per CRM and outcome that never go down, for /metrics.

AttemptCount (kept by triggers) counts the SyncAttempt rows that exist; deleting
attempts (the retention prune, or a contact deleted with its history) lowers it,
and a Prometheus counter must not go down. Whoever deletes attempts therefore
writes what it deleted to DeletedAttemptCount in the same transaction, and a total
is the sum of both, read in one statement (one snapshot of the database).
"""

from collections import defaultdict

from django.db import transaction
from django.db.models import Count, Sum

from contacts.models import SyncAttempt

from .models import AttemptCount, DeletedAttemptCount


def delete_attempts(attempts):
    """Delete the SyncAttempt queryset `attempts`, keeping their count per CRM and
    outcome; returns the number deleted."""
    with transaction.atomic(using=attempts.db):
        note_deleted(attempts)
        return attempts.delete()[0]


def note_deleted(attempts):
    """Record the attempts about to be deleted; call it in the transaction that
    deletes them, or the totals read between the two would be too high."""
    rows = attempts.order_by().values("crm", "outcome").annotate(number=Count("*"))
    DeletedAttemptCount.objects.using(attempts.db).bulk_create(
        [DeletedAttemptCount(crm=row["crm"], outcome=row["outcome"], number=row["number"]) for row in rows]
    )


def note_contacts_deleting(sender, contacts, **kwargs):
    """contacts_deleting receiver: the contacts' attempts go with them (CASCADE)."""
    note_deleted(SyncAttempt.objects.using(contacts.db).filter(contact__in=contacts.values("pk")))


def attempt_totals(crms, using="default"):
    """{crm: {outcome: attempts ever recorded}} for the names in `crms`, in one query."""
    counted = AttemptCount.objects.using(using).filter(crm__in=crms).values_list("crm", "outcome").order_by()
    deleted = DeletedAttemptCount.objects.using(using).filter(crm__in=crms).values_list("crm", "outcome").order_by()
    totals = defaultdict(lambda: defaultdict(int))
    rows = counted.annotate(number=Sum("number")).union(deleted.annotate(number=Sum("number")), all=True)
    for crm, outcome, number in rows:
        totals[crm][outcome] += number
    return totals
