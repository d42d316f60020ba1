"""Change-driven re-sync: queue a Complete contact again when the payload its CRM
would get now differs from the one it accepted (ContactSync.synced_hash).

requeue_if_changed() serves the post_save signal; requeue_drifted() is the periodic
sweep that also catches changes made without signals (QuerySet.update, raw SQL,
another program).

The sweep's cost grows with what changed, not with the table. Per CRM it keeps a
watermark in the database (contacts.DriftSweep) and compares only the Complete rows
whose contact changed since the previous sweep began (less DRIFT_OVERLAP). That
catches every change to a contact row, however it was written: Contact.updated_at
moves on every UPDATE, since a database trigger sets it when the statement did not
(QuerySet.update, raw SQL; contacts migration 0014).

What a watermark cannot see, and how it is still caught:
- a change to what builds the payloads rather than to the contact (a staff field
  mapping, <CRM>_FIELD_MAP, lists, defaults): the sweep keeps a fingerprint of those
  (payload_fingerprint) and compares every Complete row when it differs; saving a
  mapping in the admin queues the changed contacts at once anyway;
- a change that sets updated_at to an older value itself, or is written with the
  trigger off (session_replication_role = replica, a restore), or whose transaction
  commits more than DRIFT_OVERLAP after it wrote: requeue_drifted(full=True)
  compares every Complete row, as the first sweep of each CRM does;
- a new version of crmsync that builds payloads differently in a way the
  fingerprint's probe contact does not show: the same full sweep.
"""

import logging
from contextlib import contextmanager
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from contacts.models import Contact, ContactSync, DriftSweep
from contacts.selection import requeue_changed

from .conf import get_crm_setting
from .engine import payload_hash
from .exceptions import InvalidContact
from .mappings import use_mapping
from .registry import enabled_backend_classes, get_enabled_backend_class

logger = logging.getLogger(__name__)

DRIFT_BATCH_SIZE = 500
# A sweep reads again the contacts changed this long before the previous one began:
# a change whose transaction committed up to this long after it wrote updated_at
# (or written on a machine whose clock is this much behind) is still found.
# Reading a contact twice costs a hash, never a second queueing.
DRIFT_OVERLAP = timedelta(hours=1)
# What the probe contact of payload_fingerprint holds: every field set, so that a
# setting that shapes a field (lists, a default country code) shows in its payload.
FINGERPRINT_PROBE = {
    "email": "drift-probe@example.com",
    "first_name": "Probe",
    "last_name": "Contact",
    "phone": "0612345678",
    "company": "Probe Ltd",
    "website": "https://example.com",
    "source_url": "https://example.com/form",
}


def crms_syncing_on_change():
    """Names of the enabled CRMs whose <CRM>_SYNC_ON_CHANGE is on (the default)."""
    return [
        cls.name for cls in enabled_backend_classes() if get_crm_setting(cls.name, "SYNC_ON_CHANGE", True, cast=bool)
    ]


def requeue_if_changed(contacts):
    """Queue again the contacts' Complete rows whose payload changed, for every CRM
    syncing on change, and mark the rows being pushed right now to be queued again
    when their batch records; `contacts` are Contact instances or pks. Returns the count."""
    crms = crms_syncing_on_change()
    if not crms:
        return 0
    rows = list(_complete_or_in_flight_rows().filter(contact__in=contacts, crm__in=crms))
    changed = {}
    for crm in crms:
        crm_rows = [row for row in rows if row.crm == crm]
        if crm_rows:
            with _backend(crm) as backend:
                changed.update(_changed(backend, crm_rows))
    return requeue_changed(changed)


def requeue_drifted(crm=None, batch_size=DRIFT_BATCH_SIZE, *, full=False):
    """Queue again the Complete rows of `crm` (default: every CRM syncing on change)
    whose payload changed, reading only the contacts changed since the CRM's last
    sweep (every Complete row on its first sweep, when what builds its payloads
    changed, or with `full`); returns {crm: count}."""
    crms = crms_syncing_on_change()
    if crm is not None:
        crms = [name for name in crms if name == crm]
    return {name: _requeue_drifted_crm(name, batch_size, full) for name in crms}


