"""Narrowing contacts by their per-CRM state: one set of rules for the admin's
list filters and the HTTP API's query parameters.

A contact has one ContactSync row per CRM, so "Brevo" and "Error" chosen together
must mean "in Error for Brevo", not "has a Brevo row and some row in Error".
The status filters therefore take the chosen CRM and test it in one EXISTS.
"""

from functools import reduce
from operator import or_

from django.db.models import Exists, OuterRef, Q

from .models import ContactSync, SyncStatus

# The values of the "opted out" filter.
OPTED_OUT, NOT_OPTED_OUT = "yes", "no"

# The fields a search looks in, as the admin's search box does.
SEARCH_FIELDS = ("email", "first_name", "last_name", "company")


def _syncs(crm):
    syncs = ContactSync.objects.filter(contact=OuterRef("pk"))
    return syncs.filter(crm=crm) if crm else syncs


def decided_for(contacts, crm):
    """Contacts staff have decided something about for `crm` (they have its row)."""
    return contacts.filter(Exists(_syncs(crm)))


def with_sync_status(contacts, status, crm=None):
    """Contacts whose row (for `crm`, or for any CRM) has `status`; New includes
    contacts without a row, since nothing was decided for them."""
    if status == SyncStatus.NEW:
        return contacts.exclude(Exists(_syncs(crm).exclude(sync_status=SyncStatus.NEW)))
    return contacts.filter(Exists(_syncs(crm).filter(sync_status=status)))


def with_processing_status(contacts, status, crm=None):
    return contacts.filter(Exists(_syncs(crm).filter(processing_status=status)))


def with_sync_error(contacts, error, crm=None):
    """Contacts whose row (for `crm`) carries exactly this error (the dashboard links here)."""
    return contacts.filter(Exists(_syncs(crm).filter(last_error=error)))


def with_crm_event(contacts, event, crm=None):
    """Contacts whose row (for `crm`, or for any CRM) last had this CRMEvent (its webhooks)."""
    return contacts.filter(Exists(_syncs(crm).filter(crm_event=event)))


def with_opted_out(contacts, answer, crm=None):
    """OPTED_OUT: contacts that opted out (unsubscribed, bounced hard, complained) in
    `crm`, or in any CRM; NOT_OPTED_OUT: the others, contacts without a row included."""
    opted_out = Exists(_syncs(crm).filter(opted_out_at__isnull=False))
    return contacts.filter(opted_out) if answer == OPTED_OUT else contacts.exclude(opted_out)


def matching_search(contacts, text):
    """Contacts with every word of `text` in one of SEARCH_FIELDS, as the admin searches."""
    for word in text.split():
        contacts = contacts.filter(reduce(or_, (Q(**{"%s__icontains" % f: word}) for f in SEARCH_FIELDS)))
    return contacts


def filter_contacts(
    contacts,
    *,
    crm=None,
    sync_status=None,
    processing_status=None,
    sync_error=None,
    crm_event=None,
    opted_out=None,
    search=None,
):
    """All the filters at once, each given or None, with the admin list's meaning:
    a CRM alone narrows to contacts decided for it; with a status or a CRM event,
    it is tested for that CRM."""
    if crm and not (sync_status or processing_status or sync_error or crm_event or opted_out):
        contacts = decided_for(contacts, crm)
    if sync_status:
        contacts = with_sync_status(contacts, sync_status, crm)
    if processing_status:
        contacts = with_processing_status(contacts, processing_status, crm)
    if sync_error:
        contacts = with_sync_error(contacts, sync_error, crm)
    if crm_event:
        contacts = with_crm_event(contacts, crm_event, crm)
    if opted_out:
        contacts = with_opted_out(contacts, opted_out, crm)
    if search:
        contacts = matching_search(contacts, search)
    return contacts
