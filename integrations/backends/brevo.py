"""Brevo (formerly Sendinblue): one contact per request, or many through its import.

Brevo has no batch create: /contacts/batch only updates existing contacts and
/contacts/import answers with no per-contact result; from BREVO_IMPORT_THRESHOLD new
contacts due the import is used anyway, and each outcome established afterwards
(brevo_import.py; docs/crm-api.md, section 1, "Bulk import"). Otherwise each contact is one request,
sent concurrently and paced within the contacts endpoints' rate limit shared by
every worker: a contact Brevo gave an id is updated by that id (PUT, so an email
change updates the same record), one without is created or updated by email (POST
/contacts with updateEnabled). Removals and erasures are Brevo's contact delete;
its webhooks authenticate with a bearer token (docs/crm-api.md, section 1,
"Update by id and conflicts" to "Webhooks").
"""

import base64
import binascii
import hashlib
import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import quote

from ..exceptions import CRMConfigurationError, CRMUnavailable, RetryableError
from .base import CREATE_ONLY, UPDATE_ONLY, UPSERT, CRMBackend, Outcome, OutcomeKind
from .brevo_import import BrevoImport
from .http import json_or_empty
from .inbound import CRMNotice, WebhookRejected, same_secret

PHONE_PUNCTUATION = re.compile(r"[\s\-.()/]")
# The warning on a contact Brevo took without its phone (brevo_sms could not give
# the number a country code): staff see it beside the sync in the admin.
PHONE_LEFT_OUT = (
    "Brevo cannot take the phone %r (it needs a country code: set BREVO_DEFAULT_COUNTRY_CODE "
    "or store it as +<code><number>); synced without it."
)
# Brevo's marketing webhook `event` values crmsync acts on, and what it records.
# Hard bounces arrive as "hard_bounce"; Brevo's 2020 samples said "hard_bounced"
# (docs/crm-api.md, section 1, "Webhooks").
WEBHOOK_EVENT_KINDS = {
    "unsubscribed": "unsubscribed",
    "hard_bounce": "hard_bounce",
    "hard_bounced": "hard_bounce",
    "spam": "spam_complaint",
    "contact_deleted": "deleted",
}


