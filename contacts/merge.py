"""Contacts whose emails are one mailbox under the canonical rule (contacts.emails),
and merging them into one.

Emails stored before the rule (NFD, punycode domains) can be two or three contacts
for one mailbox. find_duplicates() reports them, and the contacts stored in a
non-canonical form that collide with nothing; merge_group() merges one group in one
transaction, and rewrite_emails() gives the others their canonical form.

A merge keeps everything: the survivor is the oldest contact of the group (its id
has had longest to spread to CRMs and workflows; ties go to the lowest id). An empty
field of the survivor takes the others' value; where both hold different values the
survivor's stays and the other is kept in the survivor's attributes under
MERGED_KEY, a list with one entry per merged contact:

    {"id", "email" (as it was stored), "created_at", "merged_at",
     "fields": {field: value}, "attributes": {key: value},
     "enrichment": {key: value}, "syncs": [dropped ContactSync state]}

(the last four only when not empty). Attributes and enrichment are united the same
way. Per CRM one ContactSync row is kept: the one holding the CRM's id, the
survivor's first; the state of every dropped row is kept in "syncs". Every other
row pointing at a merged contact (SyncAttempt, integrations.Enrichment, ...) moves
to the survivor.
"""

import unicodedata
from dataclasses import dataclass, field

from django.db import IntegrityError, router, transaction
from django.db.models import F, Func, IntegerField, Q, Value
from django.db.models.functions import Length, StrIndex
from django.utils import timezone

from integrations.registry import crm_names, verbose_crm_name

from . import selection
from .emails import ACE_PREFIX, canonical_email
from .models import Contact, ContactSync, ProcessingStatus, SyncStatus

MERGED_KEY = "merged_contacts"
MERGED_FIELDS = ("first_name", "last_name", "phone", "company", "website", "source_url")
JSON_FIELDS = ("attributes", "enrichment")
# A CRM is pushed the merged contact when staff had chosen it for any of them.
REQUEUED_STATUSES = (SyncStatus.SELECTED, SyncStatus.COMPLETE)
# What is kept of a dropped ContactSync row.
SYNC_STATE_FIELDS = ("sync_status", "processing_status", "external_id", "synced_at", "attempts", "last_error")
CHUNK_SIZE = 500


class MergeRefused(Exception):
    """This group cannot be merged as it stands; the message says why and what to do."""


class ByteLength(Func):
    """The length of a text in bytes (UTF-8): more than its length in characters
    exactly when it holds a character outside ASCII."""

    function = "OCTET_LENGTH"
    output_field = IntegerField()

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, template="LENGTH(CAST(%(expressions)s AS BLOB))", **extra_context)


# Finding


@dataclass
class Plan:
    """What find_duplicates() found: groups of contacts that are one mailbox, and
    contacts stored in a non-canonical form that collide with nothing."""

    groups: list = field(default_factory=list)
    rewrites: list = field(default_factory=list)


@dataclass
class Group:
    """Contacts that are one mailbox, oldest first: the first survives."""

    email: str
    contacts: list
    syncs: list = field(default_factory=list)

    @property
    def survivor(self):
        return self.contacts[0]

    @property
    def merged(self):
        return self.contacts[1:]


def find_duplicates(using=None):
    """A Plan of the whole table, in a few set-based queries whatever its size: only
    emails outside ASCII or holding a punycode label can be non-canonical."""
    using = using or router.db_for_read(Contact)
    stale = {pk: canonical for pk, canonical in _candidates(using) if canonical is not None}
    same_mailbox = _stored_canonical(set(stale.values()), using)
    by_email = {}
    for contact in _load(set(stale) | same_mailbox, using):
        by_email.setdefault(canonical_email(contact.email), []).append(contact)
    plan = Plan()
    for email, contacts in sorted(by_email.items()):
        if len(contacts) == 1:
            plan.rewrites.append(contacts[0])
        else:
            plan.groups.append(Group(email, contacts))
    _attach_syncs(plan.groups, using)
    return plan