def _requeue_drifted_crm(crm, batch_size, full):
    started = timezone.now()
    with _backend(crm) as backend:
        fingerprint = payload_fingerprint(backend)
        since = None if full else _changed_since(crm, fingerprint)
        if since is None:
            requeued = requeue_changed_payloads(backend, batch_size)
        else:
            requeued = _requeue_changed_contacts(backend, since, batch_size)
    # Only once the sweep went through: one that failed is done again in full.
    DriftSweep.objects.bulk_create(
        [DriftSweep(crm=crm, changed_since=started - DRIFT_OVERLAP, payload_fingerprint=fingerprint, swept_at=started)],
        update_conflicts=True,
        unique_fields=["crm"],
        update_fields=["changed_since", "payload_fingerprint", "swept_at"],
    )
    return requeued


def _changed_since(crm, fingerprint):
    """Where the CRM's sweep reads from, or None when it must read every row."""
    sweep = DriftSweep.objects.filter(crm=crm).first()
    if sweep is None or sweep.payload_fingerprint != fingerprint:
        return None
    return sweep.changed_since


def payload_fingerprint(backend):
    """A hash of what, besides the contact, shapes the payloads `backend` builds:
    its field map (staff mapping or environment) and the payload of a fixed probe
    contact (lists, defaults, constants)."""
    fields = backend.mapped_fields() if hasattr(backend, "mapped_fields") else None
    probe = _current_hash(backend, Contact(**FINGERPRINT_PROBE))
    return payload_hash({"fields": repr(fields), "probe": probe})


def _requeue_changed_contacts(backend, since, batch_size):
    """Queue again the Complete rows whose contact changed at or after `since` and
    whose payload changed; in batches in the order of the contact_changed index
    (updated_at, id), so each batch is one read of that index and at most one write."""
    requeued, after = 0, None
    rows = _complete_rows().for_crm(backend.name).filter(contact__updated_at__gte=since)
    while True:
        batch = rows
        if after is not None:
            batch = rows.filter(contact__updated_at__gte=after[0]).exclude(
                Q(contact__updated_at=after[0]) & Q(contact_id__lte=after[1])
            )
        found = list(batch.order_by("contact__updated_at", "contact_id")[:batch_size])
        if not found:
            break
        requeued += requeue_changed(_changed(backend, found))
        after = (found[-1].contact.updated_at, found[-1].contact_id)
        if len(found) < batch_size:
            break
    return requeued


def requeue_changed_payloads(backend, batch_size=DRIFT_BATCH_SIZE):
    """Queue again the Complete rows of the backend's CRM whose payload, as
    `backend` builds it now, differs from the one synced; returns the count.
    Reads every Complete row of the CRM."""
    # Keyset pagination: each batch is one read and at most one write, and unlike
    # OFFSET, rows leaving the Complete set as they are queued do not shift the pages.
    requeued, last_pk = 0, 0
    while True:
        batch = _complete_rows().for_crm(backend.name).filter(pk__gt=last_pk).order_by("pk")
        rows = list(batch[:batch_size])
        if not rows:
            break
        requeued += requeue_changed(_changed(backend, rows))
        last_pk = rows[-1].pk
        if len(rows) < batch_size:
            break
    return requeued


def _complete_rows():
    return ContactSync.objects.complete().select_related("contact")


def _complete_or_in_flight_rows():
    return ContactSync.objects.complete_or_in_flight().select_related("contact")


def _changed(backend, rows):
    """{pk: current payload hash} of the rows whose current payload hashes
    differently from the one last synced."""
    current = {row.pk: _current_hash(backend, row.contact) for row in rows}
    changed = {row.pk: current[row.pk] for row in rows if current[row.pk] != row.synced_hash}
    if changed and not _reproducible(backend, rows, current, changed):
        return {}
    return changed


def _current_hash(backend, contact):
    try:
        return payload_hash(backend.build_payload(contact))
    except InvalidContact:
        # Counts as changed: the engine will record why, where staff see it.
        return None


def _reproducible(backend, rows, current, changed):
    """Whether building a changed row's payload again gives the same hash. A payload
    that differs every time (one that carries the time it was built) would look
    changed on every check and queue its contacts for ever."""
    probe = next((row for row in rows if row.pk in changed and current[row.pk]), None)
    if probe is None or _current_hash(backend, probe.contact) == current[probe.pk]:
        return True
    logger.warning(
        "crm=%s builds a different payload each time, so changes cannot be detected; set %s_SYNC_ON_CHANGE=false",
        backend.name,
        backend.name.upper(),
    )
    return False


@contextmanager
def _backend(crm):
    """One backend instance for a whole call, closed at the end (it holds a session)."""
    backend = use_mapping(get_enabled_backend_class(crm)())
    try:
        yield backend
    finally:
        backend.close()