class BrevoBackend(CRMBackend):
    name = "brevo"
    verbose_name = "Brevo"
    erase_description = "The contact is deleted."
    required_settings = ("API_KEY",)
    optional_settings = (
        "API_BASE_URL",
        "LIST_ID",
        "FIELD_MAP",
        "DEFAULT_COUNTRY_CODE",
        "REQUESTS_PER_SECOND",
        "CONCURRENCY",
        "TIMEOUT_SECONDS",
        "SYNC_MODE",
        "MIRROR_DELETES",
        "WEBHOOK_SECRET",
        "WEBHOOK_URL",
        "IMPORT_THRESHOLD",
        "IMPORT_BATCH_SIZE",
        "IMPORT_MAX_BYTES",
        "IMPORT_POLL_SECONDS",
        "IMPORT_MAX_WAIT_SECONDS",
    )
    default_batch_size = 50
    # Bulk import (brevo_import.py; README, "Brevo in bulk"): from this many new
    # contacts due, a batch this big goes through POST /contacts/import, in bodies
    # of at most 8 MB (Brevo's advice; its limit is 10 MB).
    default_import_threshold = 1000
    default_import_batch_size = 10_000
    default_import_max_bytes = 8_000_000
    default_import_poll_seconds = 2.0
    default_import_max_wait_seconds = 3600.0
    # Set by the engine for the batch in flight (integrations.imports.ImportLedger):
    # the imports a dead worker started on its rows, and where a new one is recorded.
    import_ledger = None
    default_api_url = "https://api.brevo.com/v3"
    # Brevo answers 400 to an address with a Unicode domain and takes its punycode
    # form (docs/crm-api.md, section 1, "Email addresses").
    email_form = "ascii"
    # The General tier's limit for /v3/contacts endpoints; Advanced is 20, Extended 60.
    default_requests_per_second = 10
    default_concurrency = 4
    default_field_map = {
        "FIRSTNAME": "first_name",
        "LASTNAME": "last_name",
        "SMS": "phone",
        "COMPANY": "company",
        "WEBSITE": "website",
    }
    has_custom_fields = True
    supports_sync_modes = True
    receives_webhooks = True
    built_in_fields = frozenset({"EMAIL", "FIRSTNAME", "LASTNAME", "SMS"})

    def configure_session(self, session):
        session.headers["api-key"] = self.setting("API_KEY")
        session.headers["Accept"] = "application/json"

    def list_ids(self):
        raw = self.setting("LIST_ID", "")
        try:
            return [int(part) for part in str(raw).split(",") if part.strip()]
        except ValueError:
            raise CRMUnavailable("BREVO_LIST_ID must be list ids separated by commas; it is %r." % raw) from None

    # Payload

    def build_payload(self, contact):
        email = self.checked_email(contact)
        attributes = self.mapped_values(contact)
        if "SMS" in attributes:
            sms = brevo_sms(attributes.pop("SMS"), self.setting("DEFAULT_COUNTRY_CODE", ""))
            if sms:
                attributes["SMS"] = sms
        payload = {"email": email, "attributes": attributes, "updateEnabled": True}
        list_ids = self.list_ids()
        if list_ids:
            payload["listIds"] = list_ids
        return payload

    # Push: many new contacts go through Brevo's import (brevo_import.py); the rest
    # one contact per request (Brevo has no batch create), which also keeps each
    # request homogeneous: an update by id, an update of a contact looked up by
    # email, or a create.

    def push(self, items):
        known = self.import_ledger.known if self.import_ledger is not None else {}
        if self.import_batch_size() or any(item.key in known for item in items):
            return BrevoImport(self).push(items)
        return self.push_one_by_one(items)

    def bulk_claim(self):
        """(threshold, batch size) for the engine: from `threshold` contacts due, it
        claims batches of `batch size` for the import; None when imports are off."""
        try:
            size = self.import_batch_size()
        except (CRMUnavailable, CRMConfigurationError):
            return None  # the push says what is wrong, where staff see it
        return (self.import_threshold(), size) if size else None

    def import_threshold(self):
        """BREVO_IMPORT_THRESHOLD: new contacts in a batch from which it is imported; 0 turns imports off."""
        return self._import_setting("IMPORT_THRESHOLD", self.default_import_threshold, int, 0)

    def import_batch_size(self):
        """Contacts per batch when importing, or None when imports cannot be used:
        off, a sync mode other than upsert, or no list (an import needs listIds)."""
        if not self.import_threshold() or self.sync_mode() != UPSERT or not self.list_ids():
            return None
        size = self._import_setting("IMPORT_BATCH_SIZE", self.default_import_batch_size, int, 1)
        return max(size, self.import_threshold())

    def import_max_bytes(self):
        return self._import_setting("IMPORT_MAX_BYTES", self.default_import_max_bytes, int, 256)

    def import_poll_seconds(self):
        return self._import_setting("IMPORT_POLL_SECONDS", self.default_import_poll_seconds, float, 0)

    def import_max_wait_seconds(self):
        return self._import_setting("IMPORT_MAX_WAIT_SECONDS", self.default_import_max_wait_seconds, float, 1)

    def _import_setting(self, name, default, cast, minimum):
        value = self.setting(name, default, cast=cast)
        if value < minimum:
            raise CRMConfigurationError("BREVO_%s must be at least %s; it is %s." % (name, minimum, value))
        return value

    def push_one_by_one(self, items):
        """The single-contact path: one request per contact."""
        if self.sync_mode() != CREATE_ONLY:
            return super().push(items)
        # create_only never overwrites: a contact Brevo gave an id is not sent.
        known = {item.key for item in items if item.external_id and not item.is_removal}
        left = [
            Outcome.accepted(item, item.external_id, message="create_only: Brevo has it already; left as it is.")
            for item in items
            if item.key in known
        ]
        return super().push([item for item in items if item.key not in known]) + left

    def send(self, chunk):
        item = chunk[0]
        if item.external_id:
            return self._update_by_id(item, item.external_id)
        if self.sync_mode() == UPDATE_ONLY:
            return self._update_found_by_email(item)
        body = dict(item.payload)
        if self.sync_mode() == CREATE_ONLY:
            del body["updateEnabled"]
        return self.request("POST", "/contacts", json=body)

    def _update_by_id(self, item, contact_id):
        """PUT by Brevo's id; the email is an attribute there, so a changed email
        changes the same record (docs/crm-api.md, section 1, "Update by id and conflicts")."""
        body = {"attributes": {**item.payload["attributes"], "EMAIL": item.payload["email"]}}
        if "listIds" in item.payload:
            body["listIds"] = item.payload["listIds"]
        if item.opted_out and item.previous_email:
            # Brevo lifts the blocklisting of a contact whose email changes (and
            # resubscribes it); an opt-out must survive the change.
            body["emailBlacklisted"] = True
        return self.request(
            "PUT", "/contacts/%s" % quote(str(contact_id), safe=""), params={"identifierType": "contact_id"}, json=body
        )

    def _update_found_by_email(self, item):
        """update_only, no id yet: look the contact up by email (Brevo has no batch
        read by email), then update it by the id found. A 404 comes back as is."""
        found = self._get_by_email(item.payload["email"])
        contact_id = json_or_empty(found).get("id") if found.status_code == 200 else None
        if not contact_id:
            return found
        self.pacer.wait()
        response = self._update_by_id(item, contact_id)
        response.brevo_contact_id = str(contact_id)
        return response

    def _get_by_email(self, email):
        return self.request("GET", "/contacts/%s" % quote(email, safe="@"), params={"identifierType": "email_id"})

    def classify(self, response):
        rejection = super().classify(response)
        # A contact that is gone, or an email another contact holds, is that
        # contact's answer (parse_outcomes), not a refusal of the request.
        if rejection is not None and (contact_missing(response) or duplicate_email(response)):
            return None
        return rejection

    def parse_outcomes(self, chunk, response):
        item, status = chunk[0], response.status_code
        if status == 201:
            created = json_or_empty(response).get("id", "")
            return [Outcome.accepted(item, created, http_status=status, message=self.phone_left_out(item))]
        if status == 204:
            # Updated: Brevo sends no body, so the id is the one sent (or found).
            found = item.external_id or getattr(response, "brevo_contact_id", "")
            return [Outcome.accepted(item, found, http_status=status, message=self.phone_left_out(item))]
        if contact_missing(response):
            return [Outcome.not_in_crm(item, self._missing_message(item, response), http_status=status)]
        if duplicate_email(response):
            return [self._email_taken(item, response)]
        return [Outcome.permanent(item, self.error_message(response), http_status=status)]

    def phone_left_out(self, item):
        """The warning for a contact whose mapped phone build_payload left out (Brevo
        refuses a number without its country code), or "". The payload cannot carry
        it, so it is worked out again from the contact."""
        if item.contact is None or "SMS" in item.payload.get("attributes", {}):
            return ""
        phone = self.mapped_values(item.contact).get("SMS")
        return PHONE_LEFT_OUT % str(phone) if phone is not None else ""

    def _missing_message(self, item, response):
        if response.request.method == "GET":
            return "update_only: Brevo has no contact with this email, and update_only creates none."
        contact_id = item.external_id or getattr(response, "brevo_contact_id", "")
        return "Brevo has no contact %s any more (deleted or merged there). Select it again to create it anew." % (
            contact_id
        )

    def _email_taken(self, item, response):
        """Brevo refused the email because another contact has it: create_only
        keeps that contact as it is; an update by id names it, for staff to act."""
        holder = self._holder_of(item.payload["email"])
        if response.request.method == "POST" and self.sync_mode() == CREATE_ONLY:
            return Outcome.accepted(
                item,
                holder,
                http_status=response.status_code,
                message="create_only: Brevo already has this email (contact %s); left as it is." % (holder or "?"),
            )
        message = (
            "Brevo refused the new email: another Brevo contact, %s, already has it, so contact %s was not "
            "changed. Merge or delete one of the two in Brevo (or change the email here), then select it again."
            % (holder or "whose id Brevo did not give", item.external_id or getattr(response, "brevo_contact_id", ""))
        )
        return Outcome.permanent(item, message, http_status=response.status_code)

    def _holder_of(self, email):
        """The id of the Brevo contact with `email`, or "" if it cannot be learned now."""
        self.pacer.wait()
        try:
            response = self._get_by_email(email)
        except RetryableError:
            return ""
        return str(json_or_empty(response).get("id", "")) if response.status_code == 200 else ""

    # Removal and erasure: both are Brevo's contact delete (it has no archive and
    # no separate erase); a 404 means there is nothing to remove.

    def send_removal(self, item):
        if item.external_id:
            identifier, kind = quote(str(item.external_id), safe=""), "contact_id"
        elif item.email:
            identifier, kind = quote(item.email, safe="@"), "email_id"
        else:
            return None
        return self.request("DELETE", "/contacts/%s" % identifier, params={"identifierType": kind})

    def removal_not_found(self, item, response):
        return contact_missing(response)

    def raise_for_account_error(self, response):
        status, body = response.status_code, json_or_empty(response)
        if status in (402, 403) or body.get("code") == "account_under_validation":
            raise CRMUnavailable(
                "Brevo refused the account: %s. Fix it in Brevo; syncing resumes by itself."
                % self.error_message(response),
                crm=self.name,
                status_code=status,
            )
        if status == 404 and "list" in body.get("message", "").lower():
            raise CRMUnavailable(
                "Brevo: %s Check BREVO_LIST_ID." % body.get("message", "List ID does not exist."),
                crm=self.name,
                status_code=status,
            )

    def rate_limit_message(self, response):
        return "Brevo's rate limit was reached; waiting as Brevo asked."

    def rate_limit_wait(self, response):
        return reset_seconds(response)

    def quota_spent_for(self, response):
        # x-sib-ratelimit-remaining reaches 0 at Brevo's per-second window with
        # each request at the limit, and the reset comes in whole seconds: holding
        # then would halve the rate, and the pace already spaces requests. Only a
        # window that stays spent for longer (another app on the account, a longer
        # window) holds every worker until it resets (docs/crm-api.md section 1).
        if response.status_code == 429 or response.headers.get("x-sib-ratelimit-remaining") != "0":
            return None
        seconds = reset_seconds(response)
        return seconds if seconds and seconds > 1 else None

    def credentials_rejected_message(self, response):
        return (
            "Brevo rejected the API key (401 %s). Set a valid BREVO_API_KEY, then retry these contacts."
            % json_or_empty(response).get("code", "unauthorized")
        )

    def error_message(self, response):
        return brevo_error_message(response)

    def after_push(self, items, outcomes):
        return [self._with_brevo_id(outcome, item) for outcome, item in zip(outcomes, items)]

    def _with_brevo_id(self, outcome, item):
        """A contact that already existed in Brevo before its first sync answers 204
        with no id: look the id up once, so the admin can link to it."""
        if outcome.external_id or outcome.kind is not OutcomeKind.ACCEPTED:
            return outcome
        self.pacer.wait()
        try:
            response = self._get_by_email(item.payload["email"])
        except RetryableError:
            return outcome
        if response.status_code != 200:
            return outcome
        # replace() keeps the rest of the outcome, its warning included.
        return replace(outcome, external_id=str(json_or_empty(response).get("id", "") or ""))

    # Inbound webhooks: Brevo signs nothing; it authenticates with a bearer token
    # (or Basic credentials in the URL) chosen when the webhook is created.

    @classmethod
    def verify_webhook(cls, call, secret):
        scheme, _, credentials = str(call.headers.get("Authorization", "")).strip().partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == "bearer":
            given = credentials
        elif scheme == "basic":
            given = basic_password(credentials)
        else:
            raise WebhookRejected("No Authorization header: Brevo sends its webhook's bearer token in one.")
        if not same_secret(given, secret):
            raise WebhookRejected("The Authorization header does not carry BREVO_WEBHOOK_SECRET.")

    @classmethod
    def parse_webhook(cls, call):
        try:
            body = json.loads(call.body or b"null")
        except ValueError:
            raise WebhookRejected("The body is not JSON.", status=400) from None
        # A batched webhook sends a list of the events it would send one by one.
        events = body if isinstance(body, list) else [body]
        if not events or not all(isinstance(event, dict) for event in events):
            raise WebhookRejected("The body is not a Brevo event or a list of them.", status=400)
        return [notice_of(event) for event in events if event.get("event") in WEBHOOK_EVENT_KINDS]

    # Set-up: text attributes for the mapped fields Brevo lacks.

    def custom_field_key(self, name):
        return name.upper()

    def existing_custom_fields(self):
        response = self.request("GET", "/contacts/attributes")
        self.check_setup_answer(response)
        return {a.get("name", "").upper() for a in json_or_empty(response).get("attributes", [])}

    def crm_fields(self):
        """{attribute name: Brevo type} of the attributes a contact can be given
        (calculated and global ones cannot)."""
        response = self.request("GET", "/contacts/attributes")
        self.check_setup_answer(response)
        return {
            str(a.get("name", "")).upper(): a.get("type") or ("category" if a.get("enumeration") else "text")
            for a in json_or_empty(response).get("attributes", [])
            if a.get("category") not in ("calculated", "global")
        }

    def create_custom_field(self, name):
        response = self.request("POST", "/contacts/attributes/normal/%s" % name.upper(), json={"type": "text"})
        self.check_setup_answer(response)
        return True