def _candidates(using):
    """(pk, canonical email or None when already canonical) of every contact whose
    email may be non-canonical."""
    rows = (
        Contact.objects.using(using)
        .annotate(
            email_bytes=ByteLength("email"), email_chars=Length("email"), ace_at=StrIndex("email", Value(ACE_PREFIX))
        )
        .filter(Q(email_bytes__gt=F("email_chars")) | Q(ace_at__gt=0))
        .values_list("pk", "email")
    )
    for pk, email in rows.iterator(chunk_size=2000):
        canonical = canonical_email(email)
        yield pk, (canonical if canonical != email else None)


def _stored_canonical(emails, using):
    """The pks of contacts stored with one of these (canonical) emails."""
    found = set()
    emails = sorted(emails)
    for start in range(0, len(emails), CHUNK_SIZE):
        chunk = emails[start : start + CHUNK_SIZE]
        found.update(Contact.objects.using(using).filter(email__in=chunk).values_list("pk", flat=True))
    return found


def _load(pks, using):
    pks = sorted(pks)
    contacts = []
    for start in range(0, len(pks), CHUNK_SIZE):
        contacts += Contact.objects.using(using).filter(pk__in=pks[start : start + CHUNK_SIZE])
    return sorted(contacts, key=_age)


def _attach_syncs(groups, using):
    members = {contact.pk: group for group in groups for contact in group.contacts}
    pks = sorted(members)
    for start in range(0, len(pks), CHUNK_SIZE):
        for sync in (
            ContactSync.objects.using(using)
            .filter(contact_id__in=pks[start : start + CHUNK_SIZE])
            .order_by("crm", "pk")
        ):
            members[sync.contact_id].syncs.append(sync)


def _age(contact):
    return (contact.created_at, contact.pk)


# Deciding


@dataclass
class MergeDecision:
    """What merging a group does; the same for the report and for the merge."""

    group: Group
    values: dict = field(default_factory=dict)
    entries: dict = field(default_factory=dict)
    kept_syncs: dict = field(default_factory=dict)
    dropped_syncs: list = field(default_factory=list)
    double_records: dict = field(default_factory=dict)
    requeue: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def in_flight(self):
        return [s for s in self.group.syncs if s.processing_status == ProcessingStatus.PROCESSING]


def decide(group, now=None):
    """The MergeDecision for a group; raises MergeRefused when it cannot be merged."""
    now = now or timezone.now()
    decision = MergeDecision(group)
    survivor = group.survivor
    decision.entries = {c.pk: _entry(c, now) for c in group.merged}
    _merge_fields(decision)
    for name in JSON_FIELDS:
        _merge_json(decision, name)
    _merge_syncs(decision)
    decision.values["email"] = group.email
    decision.values["attributes"][MERGED_KEY] = _merged_list(group) + [_compact(e) for e in decision.entries.values()]
    if survivor.email != group.email:
        decision.notes.append("email: %s becomes %s" % (spelling(survivor.email), group.email))
    return decision


def _entry(contact, now):
    return {
        "id": contact.pk,
        "email": contact.email,
        "created_at": contact.created_at.isoformat(),
        "merged_at": now.isoformat(),
        "fields": {},
        "attributes": {},
        "enrichment": {},
        "syncs": [],
    }


def _compact(entry):
    return {key: value for key, value in entry.items() if value not in ({}, [])}


def _merge_fields(decision):
    survivor = decision.group.survivor
    for name in MERGED_FIELDS:
        value = getattr(survivor, name)
        for other in decision.group.merged:
            theirs = getattr(other, name)
            value = _merge_value(decision, other, "fields", name, name, value, theirs)
        decision.values[name] = value


def _merge_json(decision, name):
    merged = dict(getattr(decision.group.survivor, name) or {})
    for other in decision.group.merged:
        for key, theirs in (getattr(other, name) or {}).items():
            if name == "attributes" and key == MERGED_KEY:
                continue  # an earlier merge's record: carried over whole
            label = "%s[%r]" % (name, key)
            merged[key] = _merge_value(decision, other, name, key, label, merged.get(key), theirs)
    decision.values[name] = merged


