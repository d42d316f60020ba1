"""HubSpot: batch upsert of up to 100 contacts per request, keyed by email.

batch/upsert with idProperty=email creates or updates without a search first;
search-then-create races into duplicates (docs/crm-api.md, section 2, "Single contact and search"). When HubSpot
rejects a whole batch because of some of its records, the batch is split until
each bad record stands alone with HubSpot's own message.

A contact HubSpot gave an id is updated by that id (batch/update), so an email
change updates the same record; update_only and create_only look contacts up by
email with batch/read first. Removals archive, erasures use gdpr-delete, and
HubSpot's signed webhooks (v3) report deletions, merges and opt-outs
(docs/crm-api.md, section 2, "Update by id and conflicts" to "Webhooks").
"""

import base64
import hashlib
import hmac
import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from ..conf import get_crm_setting
from ..exceptions import CRMUnavailable, PermanentError, RateLimited, RetryableError, SyncError
from .base import (
    CREATE_ONLY,
    ERASE,
    LOWER_CASE_FIELD_MAP,
    UPDATE_ONLY,
    UPSERT,
    CRMBackend,
    Outcome,
    OutcomeKind,
)
from .http import json_or_empty
from .inbound import CRMNotice, WebhookRejected, same_secret

MAX_INPUTS = 100
CONTACTS_PATH = "/crm/v3/objects/contacts"
UPSERT_PATH = CONTACTS_PATH + "/batch/upsert"
UPDATE_PATH = CONTACTS_PATH + "/batch/update"
READ_PATH = CONTACTS_PATH + "/batch/read"
CREATE_PATH = CONTACTS_PATH + "/batch/create"
GDPR_DELETE_PATH = CONTACTS_PATH + "/gdpr-delete"
PROPERTIES_PATH = "/crm/v3/properties/contacts"
# "Contact already exists. Existing ID: 12345" (409, docs/crm-api.md section 2).
EXISTING_ID = re.compile(r"Existing ID: (\d+)")
# How conflict_message names the other record.
CONFLICT_RECORD = re.compile(r"another HubSpot contact \(record (\d+)\)")
LEFT_AS_IT_IS = "create_only: HubSpot already has this contact; it was left as it is."
NOT_FOUND_FOR_UPDATE = (
    "update_only: HubSpot has no contact with this email, and HUBSPOT_SYNC_MODE=update_only creates none."
)
GONE_MESSAGE = "HubSpot has no contact %s any more (deleted or merged there). Select it again to create it anew."


