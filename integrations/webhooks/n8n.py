"""The inbound n8n enrichment callback: POST /integrations/n8n/enrichment/.

An n8n workflow that enriched a contact calls back with what it found, with
Authorization: Bearer <N8N_INBOUND_SECRET>. n8n's "Retry On Fail" can resend a
callback and callbacks can arrive out of order (docs/crm-api.md, section 4), so the
same enrichment_id twice changes nothing, and an older result never replaces a newer
one.
"""

import hmac
import json
import logging
from datetime import UTC

from django.core.exceptions import RequestDataTooBig, ValidationError
from django.core.validators import URLValidator, validate_email
from django.db import DatabaseError, IntegrityError, transaction
from django.http import JsonResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from contacts.models import Contact
from contacts.suppression import SUPPRESSED_REASON, suppressed

from ..conf import get_setting
from ..models import Enrichment, EnrichmentStatus

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024


class BadField(ValueError):
    def __init__(self, field, problem):
        super().__init__("%s %s" % (field, problem))
        self.field = field


# Validation: each spec maps a key to a function (value, field path) -> clean value.


def text(limit, required=False):
    def check(value, field):
        if not isinstance(value, str):
            raise BadField(field, "must be a string")
        if len(value) > limit:
            raise BadField(field, "is %d characters long; the limit is %d" % (len(value), limit))
        # PostgreSQL stores neither, in text or in JSON.
        if "\x00" in value:
            raise BadField(field, "must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadField(field, "must be valid Unicode text") from None
        if required and not value.strip():
            raise BadField(field, "must not be empty")
        return value.strip()

    return check


def whole_number(low, high=None):
    def check(value, field):
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            bounds = "from %d to %d" % (low, high) if high is not None else "of at least %d" % low
            raise BadField(field, "must be a whole number %s" % bounds)
        return value

    return check


def number_at_least(low):
    def check(value, field):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
            raise BadField(field, "must be a number of at least %s" % low)
        return value

    return check


def one_of(choices):
    def check(value, field):
        if value not in choices:
            raise BadField(field, "must be one of %s" % ", ".join(choices))
        return value

    return check


def email_address(value, field):
    value = text(254)(value, field)
    try:
        validate_email(value)
    except ValidationError:
        raise BadField(field, "is not a valid email address") from None
    return value.lower()


def web_address(value, field):
    value = text(500)(value, field)
    try:
        URLValidator(schemes=["http", "https"])(value)
    except ValidationError:
        raise BadField(field, "is not a valid http(s) address") from None
    return value


def timestamp(value, field):
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is None or parsed.tzinfo is None:
        raise BadField(field, "must be an ISO 8601 date and time with a time zone")
    # In UTC, so that stored timestamps compare correctly as text.
    return parsed.astimezone(UTC).isoformat()


def list_of(check_item, limit):
    def check(value, field):
        if not isinstance(value, list) or len(value) > limit:
            raise BadField(field, "must be a list of at most %d items" % limit)
        return [check_item(item, "%s[%d]" % (field, i)) for i, item in enumerate(value)]

    return check


def record(spec, required=()):
    def check(value, field):
        if not isinstance(value, dict):
            raise BadField(field or "body", "must be a JSON object")
        prefix = field + "." if field else ""
        unknown = sorted(set(value) - set(spec))
        if unknown:
            raise BadField(prefix + unknown[0], "is not a known field")
        missing = [key for key in required if value.get(key) is None]
        if missing:
            raise BadField(prefix + missing[0], "is required")
        return {key: spec[key](item, prefix + key) for key, item in value.items() if item is not None}

    return check


ENRICHED_DATA = record(
    {
        "phone": text(50),
        "address": record({key: text(255) for key in ("street", "city", "state", "zip", "country")}),
        "social_profiles": record(
            {key: text(500) for key in ("linkedin", "twitter", "facebook", "instagram", "github")}
        ),
        "company": record(
            {
                "name": text(255),
                "website": web_address,
                "industry": text(255),
                "size": text(50),
                "description": text(5000),
            }
        ),
        "additional_emails": list_of(email_address, 50),
        "confidence_score": whole_number(0, 100),
        "sources": list_of(text(500), 50),
    }
)
METADATA = record(
    {
        "workflow_id": text(100),
        "execution_id": text(100),
        "duration_ms": whole_number(0),
        "api_calls": whole_number(0),
        "cost": number_at_least(0),
        "currency": text(3),
    }
)
CALLBACK = record(
    {
        "contact_id": whole_number(1),
        "enrichment_id": text(100, required=True),
        "status": one_of(EnrichmentStatus.values),
        "timestamp": timestamp,
        "enriched_data": ENRICHED_DATA,
        "metadata": METADATA,
        "error": text(2000),
    },
    required=("contact_id", "enrichment_id", "status"),
)

# Contact field <- place in enriched_data; filled only when staff left it empty.
CONTACT_FIELDS = {"phone": ("phone",), "company": ("company", "name"), "website": ("company", "website")}


@csrf_exempt
@require_POST
def enrichment_callback(request):
    secret = get_setting("N8N_INBOUND_SECRET", "")
    if not secret:
        return error(503, "The enrichment endpoint is off: set N8N_INBOUND_SECRET.")
    if not bearer_matches(request, secret):
        response = error(401, "Missing or wrong bearer token.")
        response["WWW-Authenticate"] = 'Bearer realm="crmsync"'
        return response
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        return error(415, "Send the body as JSON, with Content-Type: application/json.")
    try:
        if int(request.META.get("CONTENT_LENGTH") or 0) > MAX_BODY_BYTES or len(request.body) > MAX_BODY_BYTES:
            return error(413, "The body is larger than 1 MB.")
        body = json.loads(request.body, parse_constant=not_a_number)
    except RequestDataTooBig:
        return error(413, "The body is larger than 1 MB.")
    except ValueError as exc:
        return error(400, "The body is not valid JSON: %s" % exc)
    except RecursionError:
        return error(400, "The body is not valid JSON: it is nested too deeply.")
    try:
        callback = CALLBACK(body, "")
        if callback["status"] != EnrichmentStatus.FAILED and "enriched_data" not in callback:
            raise BadField("enriched_data", "is required unless status is failed")
    except BadField as exc:
        return error(400, str(exc), field=exc.field)
    return apply_callback(callback)


def not_a_number(constant):
    # Python's json reads NaN and Infinity, which are not JSON and which
    # PostgreSQL's jsonb refuses.
    raise ValueError("%s is not a JSON number." % constant)


def bearer_matches(request, secret):
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), secret.encode())


