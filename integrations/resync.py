"""Change-driven re-sync: queue a Complete contact again when the payload its CRM
would get now differs from the one it accepted (ContactSync.synced_hash).

requeue_if_changed() serves the post_save signal; requeue_drifted() is the periodic
sweep that also catches changes made without signals (QuerySet.update, raw SQL).
"""

import logging
from contextlib import contextmanager

from contacts.models import ContactSync
from contacts.selection import requeue_changed

from .conf import get_crm_setting
from .engine import payload_hash
from .exceptions import InvalidContact
from .mappings import use_mapping
from .registry import enabled_backend_classes, get_enabled_backend_class

logger = logging.getLogger(__name__)

DRIFT_BATCH_SIZE = 500


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


def requeue_drifted(crm=None, batch_size=DRIFT_BATCH_SIZE):
    """Sweep the Complete rows of `crm` (default: every CRM syncing on change) in
    batches by pk, queueing again those whose payload changed; returns {crm: count}."""
    crms = crms_syncing_on_change()
    if crm is not None:
        crms = [name for name in crms if name == crm]
    return {name: _requeue_drifted_crm(name, batch_size) for name in crms}


def _requeue_drifted_crm(crm, batch_size):
    # Keyset pagination: each batch is one read and at most one write, and unlike
    # OFFSET, rows leaving the Complete set as they are queued do not shift the pages.
    with _backend(crm) as backend:
        return requeue_changed_payloads(backend, batch_size)


def requeue_changed_payloads(backend, batch_size=DRIFT_BATCH_SIZE):
    """Queue again the Complete rows of the backend's CRM whose payload, as
    `backend` builds it now, differs from the one synced; returns the count."""
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