class HubSpotBackend(CRMBackend):
    name = "hubspot"
    verbose_name = "HubSpot"
    # hs_email_optout and the per-subscription hs_email_optout_<id> properties
    # (docs/crm-api.md, section 2, "Webhooks").
    consent_field_prefixes = ("hs_email_optout",)
    erase_description = (
        "GDPR delete: permanently deletes the contact and blocks the email from being re-created in HubSpot."
    )
    required_settings = ("API_KEY",)
    optional_settings = (
        "API_BASE_URL",
        "PORTAL_ID",
        "FIELD_MAP",
        "REQUESTS_PER_SECOND",
        "TIMEOUT_SECONDS",
        "SYNC_MODE",
        "MIRROR_DELETES",
        "WEBHOOK_SECRET",
        "WEBHOOK_URL",
    )
    supports_sync_modes = True
    receives_webhooks = True
    default_batch_size = MAX_INPUTS
    default_api_url = "https://api.hubapi.com"
    # HubSpot validates emails by RFC 2822 plus a TLD check; the ASCII (punycode)
    # form passes under every reading of its docs (docs/crm-api.md, section 2,
    # "Email addresses").
    email_form = "ascii"
    # 100 requests per rolling 10 s on Free/Starter (19/s fits Professional and
    # Enterprise); the pacer keeps a margin below it (backends.pacing.PACE_SHARE).
    default_requests_per_second = 10
    # 100 requests in any rolling 10 s (docs/crm-api.md, section 2).
    rate_limit_window_seconds = 10.0
    default_field_map = LOWER_CASE_FIELD_MAP
    has_custom_fields = True
    built_in_fields = frozenset(
        {
            "email",
            "firstname",
            "lastname",
            "phone",
            "company",
            "website",
            "city",
            "country",
            "jobtitle",
            "lifecyclestage",
            "mobilephone",
            "address",
            "state",
            "zip",
        }
    )

    def configure_session(self, session):
        session.headers["Authorization"] = "Bearer %s" % self.setting("API_KEY")

    @classmethod
    def external_url(cls, external_id):
        portal = get_crm_setting(cls.name, "PORTAL_ID", "")
        if not portal or not external_id or cls.in_sandbox():
            return None
        return "https://app.hubspot.com/contacts/%s/record/0-1/%s" % (portal, external_id)

    # Payload

    def build_payload(self, contact):
        email = self.checked_email(contact)
        properties = {"email": email, **self.mapped_values(contact)}
        return {"id": email, "idProperty": "email", "properties": properties}

    # Push: batch upsert by email, no search first (docs/crm-api.md, section 2);
    # a contact with an id is updated by it ("Update by id and conflicts").

    def contacts_per_request(self):
        return MAX_INPUTS

    def push(self, items):
        """update_only and create_only decide per contact before anything is
        written: see resolve_for_mode."""
        mode = self.sync_mode()
        if mode == UPSERT:
            return super().push(items)
        removals = [item for item in items if item.is_removal]
        settled, to_send = self.resolve_for_mode(mode, [item for item in items if not item.is_removal])
        return settled + super().push(to_send + removals)

    def resolve_for_mode(self, mode, items):
        """(outcomes settled now, items to send). create_only leaves a contact with
        an id alone; both modes look the others up by email (batch/read): update_only
        updates those found by their id and creates none, create_only creates only
        those not found."""
        settled = []
        if mode == CREATE_ONLY:
            settled = [
                Outcome.accepted(item, item.external_id, message=LEFT_AS_IT_IS) for item in items if item.external_id
            ]
            items = [item for item in items if not item.external_id]
        unknown = [item for item in items if not item.external_id]
        found, failed = self.look_up(unknown)
        settled += failed
        to_send = [item for item in items if item.external_id]
        done = {outcome.key for outcome in failed}
        for item in (item for item in unknown if item.key not in done):
            record_id = found.get(self.item_email(item))
            if mode == UPDATE_ONLY and record_id:
                to_send.append(replace(item, external_id=record_id))
            elif mode == UPDATE_ONLY:
                settled.append(Outcome.not_in_crm(item, NOT_FOUND_FOR_UPDATE))
            elif record_id:
                settled.append(Outcome.accepted(item, record_id, message=LEFT_AS_IT_IS))
            else:
                to_send.append(item)
        return settled, to_send

    def item_email(self, item):
        return item.email or self.crm_email(item.contact.email)

    def look_up(self, items):
        """({email: record id} for the emails HubSpot has, the outcomes of contacts
        that could not be looked up), one batch/read per 100 contacts."""
        found, failed = {}, []
        for start in range(0, len(items), MAX_INPUTS):
            chunk = items[start : start + MAX_INPUTS]
            self.pacer.wait()
            try:
                found.update(self.read_by_email([self.item_email(item) for item in chunk]))
            except RateLimited as exc:
                rest = items[start:]
                return found, failed + [Outcome.wait(i, exc.message, retry_after=exc.retry_after) for i in rest]
            except RetryableError as exc:
                failed += [
                    Outcome.retry(item, "Looking it up: %s" % exc, retry_after=exc.retry_after) for item in chunk
                ]
            except PermanentError as exc:
                failed += [Outcome.permanent(item, exc.message, http_status=exc.status_code) for item in chunk]
        return found, failed

    def read_by_email(self, emails):
        """{email: record id} of those HubSpot has; raises what refused the read."""
        body = {"idProperty": "email", "inputs": [{"id": email} for email in emails], "properties": ["email"]}
        response = self.request("POST", READ_PATH, json=body)
        rejection = self.classify(response)
        if rejection is not None:
            raise rejection
        return {
            self.crm_email(str((result.get("properties") or {}).get("email") or "")): str(result.get("id", ""))
            for result in json_or_empty(response).get("results", [])
        }

    def chunks(self, items):
        # One request updates by id or upserts by email, never both.
        by_id = [item for item in items if item.external_id]
        return super().chunks(by_id) + super().chunks([item for item in items if not item.external_id])

    def send(self, chunk):
        if chunk[0].external_id:
            inputs = [{"id": item.external_id, "properties": item.payload["properties"]} for item in chunk]
            return self.request("POST", UPDATE_PATH, json={"inputs": inputs})
        if self.sync_mode() == CREATE_ONLY:
            inputs = [{"properties": item.payload["properties"]} for item in chunk]
            return self.request("POST", CREATE_PATH, json={"inputs": inputs})
        return self.request("POST", UPSERT_PATH, json={"inputs": [item.payload for item in chunk]})

    def send_and_judge(self, chunk):
        outcomes = super().send_and_judge(chunk)
        alone = len(chunk) == 1 and not chunk[0].is_removal and not chunk[0].external_id
        if alone and self.sync_mode() == CREATE_ONLY:
            return [created_meanwhile(chunk[0], outcome) for outcome in outcomes]
        return outcomes

    def split_rejected(self, response):
        # HubSpot refuses a whole batch for one bad record (a 409 for an email
        # another contact has included): halve until it stands alone.
        return True

    def parse_outcomes(self, chunk, response):
        if chunk[0].external_id:
            return self.updated_outcomes(chunk, response)
        return self.upserted_outcomes(chunk, response)

    def updated_outcomes(self, chunk, response):
        """batch/update: results by id; the ids HubSpot no longer has come back in
        one OBJECT_NOT_FOUND error (context.ids), the rest of the batch applied."""
        body, status = json_or_empty(response), response.status_code
        updated = {str(result.get("id", "")) for result in body.get("results", [])}
        errors = body.get("errors") or []
        gone = {
            str(record_id)
            for error in errors
            if error.get("category") == "OBJECT_NOT_FOUND"
            for record_id in (error.get("context") or {}).get("ids") or []
        }
        outcomes, unmatched = [], []
        for item in chunk:
            if item.external_id in updated:
                outcomes.append(Outcome.accepted(item, item.external_id, http_status=status))
            elif item.external_id in gone:
                outcomes.append(Outcome.not_in_crm(item, GONE_MESSAGE % item.external_id, http_status=status))
            else:
                unmatched.append(item)
        other_errors = [error for error in errors if error.get("category") != "OBJECT_NOT_FOUND"]
        return outcomes + self.unexplained(unmatched, other_errors)

    def upserted_outcomes(self, chunk, response):
        """Results come back in no documented order: match them on the email, both
        sides in the form HubSpot was sent, whatever case or form it echoes."""
        body = json_or_empty(response)
        ids = {
            self.crm_email(str((result.get("properties") or {}).get("email", ""))): str(result.get("id", ""))
            for result in body.get("results", [])
        }
        sent = {item.key: self.crm_email(item.contact.email) for item in chunk}
        unmatched = [item for item in chunk if sent[item.key] not in ids]
        outcomes = [
            Outcome.accepted(item, ids[sent[item.key]], http_status=response.status_code)
            for item in chunk
            if sent[item.key] in ids
        ]
        return outcomes + self.unexplained(unmatched, body.get("errors") or [])

    def unexplained(self, unmatched, errors):
        """Contacts an answer gave no result for: a single one fails with the error
        HubSpot gave, several are sent again one by one, none explained is retried."""
        if unmatched and errors and len(unmatched) == 1:
            message = "HubSpot refused it: %s" % errors[0].get("message", "no message")
            return [Outcome.permanent(unmatched[0], message, http_status=207)]
        if unmatched and errors:
            return [o for item in unmatched for o in self.send_in_slot([item])]
        message = "HubSpot answered without a result for this contact."
        return [Outcome.retry(item, message) for item in unmatched]

    def raise_for_account_error(self, response):
        status, body = response.status_code, json_or_empty(response)
        if status == 403:
            raise CRMUnavailable(
                "HubSpot refused the access token (403 %s): give the private app the "
                "crm.objects.contacts.write scope; syncing resumes by itself." % body.get("category", "FORBIDDEN"),
                crm=self.name,
                status_code=status,
            )
        missing = [e.get("name") for e in property_errors(body) if e.get("error") == "PROPERTY_DOESNT_EXIST"]
        if status == 400 and missing:
            raise CRMUnavailable(
                "HubSpot has no contact property %s. Run 'manage.py crm_setup --crm hubspot' or "
                "fix HUBSPOT_FIELD_MAP; syncing resumes by itself." % ", ".join(repr(name) for name in missing),
                crm=self.name,
                status_code=status,
            )

    def rate_limit_message(self, response):
        return "HubSpot's %s rate limit was reached; waiting." % rate_limit_policy(response)

    def rate_limit_wait(self, response):
        return rate_limit_wait(response)

    def credentials_rejected_message(self, response):
        return (
            "HubSpot rejected the access token (401 %s). Set a valid HUBSPOT_API_KEY "
            "(a private app token), then retry these contacts."
            % json_or_empty(response).get("category", "INVALID_AUTHENTICATION")
        )

    def error_message(self, response):
        if response.status_code == 409:
            return self.conflict_message(response)
        return hubspot_error_message(response)

    def conflict_message(self, response):
        """409: the email belongs to another record. Name it, from the answer or,
        for a request of one contact, by looking the email up."""
        existing = existing_record_id(json_or_empty(response)) or self.owner_of_sent_email(response)
        other = "another HubSpot contact (record %s)" % existing if existing else "another HubSpot contact"
        return (
            "HubSpot refused it: its email already belongs to %s. Nothing was changed; merge the two "
            "records in HubSpot or change this contact's email, then select it again." % other
        )

    def owner_of_sent_email(self, response):
        try:
            inputs = json.loads(response.request.body or b"{}").get("inputs") or []
        except (ValueError, AttributeError):
            return ""
        email = str((inputs[0].get("properties") or {}).get("email") or "") if len(inputs) == 1 else ""
        if not email:
            return ""
        self.pacer.wait()
        try:
            return self.read_by_email([email]).get(self.crm_email(email), "")
        except SyncError:
            return ""

    def quota_spent_for(self, response):
        # Other apps on the same account share the window, so our own pace is not
        # enough: when HubSpot says none are left, wait for the window to roll.
        # Paced below Max per interval, crmsync alone never brings Remaining to 0.
        # The daily headers are left to the 429 (policy DAILY): its contacts wait
        # and the engine pauses HubSpot until midnight (docs/crm-api.md section 2).
        if response.headers.get("X-HubSpot-RateLimit-Remaining") == "0" and response.status_code != 429:
            return window_seconds(response)
        return None

    # Removal archives, erasure is HubSpot's GDPR delete (docs/crm-api.md
    # section 2, "Delete and erase").

    def send_removal(self, item):
        if item.operation == ERASE:
            if item.external_id:
                return self.request("POST", GDPR_DELETE_PATH, json={"objectId": item.external_id})
            if not item.email:
                return None
            return self.request("POST", GDPR_DELETE_PATH, json={"objectId": item.email, "idProperty": "email"})
        record_id = item.external_id
        if not record_id:
            record_id = self.record_id_by_email(item.email)
            if not record_id:
                return None
            self.pacer.wait()  # the lookup took this removal's slot
        return self.request("DELETE", "%s/%s" % (CONTACTS_PATH, quote(record_id, safe="")))

    def record_id_by_email(self, email):
        """Archiving takes an id: the record's for `email`, "" when HubSpot has none."""
        if not email:
            return ""
        path = "%s/%s" % (CONTACTS_PATH, quote(email, safe=""))
        response = self.request("GET", path, params={"idProperty": "email", "properties": "email"})
        if response.status_code == 404:
            return ""
        rejection = self.classify(response)
        if rejection is not None:
            raise rejection
        return str(json_or_empty(response).get("id") or "")

    # Inbound webhooks: signature v3 (docs/crm-api.md section 2, "Webhooks").

    @classmethod
    def verify_webhook(cls, call, secret):
        signature = call.headers.get("X-HubSpot-Signature-v3", "")
        timestamp = call.headers.get("X-HubSpot-Request-Timestamp", "")
        if not signature or not timestamp.isdigit():
            raise WebhookRejected("The call has no X-HubSpot-Signature-v3 and X-HubSpot-Request-Timestamp headers.")
        if call.received_at.timestamp() * 1000 - int(timestamp) > MAX_WEBHOOK_AGE_MS:
            raise WebhookRejected("The call's timestamp is more than 5 minutes old: refused as a possible replay.")
        expected = signature_v3(secret, call.method, call.url, call.body, timestamp)
        if not same_secret(signature, expected):
            raise WebhookRejected("The X-HubSpot-Signature-v3 does not match: check HUBSPOT_WEBHOOK_SECRET.")

    @classmethod
    def parse_webhook(cls, call):
        try:
            events = json.loads(call.body)
        except ValueError:
            raise WebhookRejected("The body is not JSON.", status=400) from None
        if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
            raise WebhookRejected("HubSpot sends a JSON array of events; this body is not one.", status=400)
        return [notice for event in events for notice in event_notices(event)]

    # Set-up: text properties for the mapped fields HubSpot lacks.

    def custom_field_key(self, name):
        return name.lower()

    def existing_custom_fields(self):
        response = self.request("GET", PROPERTIES_PATH)
        self.check_setup_answer(response)
        return {p.get("name", "").lower() for p in json_or_empty(response).get("results", [])}

    def crm_fields(self):
        """{property name: HubSpot type} of the properties an API call may write."""
        response = self.request("GET", PROPERTIES_PATH)
        self.check_setup_answer(response)
        return {
            str(p.get("name", "")).lower(): p.get("type") or "string"
            for p in json_or_empty(response).get("results", [])
            if not (p.get("modificationMetadata") or {}).get("readOnlyValue")
        }

    def create_custom_field(self, name):
        response = self.request("POST", PROPERTIES_PATH, json=property_definition(name))
        if response.status_code == 409:
            return False
        self.check_setup_answer(response)
        return True