def brevo_sms(phone, default_country_code=""):
    """A phone number as Brevo's SMS attribute wants it: with its country code,
    "+441234567890". None when it cannot be made so (no country code, not a number):
    the contact still syncs, without SMS."""
    digits = PHONE_PUNCTUATION.sub("", str(phone))
    if digits.startswith("+"):
        digits = digits[1:]
    elif digits.startswith("00"):
        digits = digits[2:]
    elif default_country_code and digits.startswith("0"):
        digits = str(default_country_code).lstrip("+") + digits[1:]
    elif default_country_code:
        digits = str(default_country_code).lstrip("+") + digits
    else:
        return None
    # ASCII digits only: str.isdigit() also takes "²" and "٣", which Brevo refuses.
    if not (digits.isascii() and digits.isdigit()) or not 7 <= len(digits) <= 15 or digits.startswith("0"):
        return None
    return "+" + digits


def brevo_error_message(response):
    body = json_or_empty(response)
    message = body.get("message") or response.reason or "no message"
    duplicates = (body.get("metadata") or {}).get("duplicate_identifiers")
    if duplicates:
        message += " (already used by another Brevo contact: %s)" % ", ".join(duplicates)
    code = body.get("code")
    return "Brevo refused it: %s%s" % (message, " [%s]" % code if code else "")


