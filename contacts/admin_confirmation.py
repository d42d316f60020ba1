"""What the confirmation page of a bulk CRM action (queue, skip, set back to New)
tells staff before they confirm: per CRM, how many of the chosen contacts are
already Complete, queued or being pushed right now."""

from django.db.models import Count

from .models import ContactSync, ProcessingStatus

# The states the page counts, in the order of its columns.
STANDINGS = (ProcessingStatus.COMPLETE, ProcessingStatus.QUEUED, ProcessingStatus.PROCESSING)


def crm_standing(contacts):
    """{(crm, processing status): number of `contacts`} for STANDINGS, in one GROUP
    BY query however many contacts were chosen (select across included)."""
    rows = (
        ContactSync.objects.filter(contact__in=contacts.order_by().values("pk"), processing_status__in=STANDINGS)
        .order_by()
        .values_list("crm", "processing_status")
        .annotate(number=Count("pk"))
    )
    return {(crm, status): number for crm, status, number in rows}


def crm_rows(form, contacts):
    """One row per CRM checkbox of `form` (a CRMChoiceForm): the checkbox and its
    counts, for the page's table."""
    standing = crm_standing(contacts)
    return [
        {"choice": choice, "counts": [standing.get((choice.data["value"], status), 0) for status in STANDINGS]}
        for choice in form["crms"]
    ]