# Webhooks

# HubSpot's window for a signed call (request-validation docs).
MAX_WEBHOOK_AGE_MS = 5 * 60 * 1000
# The escapes HubSpot decodes in the URI before signing it (request-validation docs).
URI_ESCAPES = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
GONE_EVENTS = {"contact.deletion": "deleted", "contact.privacyDeletion": "privacy_deleted"}
OPT_OUT_PROPERTY = "hs_email_optout"
# Not confirmed: the property a hard bounce sets (docs/crm-api.md section 2, "Webhooks").
HARD_BOUNCE_PROPERTY = "hs_email_hard_bounce_reason_enum"


def decoded_uri(url):
    return re.sub(r"%[0-9A-Fa-f]{2}", lambda match: URI_ESCAPES.get(match.group().upper(), match.group()), url)


def signature_v3(secret, method, url, body, timestamp):
    """base64(HMAC-SHA256(client secret, method + URI + body + timestamp))."""
    message = (method.upper() + decoded_uri(url)).encode() + bytes(body) + str(timestamp).encode()
    digest = hmac.new(str(secret).encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def event_notices(event):
    """The CRMNotices one HubSpot event carries; [] for events crmsync does not act on.
    eventId is not unique (HubSpot's docs), so the id adds the type, record and time;
    not attemptNumber, which grows with each retry of the same event."""
    kind, object_id = event.get("subscriptionType"), event.get("objectId")
    event_id = "%s:%s:%s:%s" % (event.get("eventId"), kind, object_id, event.get("occurredAt"))
    when = occurred_at(event)
    if kind == "contact.merge":
        return merge_notices(event, event_id, when)
    if object_id in (None, ""):
        return []
    if kind in GONE_EVENTS:
        return [CRMNotice(event_id, GONE_EVENTS[kind], external_id=str(object_id), occurred_at=when)]
    notice_kind = property_change_kind(event) if kind == "contact.propertyChange" else None
    if notice_kind:
        event_id = "%s:%s" % (event_id, event.get("propertyName"))
        return [CRMNotice(event_id[:200], notice_kind, external_id=str(object_id), occurred_at=when)]
    return []


def merge_notices(event, event_id, when):
    """One notice per record merged away, naming the survivor: newObjectId when
    HubSpot made a new record of the merge, else primaryObjectId."""
    survivor = str(event.get("newObjectId") or event.get("primaryObjectId") or "")
    merged = [str(i) for i in (event.get("mergedObjectIds") or []) + [event.get("primaryObjectId")] if i]
    return [
        CRMNotice(
            ("%s:%s" % (event_id, record_id))[:200],
            "merged",
            external_id=record_id,
            merged_into=survivor,
            occurred_at=when,
        )
        for record_id in dict.fromkeys(merged)
        if survivor and record_id != survivor
    ]


def property_change_kind(event):
    name, value = event.get("propertyName"), str(event.get("propertyValue") or "").strip()
    if name == OPT_OUT_PROPERTY and value.lower() == "true":
        return "unsubscribed"
    if name == HARD_BOUNCE_PROPERTY and value:
        return "hard_bounce"
    return None


def occurred_at(event):
    stamp = event.get("occurredAt")
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)):
        return None
    try:
        return datetime.fromtimestamp(stamp / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def created_meanwhile(item, outcome):
    """create_only: a contact someone created in HubSpot between the lookup and
    the create (409 naming the record) is left as it is, like one found first."""
    match = CONFLICT_RECORD.search(outcome.message) if outcome.http_status == 409 else None
    if outcome.kind is not OutcomeKind.PERMANENT or not match:
        return outcome
    return Outcome.accepted(item, match.group(1), http_status=409, message=LEFT_AS_IT_IS)


def existing_record_id(body):
    """The other record's id in a 409: in the message, or identityProfile.vid."""
    texts = [str(body.get("message") or "")] + [
        str(e.get("message") or "") for e in body.get("errors") or [] if isinstance(e, dict)
    ]
    for text in texts:
        match = EXISTING_ID.search(text)
        if match:
            return match.group(1)
    vid = (body.get("identityProfile") or {}).get("vid") if isinstance(body.get("identityProfile"), dict) else None
    return str(vid) if vid else ""


def property_definition(name):
    return {
        "name": name,
        "label": name.replace("_", " ").title(),
        "type": "string",
        "fieldType": "text",
        "groupName": "contactinformation",
        "description": "Synced from crmsync.",
    }


def property_errors(body):
    """HubSpot puts per-property errors as JSON text inside the message:
    'Property values were not valid: [{"isValid":false,...}]'."""
    message = body.get("message") or ""
    _, bracket, rest = message.partition("[")
    if not bracket:
        return []
    try:
        errors = json.loads("[" + rest)
    except ValueError:
        return []
    return [error for error in errors if isinstance(error, dict)]


def hubspot_error_message(response):
    body = json_or_empty(response)
    details = property_errors(body)
    if details:
        message = "; ".join("%s (%s)" % (e.get("message", ""), e.get("error", "")) for e in details)
    else:
        message = body.get("message") or response.reason or "no message"
    category = body.get("category")
    return "HubSpot refused it: %s%s" % (message, " [%s]" % category if category and not details else "")


def rate_limit_policy(response):
    return (json_or_empty(response).get("policyName") or "TEN_SECONDLY_ROLLING").lower()


def rate_limit_wait(response):
    """Seconds to wait after a 429: Retry-After when sent, the rest of the UTC day
    for the daily cap, else the rolling window."""
    retry_after = response.headers.get("Retry-After", "")
    if retry_after.isdigit():
        return float(retry_after)
    if rate_limit_policy(response) == "daily":
        now = datetime.now(UTC)
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return (midnight - now).total_seconds()
    return window_seconds(response)


# HubSpot's rolling window when its answer does not say (Free and Starter tiers).
DEFAULT_WINDOW_SECONDS = 10


def window_seconds(response):
    interval = response.headers.get("X-HubSpot-RateLimit-Interval-Milliseconds", "")
    return int(interval) / 1000 if interval.isdigit() else DEFAULT_WINDOW_SECONDS