def _merge_value(decision, other, section, key, label, ours, theirs):
    """The survivor's value after merging `other`'s: empty takes theirs; two
    different values keep ours and record theirs in other's entry."""
    if _empty(theirs) or theirs == ours:
        return ours
    if _empty(ours):
        decision.notes.append(
            "%s: takes %r from #%d (empty on #%d)" % (label, theirs, other.pk, decision.group.survivor.pk)
        )
        return theirs
    decision.entries[other.pk][section][key] = theirs
    decision.notes.append(
        "%s: keeps %r; #%d's %r is kept in attributes[%r]" % (label, ours, other.pk, theirs, MERGED_KEY)
    )
    return ours


def _empty(value):
    return value in ("", None)


def _merged_list(group):
    """The MERGED_KEY lists of earlier merges, survivor's first."""
    merged = []
    for contact in group.contacts:
        earlier = (contact.attributes or {}).get(MERGED_KEY, [])
        if not isinstance(earlier, list):
            raise MergeRefused(
                "attributes[%r] of #%d is not the list crmsync keeps there; rename that attribute, "
                "then run this again." % (MERGED_KEY, contact.pk)
            )
        merged += earlier
    return merged


def _merge_syncs(decision):
    order = {contact.pk: index for index, contact in enumerate(decision.group.contacts)}
    by_crm = {}
    for sync in decision.group.syncs:
        by_crm.setdefault(sync.crm, []).append(sync)
    for crm, syncs in sorted(by_crm.items()):
        # The row holding the CRM's id addresses its record; then the survivor's.
        syncs.sort(key=lambda s: (not s.external_id, order[s.contact_id]))
        kept, dropped = syncs[0], syncs[1:]
        decision.kept_syncs[crm] = kept
        for sync in dropped:
            _drop_sync(decision, kept, sync)
        ids = sorted({s.external_id for s in syncs if s.external_id})
        if len(ids) > 1:
            decision.double_records[crm] = ids
        if crm in crm_names() and any(s.sync_status in REQUEUED_STATUSES for s in syncs):
            decision.requeue.append(crm)
        _note_kept_sync(decision, crm, kept)


def _drop_sync(decision, kept, sync):
    """Record a dropped row's state in a merged contact's entry: its own, or for a
    survivor's row, the entry of the contact whose row replaced it."""
    owner = sync.contact_id if sync.contact_id in decision.entries else kept.contact_id
    state = {"crm": sync.crm, "contact_id": sync.contact_id}
    for name in SYNC_STATE_FIELDS:
        value = getattr(sync, name)
        state[name] = value.isoformat() if hasattr(value, "isoformat") else value
    decision.entries[owner]["syncs"].append(state)
    decision.dropped_syncs.append(sync)
    decision.notes.append(
        "%s: #%d's row (%s) is dropped; its state is kept in attributes[%r]"
        % (verbose_crm_name(sync.crm), sync.contact_id, sync_summary(sync), MERGED_KEY)
    )


def _note_kept_sync(decision, crm, kept):
    if kept.contact_id != decision.group.survivor.pk:
        decision.notes.append("%s: moves #%d's row (%s)" % (verbose_crm_name(crm), kept.contact_id, sync_summary(kept)))
    ids = decision.double_records.get(crm)
    if ids:
        decision.notes.append(
            "%s holds %d records for this person (ids %s): merge them in %s; crmsync keeps %s."
            % (verbose_crm_name(crm), len(ids), ", ".join(ids), verbose_crm_name(crm), kept.external_id)
        )


def sync_summary(sync):
    status = sync.get_sync_status_display().lower()
    return "%s, id %s" % (status, sync.external_id) if sync.external_id else status


def spelling(email):
    """An email as a person can tell it from its twins: escaped where it is not NFC."""
    if unicodedata.is_normalized("NFC", email):
        return email
    return email.encode("ascii", "backslashreplace").decode("ascii") + " (decomposed)"


# Merging


@dataclass
class GroupResult:
    email: str
    merged: bool
    survivor_id: int = None
    removed: list = field(default_factory=list)
    requeued: list = field(default_factory=list)
    reason: str = ""