def apply_callback(callback):
    enrichment_id, contact_id = callback["enrichment_id"], callback["contact_id"]
    try:
        with transaction.atomic():
            contact = Contact.objects.select_for_update().filter(pk=contact_id).first()
            if contact is None:
                return error(404, "No contact has id %d." % contact_id, field="contact_id")
            refusal = suppressed_refusal(contact, callback)
            if refusal:
                return refusal
            updated = enrich(contact, callback)
            Enrichment.objects.create(
                enrichment_id=enrichment_id,
                contact=contact,
                status=callback["status"],
                data=callback.get("enriched_data", {}),
                metadata=callback.get("metadata", {}),
                updated_fields=updated,
            )
    except IntegrityError:
        # Same enrichment_id again (a resent callback): the first one stands.
        earlier = Enrichment.objects.filter(enrichment_id=enrichment_id).first()
        if earlier is None:
            return not_stored(enrichment_id)
        return answer(earlier.contact_id, enrichment_id, "Already received; nothing changed.", earlier.updated_fields)
    except DatabaseError:
        return not_stored(enrichment_id)
    logger.info(
        "n8n enrichment %s for contact %d: %s, filled %s", enrichment_id, contact_id, callback["status"], updated
    )
    return answer(contact_id, enrichment_id, "Enrichment %s recorded." % callback["status"], updated)


def suppressed_refusal(contact, callback):
    """A 409 when the contact's email, or an address the enrichment found, is on the
    suppression list (an erased person, or one whose erasure is under way); else
    None. One query for all the addresses."""
    found = callback.get("enriched_data", {}).get("additional_emails", [])
    barred = suppressed([contact.email, *found])
    if not barred:
        return None
    # 409 Conflict, not 422: the body is valid, but the person's state here (erased,
    # on the suppression list) forbids storing it, until staff lift the suppression,
    # which resolves the conflict. A "Retry On Fail" resend gets the same answer.
    field = "contact_id" if contact.email in barred else "enriched_data.additional_emails"
    logger.info("n8n enrichment %s for contact %d refused: suppressed", callback["enrichment_id"], contact.pk)
    return error(409, "Nothing was stored: %s." % SUPPRESSED_REASON, field=field)


def not_stored(enrichment_id):
    """The transaction rolled back: nothing was changed, and n8n may send it again."""
    # Called from the except blocks above: the traceback is the one being handled.
    logger.exception("could not store n8n enrichment %s", enrichment_id)  # noqa: LOG004
    return error(503, "The enrichment could not be stored; nothing was changed. Send it again later.")


def enrich(contact, callback):
    """Merge the callback into the contact; return the contact fields it filled."""
    stored_at = contact.enrichment.get("timestamp")
    newer = not stored_at or not callback.get("timestamp") or callback["timestamp"] >= stored_at
    data = callback.get("enriched_data", {})
    updated = []
    if callback["status"] != EnrichmentStatus.FAILED and newer:
        overwrite = get_setting("N8N_ENRICHMENT_OVERWRITE", False, cast=bool)
        for field, path in CONTACT_FIELDS.items():
            value = dig(data, path)
            if value and (overwrite or not getattr(contact, field)) and getattr(contact, field) != value:
                setattr(contact, field, value)
                updated.append(field)
        contact.enrichment = {
            **contact.enrichment,
            **data,
            "enrichment_id": callback["enrichment_id"],
            "timestamp": callback.get("timestamp") or timezone.now().isoformat(),
        }
    contact.enrichment["last_status"] = callback["status"]
    contact.save()
    return updated


def dig(data, path):
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def answer(contact_id, enrichment_id, message, updated_fields):
    return JsonResponse(
        {
            "success": True,
            "contact_id": contact_id,
            "enrichment_id": enrichment_id,
            "message": message,
            "updated_fields": updated_fields,
        }
    )


def error(status, message, field=None):
    body = {"success": False, "error": message}
    if field:
        body["field"] = field
    return JsonResponse(body, status=status)
