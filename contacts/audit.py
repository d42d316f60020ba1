"""The audit trail: one entry in Django's admin log per staff action.

Every action staff take, in the admin or through the HTTP API (under the token's
user), is written here once, whatever the number of contacts: who, when, what,
how many contacts and which CRMs. The entries show under *Recent actions* on the
admin's index; an action on one contact is also tied to that contact, so it shows
on its *History* page.

An entry never names a contact by its email: the summary is the entry's title
(its object_repr), so that the log keeps nothing of a person erased later.
"""

from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType

from integrations.registry import crm_choices, get_backend_class, verbose_crm_name

from .models import Contact, ContactSync, Erasure

OBJECT_REPR_LENGTH = 200
THROUGH_THE_API = "Through the API."


def describe(verb, count, crms=(), noun="contact"):
    """ "Queued 1,000 contacts for Brevo, HubSpot": one line staff read in the log.
    Without a count (an action on a CRM itself): "Paused Brevo"."""
    names = ", ".join(verbose_crm_name(crm) for crm in crms)
    if count is None:
        return "%s %s" % (verb, names) if names else verb
    text = "%s %s %s%s" % (verb, "{:,}".format(count), noun, "" if count == 1 else "s")
    return text + (" for %s" % names if names else "")


def record(user, verb, *, count, crms=(), contact=None, model=Contact, obj=None, detail="", flag=CHANGE):
    """Write one log entry for an action by `user` on `count` contacts (or objects
    of `model`; None for an action on the CRMs themselves) and `crms`. `contact`
    (or `obj`), when the action was on exactly one, ties the entry to it for its
    History page. `flag` is Django's ADDITION, CHANGE or DELETION (a deleted
    object has no page to link to). Returns the entry, or None when there is no
    user to name (a command run from a shell)."""
    if user is None or not getattr(user, "pk", None):
        return None
    target = contact or obj
    summary = describe(verb, count, crms, noun=model._meta.verbose_name)
    message = summary + (". " + detail if detail else "")
    return LogEntry.objects.create(
        user_id=user.pk,
        content_type=ContentType.objects.get_for_model(type(target) if target else model),
        object_id=str(target.pk) if target else None,
        object_repr=summary[:OBJECT_REPR_LENGTH],
        action_flag=flag,
        change_message=message,
    )


# What each contacts.selection decision is called in the log.
DECISION_VERBS = {"select": "Queued", "unselect": "Unselected", "skip": "Skipped", "retry": "Retried"}


def record_decision(user, decision, *, contact=None, detail=""):
    """One entry for a contacts.selection.Decision: the contacts found and the CRMs
    for a select, skip or unselect; for a retry, the syncs queued again and their
    CRMs, and nothing when none was in Error (nothing was done)."""
    verb = DECISION_VERBS[decision.action]
    if decision.action != "retry":
        crms = [report.crm for report in decision.crms]
        return record(user, verb, count=decision.found, crms=crms, contact=contact, detail=detail)
    if not decision.changed:
        return None
    crms = [report.crm for report in decision.crms if report.changed]
    return record(user, verb, count=decision.changed, crms=crms, contact=contact, model=ContactSync, detail=detail)


def record_erasures(user, started, *, detail=""):
    """One entry for erasures started: how many, and the CRMs asked. It is tied to
    the Erasure, never to the contact: that is deleted, and its email with it."""
    crms = [name for name, _label in crm_choices() if get_backend_class(name).is_enabled()]
    obj = started[0] if len(started) == 1 else None
    return record(user, "Started", count=len(started), crms=crms, model=Erasure, obj=obj, detail=detail)


def forget_contacts(pks):
    """Blank the title of every log entry about these contacts (Django's own change
    entries carry the contact's email there), for erasure to call as it deletes
    them: who did what, and when, stays; the person's address does not."""
    content_type = ContentType.objects.get_for_model(Contact)
    entries = LogEntry.objects.filter(content_type=content_type, object_id__in=[str(pk) for pk in pks])
    return entries.update(object_repr="(erased contact)")