def merge_group(group, using=None):
    """Merge one group in one transaction, with its rows locked; a group with a row
    being pushed right now is left for a later run. Returns a GroupResult."""
    using = using or router.db_for_write(Contact)
    try:
        with transaction.atomic(using=using):
            fresh = _locked(group, using)
            busy = [s for s in fresh.syncs if s.processing_status == ProcessingStatus.PROCESSING]
            if busy:
                return GroupResult(group.email, False, reason=_busy_reason(busy))
            if len(fresh.contacts) < 2:
                return GroupResult(group.email, False, reason="no longer a duplicate; run this again")
            decision = decide(fresh)
            _apply(decision, using)
    except MergeRefused as exc:
        return GroupResult(group.email, False, reason=str(exc))
    return GroupResult(group.email, True, fresh.survivor.pk, [c.pk for c in fresh.merged], decision.requeue)


def _locked(group, using):
    """The group as it is now, its contacts and sync rows locked against workers
    (whose claim skips locked rows) and staff."""
    members = Q(pk__in=[c.pk for c in group.contacts]) | Q(email=group.email)
    contacts = sorted(Contact.objects.using(using).select_for_update().filter(members), key=_age)
    contacts = [c for c in contacts if canonical_email(c.email) == group.email]
    syncs = list(
        ContactSync.objects.using(using)
        .select_for_update()
        .filter(contact__in=[c.pk for c in contacts])
        .order_by("crm", "pk")
    )
    return Group(group.email, contacts, syncs)


def _busy_reason(busy):
    crms = sorted({verbose_crm_name(s.crm) for s in busy})
    return "being pushed to %s right now; not merged, run this again later" % ", ".join(crms)


def _apply(decision, using):
    group = decision.group
    survivor, merged_ids = group.survivor, [c.pk for c in group.merged]
    _move_related_rows(merged_ids, survivor.pk, using)
    ContactSync.objects.using(using).filter(pk__in=[s.pk for s in decision.dropped_syncs]).delete()
    moved = [s.pk for s in decision.kept_syncs.values() if s.contact_id != survivor.pk]
    ContactSync.objects.using(using).filter(pk__in=moved).update(contact_id=survivor.pk)
    # The merged contacts go first: one of them may hold the canonical email.
    Contact.objects.using(using).filter(pk__in=merged_ids).delete()
    for name, value in decision.values.items():
        setattr(survivor, name, value)
    survivor.save(using=using)
    if decision.requeue:
        selection.select(Contact.objects.using(using).filter(pk=survivor.pk), decision.requeue)


def _move_related_rows(from_ids, to_id, using):
    """Point every row that refers to a merged contact (other than its ContactSync
    rows, merged above) at the survivor."""
    for relation in Contact._meta.related_objects:
        model = relation.related_model
        if model is ContactSync:
            continue
        if relation.one_to_one or relation.many_to_many or _unique_per_contact(model, relation.field):
            raise MergeRefused(
                "%s rows are one per contact and merge_duplicate_contacts does not know how to merge "
                "them; merge these contacts by hand." % model._meta.verbose_name
            )
        column = relation.field.attname
        model._base_manager.using(using).filter(**{"%s__in" % column: from_ids}).update(**{column: to_id})


def _unique_per_contact(model, fk):
    together = [set(fields) for fields in model._meta.unique_together]
    together += [set(c.fields) for c in model._meta.constraints if getattr(c, "fields", None)]
    return fk.unique or any(fk.name in fields for fields in together)


def rewrite_emails(contacts, using=None):
    """Give contacts that collide with nothing their canonical email, a chunk per
    statement. Returns (rewritten pks, pks that now collide and were left)."""
    using = using or router.db_for_write(Contact)
    done, left = [], []
    now = timezone.now()
    for start in range(0, len(contacts), CHUNK_SIZE):
        chunk = contacts[start : start + CHUNK_SIZE]
        for contact in chunk:
            contact.email, contact.updated_at = canonical_email(contact.email), now
        try:
            with transaction.atomic(using=using):
                Contact.objects.using(using).bulk_update(chunk, ["email", "updated_at"])
        except IntegrityError:
            # Another contact took a canonical email since the report.
            left += [c.pk for c in chunk]
            continue
        done += [c.pk for c in chunk]
    return done, left
