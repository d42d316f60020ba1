"""The inbound webhook of each CRM that sends events: POST /integrations/<crm>/webhook/.

The CRM's backend verifies the call (its own signature or authentication, with
<CRM>_WEBHOOK_SECRET) and reads its events (CRMBackend.verify_webhook,
parse_webhook); this module applies them to the CRM's rows, and is the one place
that changes sync state on what a CRM tells us:

- an opt-out (unsubscribed, hard bounce, spam complaint) is recorded on the row
  (crm_event, opted_out_at) and shown to staff; no payload carries a subscription
  state, so no sync can undo it;
- a deletion (or HubSpot's privacy deletion) leaves the row Not in the CRM with
  no id: it is not created again unless staff select it again;
- a merge puts the surviving record's id in place of the merged one, so the
  next sync updates the survivor.

The same event twice changes nothing (WebhookEvent, by the CRM's event id), and
the work is a few set-based statements per call, so the answer is quick.
"""

import logging

from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from contacts.emails import canonical_email
from contacts.models import GONE_EVENTS, OPT_OUT_EVENTS, ContactSync, CRMEvent, Operation, ProcessingStatus

from ..backends.inbound import WebhookCall, WebhookRejected
from ..conf import setting_name
from ..exceptions import UnknownCRM
from ..models import WebhookEvent, clip
from ..registry import get_backend_class

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 5 * 1024 * 1024


@csrf_exempt
@require_POST
def crm_webhook(request, crm):
    try:
        backend = get_backend_class(crm)
    except UnknownCRM:
        return JsonResponse({"message": "Unknown CRM."}, status=404)
    secret = backend.webhook_secret() if backend.receives_webhooks else ""
    if not secret:
        return JsonResponse(
            {"message": "This webhook is off: %s is not set." % setting_name(crm, "WEBHOOK_SECRET")}, status=404
        )
    if len(request.body) > MAX_BODY_BYTES:
        return JsonResponse({"message": "The body is too large."}, status=413)
    call = WebhookCall(
        method=request.method,
        url=backend.webhook_url(request.build_absolute_uri()),
        headers=request.headers,
        body=request.body,
        received_at=timezone.now(),
    )
    try:
        backend.verify_webhook(call, secret)
        notices = backend.parse_webhook(call)
    except WebhookRejected as exc:
        logger.warning("crm=%s webhook refused (%d): %s", crm, exc.status, exc.message)
        return JsonResponse({"message": exc.message}, status=exc.status)
    taken = apply_notices(crm, backend.verbose_name, notices, call.received_at)
    return JsonResponse({"events": len(notices), "applied": taken})


def apply_notices(crm, label, notices, now):
    """Apply the notices not seen before; returns how many were new."""
    with transaction.atomic():
        fresh = _first_time(crm, notices, now)
        for kind in OPT_OUT_EVENTS:
            _opted_out(crm, [n for n in fresh if n.kind == kind], kind, now)
        for kind in GONE_EVENTS:
            _gone(crm, label, [n for n in fresh if n.kind == kind], kind, now)
        for notice in (n for n in fresh if n.kind == CRMEvent.MERGED and n.merged_into):
            # Merges are rare and each names its own survivor: one statement each.
            _rows(crm, [notice]).update(
                external_id=notice.merged_into,
                crm_event=CRMEvent.MERGED,
                crm_event_at=_when(notice, now),
                updated_at=now,
            )
    return len(fresh)


def _first_time(crm, notices, now):
    """The notices whose event id was not taken before, recorded now as taken."""
    known = set(
        WebhookEvent.objects.filter(crm=crm, event_id__in=[n.event_id for n in notices]).values_list(
            "event_id", flat=True
        )
    )
    fresh = list({n.event_id: n for n in notices if n.event_id not in known}.values())
    WebhookEvent.objects.bulk_create(
        [WebhookEvent(crm=crm, event_id=n.event_id, kind=n.kind, received_at=now) for n in fresh],
        ignore_conflicts=True,
    )
    return fresh


def _rows(crm, notices):
    """The CRM's rows the notices name: by the CRM's id, else by the email."""
    ids = [n.external_id for n in notices if n.external_id]
    emails = [canonical_email(n.email) for n in notices if n.email and not n.external_id]
    return ContactSync.objects.filter(crm=crm).filter(Q(external_id__in=ids) | Q(contact__email__in=emails))


def _when(notice, now):
    return notice.occurred_at or now


def _opted_out(crm, notices, kind, now):
    if notices:
        _rows(crm, notices).update(
            crm_event=kind,
            crm_event_at=now,
            opted_out_at=Coalesce("opted_out_at", now),
            updated_at=now,
        )


def _gone(crm, label, notices, kind, now):
    """The CRM deleted the record: it has no id any more, and a re-sync would
    create a new one, so the row waits for staff instead. A removal or erasure
    queued for it finds nothing and is done."""
    if not notices:
        return
    message = "%s reports this contact %s on %s; it is not created again unless you select it again." % (
        label,
        "deleted (a privacy deletion)" if kind == CRMEvent.PRIVACY_DELETED else "deleted",
        now.strftime("%Y-%m-%d %H:%M UTC"),
    )
    rows = _rows(crm, notices)
    rows.update(crm_event=kind, crm_event_at=now, updated_at=now)
    rows.filter(operation=Operation.UPSERT).exclude(processing_status=ProcessingStatus.PROCESSING).update(
        processing_status=ProcessingStatus.NOT_IN_CRM,
        external_id="",
        synced_email="",
        synced_hash="",
        next_attempt_at=None,
        last_error=clip(message),
    )