def reset_seconds(response):
    """Brevo's x-sib-ratelimit-reset (seconds until the window resets); it sends
    no Retry-After."""
    try:
        return max(1.0, float(response.headers.get("x-sib-ratelimit-reset", "")))
    except ValueError:
        return None


def contact_missing(response):
    """Brevo's answer for a contact that does not exist (not a list that does not)."""
    body = json_or_empty(response)
    return (
        response.status_code == 404
        and body.get("code") == "document_not_found"
        and "list" not in str(body.get("message", "")).lower()
    )


def duplicate_email(response):
    """A 400 saying another contact has the email. Matched on the metadata: the
    code was duplicate_parameter and is invalid_parameter since 2026."""
    metadata = json_or_empty(response).get("metadata") or {}
    identifiers = metadata.get("duplicate_identifiers") if isinstance(metadata, dict) else None
    return response.status_code == 400 and "email" in [str(name).lower() for name in identifiers or []]


def basic_password(credentials):
    """The password of Basic credentials (base64 of "user:password"), or ""."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]


def notice_of(event):
    """The CRMNotice for one of Brevo's marketing events. Brevo sends no event id
    (`id` is the webhook's), so the id is a digest of the event itself: the same
    event delivered twice gives the same id."""
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return CRMNotice(
        event_id=hashlib.sha256(canonical.encode()).hexdigest(),
        kind=WEBHOOK_EVENT_KINDS[event["event"]],
        email=str(event.get("email") or ""),
        occurred_at=event_time(event),
    )


def event_time(event):
    """When it happened: ts_event is UTC epoch seconds (ts is shifted to CET)."""
    try:
        return datetime.fromtimestamp(int(event["ts_event"]), UTC)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return None
