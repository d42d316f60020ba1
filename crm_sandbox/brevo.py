"""Brevo's contacts API (docs/crm-api.md section 1), in memory.

Settings: unknown_attributes, "drop" (what is reported for create) or "reject";
import_delay_seconds and import_delay_per_1000_rows, how long a /contacts/import
takes to apply (brevo_import.py);
duplicate_code, the code of a duplicate-identifier 400 ("duplicate_parameter", or
"invalid_parameter" as Brevo answers since 2026); webhook_url, webhook_secret
(sent as "Authorization: Bearer", the webhook's auth token) and webhook_batched
(a list of events per call) for its marketing webhooks.
"""

import json
import re
import time
from datetime import UTC, datetime

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from .base import BadJSON, Emulator, Limit, empty_response, json_response, route, whole_seconds
from .brevo_import import IMPORT_SETTINGS, BrevoImports

API_KEY = "sandbox-brevo-key"
DEFAULT_ATTRIBUTES = ("EMAIL", "FIRSTNAME", "LASTNAME", "SMS")
# EXT_ID is set through ext_id and shown among the attributes (identifierType ext_id).
IDENTIFIER_ATTRIBUTES = ("EMAIL", "SMS", "EXT_ID")
ATTRIBUTE_CATEGORIES = ("normal", "transactional", "category", "calculated", "global")
ATTRIBUTE_TYPES = ("text", "date", "float", "boolean", "id", "category", "multiple-choice")
IDENTIFIER_TYPES = ("email_id", "contact_id", "ext_id", "phone_id", "whatsapp_id", "landline_number_id")
MAX_ATTRIBUTE_LENGTH = 5000
MAX_LIST_ADD = 150
MAX_CONTACTS_PAGE, MAX_LISTS_PAGE = 1000, 50
FIRST_LIST = {"id": 2, "name": "Your first list", "folderId": 1}
SMS_PUNCTUATION = re.compile(r"[\s\-.()]")
SMS_DIGITS = re.compile(r"^[1-9]\d{6,14}$")
# The id Brevo puts in every webhook call: the webhook's, not the event's.
WEBHOOK_ID = 1
# crmsync's event kinds and the marketing webhook `event` Brevo sends for each
# (docs/crm-api.md, section 1, "Webhooks").
MARKETING_EVENTS = {
    "unsubscribed": "unsubscribed",
    "hard_bounce": "hard_bounce",
    "spam_complaint": "spam",
    "deleted": "contact_deleted",
}


def crm_settings(url):
    """The Brevo settings that point crmsync at this emulator when it is served at `url`."""
    return {"API_BASE_URL": url + "/brevo/v3", "API_KEY": API_KEY}


def now():
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def error(status, code, message, **extra):
    return json_response(status, {"code": code, "message": message, **extra})


def duplicate(identifier, action="create", code="duplicate_parameter"):
    return error(
        400,
        code,
        "Unable to %s contact, %s is already associated with another Contact" % (action, identifier),
        metadata={"duplicate_identifiers": [identifier]},
    )


def contact_not_found():
    return error(404, "document_not_found", "Contact does not exist")


def valid_email(email):
    # Brevo refuses a Unicode domain and takes its punycode form (docs/crm-api.md, section 1);
    # and, stricter than Django's validator, a domain without a dot ("localhost") or a
    # quoted local part or address literal (docs/crm-api.md, section 1, "Bulk import").
    local, _, domain = email.rpartition("@")
    if not email.isascii() or "." not in domain or domain.startswith("[") or local.startswith('"'):
        return False
    try:
        validate_email(email)
    except ValidationError:
        return False
    return True


def normalised_sms(value):
    """The SMS attribute as Brevo keeps it: country code and number as digits, or None.

    Brevo accepts 91xxxxxxxxxx, +91xxxxxxxxxx and 0091xxxxxxxxxx (reference, get-contact-info)
    and wants the country code, so after dropping spaces, dashes, dots and brackets, then a
    leading + or 00, what is left must be 7 to 15 digits not starting with 0. Stored and shown
    without the +, as digits with the country code.
    """
    digits = SMS_PUNCTUATION.sub("", str(value))
    if digits.startswith("+"):
        digits = digits[1:]
    elif digits.startswith("00"):
        digits = digits[2:]
    return digits if SMS_DIGITS.match(digits) else None


class BrevoEmulator(BrevoImports, Emulator):
    name = "brevo"
    primary_limit = "second"
    server_error_statuses = (500, 502, 503)
    SETTINGS = {
        "unknown_attributes": "drop",
        **IMPORT_SETTINGS,
        "duplicate_code": "duplicate_parameter",
        "webhook_batched": False,
    }
    WEBHOOK_EVENTS = tuple(MARKETING_EVENTS)
    # For the import (brevo_import.py), which applies rows as create and update do.
    IDENTIFIER_ATTRIBUTES = IDENTIFIER_ATTRIBUTES
    valid_email = staticmethod(valid_email)
    normalised_sms = staticmethod(normalised_sms)

    def reset_records(self):
        self.by_id, self.by_email, self.next_id = {}, {}, 1
        self.by_identifier = {"SMS": {}, "EXT_ID": {}}
        self.attributes = {name: {"name": name, "category": "normal", "type": "text"} for name in DEFAULT_ATTRIBUTES}
        # A new Brevo account starts with list 2, "Your first list", in folder 1.
        self.lists, self.next_list_id = {FIRST_LIST["id"]: {**FIRST_LIST, "createdAt": now()}}, FIRST_LIST["id"] + 1
        self.processes, self.next_process_id = {}, 1
        # Timers of imports started before a reset must not touch the new state.
        self.generation = getattr(self, "generation", 0) + 1

    def default_limits(self):
        # General tier, every /v3/contacts* endpoint, and every endpoint the page does
        # not list, /v3/processes among them (developers.brevo.com/docs/api-limits).
        return {"second": Limit(10, 1), "hour": Limit(36_000, 3600), "other_hour": Limit(100, 3600)}

    def check_settings(self, settings):
        if settings.get("unknown_attributes", "drop") not in ("drop", "reject"):
            return 'unknown_attributes must be "drop" or "reject".'
        for name in IMPORT_SETTINGS:
            delay = settings.get(name, 0)
            if not isinstance(delay, (int, float)) or delay < 0:
                return "%s must be a number, 0 or more." % name
        if settings.get("duplicate_code", "duplicate_parameter") not in ("duplicate_parameter", "invalid_parameter"):
            return 'duplicate_code must be "duplicate_parameter" or "invalid_parameter".'
        return None

    def contacts(self):
        with self.lock:
            return [self._shown(contact, details=True) for contact in self.by_id.values()]

    # Server hooks

    def authenticate(self, request):
        if request.path.startswith("/reports/"):
            return None  # a report file is on Brevo's storage, at a URL that is its own key
        bearer = request.header("authorization")
        token = bearer[len("Bearer ") :].strip() if bearer.startswith("Bearer ") else ""
        if API_KEY not in (request.header("api-key"), token):
            return error(401, "unauthorized", "Key not found")
        return None

    def limits_for(self, request):
        if request.path.startswith("/v3/processes"):
            return [("other_hour", self.limits.get("other_hour"))]
        if not request.path.startswith("/v3/contacts"):
            return []
        return [(name, self.limits.get(name)) for name in ("second", "hour")]

    def limit_headers(self, name, limit, remaining, wait):
        # On success the per-second limit's headers are shown; on a 429, the refusing limit's.
        return {
            "x-sib-ratelimit-limit": str(limit.requests),
            "x-sib-ratelimit-remaining": str(remaining),
            "x-sib-ratelimit-reset": str(whole_seconds(wait or limit.reset_in())),
        }

    def rate_limited(self, request, name, limit, wait):
        # No Retry-After: Brevo documents only the x-sib-ratelimit-* headers.
        return error(429, "too_many_requests", "The expected rate limit is exceeded.")

    def bad_json(self, exc):
        return error(400, "bad_request", "Input must be a valid JSON object")

    def no_route(self, request, allowed_methods):
        if allowed_methods:
            return error(405, "method_not_allowed", "The %s method is not allowed on this route" % request.method)
        return error(404, "document_not_found", "Invalid route")

    def server_error(self, status):
        return error(status, "internal_error", "Internal server error")

    # Contacts

    @route("POST", r"/v3/contacts")
    def create(self, request):
        body = request.json_object()
        email = str(body.get("email") or "").strip().lower()
        if email and not valid_email(email):
            return error(400, "invalid_parameter", "Invalid email address")
        with self.lock:
            attributes, problem = self._clean_write(body, creating=True)
            if problem:
                return problem
            # The email comes from `email`; attributes.EMAIL only stands in when it is absent.
            email = email or attributes.pop("EMAIL", "") or ""
            attributes.pop("EMAIL", None)
            if not (email or attributes.get("SMS") or attributes.get("EXT_ID")):
                return error(400, "missing_parameter", "Please provide Email or SMS attribute value to create user")
            if email and not valid_email(email):
                return error(400, "invalid_parameter", "Invalid email address")
            existing, matched_on = self._existing(email, attributes)
            clash = self._identifier_clash(attributes, existing)
            if clash:
                return self._duplicate(clash)
            if existing and not body.get("updateEnabled"):
                return self._duplicate(matched_on)
            if existing:
                self._apply(existing, attributes, body)
                return empty_response(204)
            contact = self._new_contact(email, attributes, body)
        return json_response(201, {"id": contact["id"]})

    @route("GET", r"/v3/contacts")
    def list_contacts(self, request):
        limit, offset, problem = paging(request, default=50, maximum=MAX_CONTACTS_PAGE)
        if problem:
            return problem
        since, problem = moment(request.query.get("modifiedSince"))
        if problem:
            return problem
        with self.lock:
            newest_first = request.query.get("sort") != "asc"
            contacts = sorted(self.by_id.values(), key=lambda c: c["id"], reverse=newest_first)
            if since:
                contacts = [c for c in contacts if datetime.fromisoformat(c["modifiedAt"]) > since]
            page = [self._shown(contact) for contact in contacts[offset : offset + limit]]
            return json_response(200, {"contacts": page, "count": len(contacts)})

    @route("GET", r"/v3/contacts/([^/]+)")
    def get(self, request, identifier):
        with self.lock:
            contact, problem = self._lookup(identifier, request)
            if problem:
                return problem
            return json_response(200, self._shown(contact, details=True))

    @route("PUT", r"/v3/contacts/([^/]+)")
    def update(self, request, identifier):
        body = request.json_object()
        with self.lock:
            contact, problem = self._lookup(identifier, request)
            if problem:
                return problem
            attributes, problem = self._clean_write(body)
            if problem:
                return problem
            problem = self._email_change_problem(attributes.get("EMAIL"), contact)
            clash = self._identifier_clash(attributes, contact)
            if problem or clash:
                return problem or self._duplicate(clash, "update")
            self._apply(contact, attributes, body)
        return empty_response(204)

    @route("DELETE", r"/v3/contacts/([^/]+)")
    def delete(self, request, identifier):
        with self.lock:
            contact, problem = self._lookup(identifier, request)
            if problem:
                return problem
            del self.by_id[contact["id"]]
            self.by_email.pop(contact["email"], None)
            for key in self.by_identifier:
                self._set_attribute(contact, key, None)
        # Brevo's contact_deleted marketing event, to the webhook target if one is set.
        self.emit("deleted", id=contact["id"], email=contact["email"], list_ids=contact["listIds"])
        return empty_response(204)

    @route("POST", r"/v3/contacts/batch")
    def batch_update(self, request):
        """Update only; one unknown contact fails the whole batch and nothing is applied."""
        entries = request.json_object().get("contacts")
        if not isinstance(entries, list) or not entries:
            return error(400, "missing_parameter", "contacts is missing")
        with self.lock:
            found = [self._find_entry(entry) if isinstance(entry, dict) else None for entry in entries]
            missing = [str(index) for index, contact in enumerate(found) if contact is None]
            if missing:
                # Indexes count from 0, as in the contacts array sent.
                return error(404, "document_not_found", "No contact found for indexes %s" % ",".join(missing))
            cleaned = []
            for contact, entry in zip(found, entries):
                attributes, problem = self._clean_write(entry)
                problem = problem or self._email_change_problem(attributes.get("EMAIL"), contact)
                clash = not problem and self._identifier_clash(attributes, contact)
                if problem or clash:
                    return problem or self._duplicate(clash, "update")
                cleaned.append((contact, attributes, entry))
            for contact, attributes, entry in cleaned:
                self._apply(contact, attributes, entry)
        return empty_response(204)

    # Lists

    @route("POST", r"/v3/contacts/lists")
    def create_list(self, request):
        body = request.json_object()
        for key in ("name", "folderId"):
            if not body.get(key):
                return error(400, "missing_parameter", "%s is missing" % key)
        with self.lock:
            created = self._new_list(str(body["name"]), body["folderId"])
        return json_response(201, {"id": created["id"]})

    @route("GET", r"/v3/contacts/lists")
    def get_lists(self, request):
        limit, offset, problem = paging(request, default=10, maximum=MAX_LISTS_PAGE)
        if problem:
            return problem
        with self.lock:
            newest_first = request.query.get("sort") != "asc"
            lists = sorted(self.lists.values(), key=lambda item: item["id"], reverse=newest_first)
            page = [self._list_summary(item) for item in lists[offset : offset + limit]]
            return json_response(200, {"lists": page, "count": len(lists)})

    @route("GET", r"/v3/contacts/lists/(\d+)")
    def get_list(self, request, list_id):
        with self.lock:
            found = self.lists.get(int(list_id))
            if found is None:
                return error(404, "document_not_found", "List ID does not exist")
            detail = {"createdAt": found["createdAt"], "campaignStats": [], "dynamicList": False}
            return json_response(200, {**self._list_summary(found), **detail})

    @route("POST", r"/v3/contacts/lists/(\d+)/contacts/add")
    def add_to_list(self, request, list_id):
        body = request.json_object()
        key_name = next((name for name in ("emails", "ids", "extIds") if name in body), None)
        keys = body.get(key_name) if key_name else None
        if not isinstance(keys, list) or not keys:
            return error(400, "missing_parameter", "emails, ids or extIds is missing")
        if len(keys) > MAX_LIST_ADD:
            return error(400, "out_of_range", "A maximum of 150 contacts can be added at a time")
        with self.lock:
            if int(list_id) not in self.lists:
                return error(404, "document_not_found", "List ID does not exist")
            success, failure = self._add_members(int(list_id), key_name, keys)
        if not success:
            return error(400, "invalid_parameter", "Contact already in list and/or does not exist")
        return json_response(201, {"contacts": {"success": success, "failure": failure}})

    # Attributes

    @route("GET", r"/v3/contacts/attributes")
    def get_attributes(self, request):
        with self.lock:
            return json_response(200, {"attributes": [dict(a) for a in self.attributes.values()]})

    @route("POST", r"/v3/contacts/attributes/([^/]+)/([^/]+)")
    def create_attribute(self, request, category, name):
        body = request.json()
        if not body:
            return error(400, "missing_parameter", "No inputs in the body")
        if not isinstance(body, dict):
            raise BadJSON("a JSON object was expected")
        if category not in ATTRIBUTE_CATEGORIES:
            return error(400, "invalid_parameter", "Invalid attribute category: %s" % category)
        kind = body.get("type", "text")
        if kind not in ATTRIBUTE_TYPES:
            return error(400, "invalid_parameter", "Invalid attribute type: %s" % kind)
        with self.lock:
            if name.upper() in self.attributes:
                # Not confirmed by docs/crm-api.md section 5 (an open question there): the answer for a taken name.
                return error(400, "invalid_parameter", "Attribute name must be unique")
            definition = {"name": name.upper(), "category": category, "type": kind}
            if body.get("enumeration"):
                definition["enumeration"] = body["enumeration"]
            self.attributes[name.upper()] = definition
        return empty_response(201)

    def _duplicate(self, identifier, action="create"):
        return duplicate(identifier, action, self.settings["duplicate_code"])

    # Webhooks out: marketing events as Brevo sends them, authenticated with the
    # webhook's bearer token (Brevo signs nothing).

    def webhook_request(self, kind, details, url, secret):
        event = self._marketing_event(kind, details)
        with self.lock:
            batched = bool(self.settings["webhook_batched"])
        headers = {"Content-Type": "application/json"}
        if secret:
            headers["Authorization"] = "Bearer %s" % secret
        return json.dumps([event] if batched else event).encode(), headers

    def _marketing_event(self, kind, details):
        """The body of one event (developers.brevo.com/docs/marketing-webhooks):
        contact events carry the contact's lists; campaign events the campaign."""
        email = details.get("email") or self._email_of(details.get("id"))
        stamp = int(time.time())
        local = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
        event = {"id": WEBHOOK_ID, "email": email, "event": MARKETING_EVENTS[kind]}
        if kind == "deleted":
            # `ts` is CET-shifted in Brevo's samples; contact events have no ts_event.
            key = "sandbox-webhook-key"
            return {**event, "key": key, "list_id": details.get("list_ids", []), "date": local, "ts": stamp + 3600}
        campaign = {"camp_id": details.get("camp_id", 1), "campaign name": "Sandbox campaign", "tag": ""}
        times = {"date_sent": local, "date_event": local, "ts_sent": stamp, "ts_event": stamp, "ts": stamp + 3600}
        extra = {"sending_ip": "185.41.28.109"}
        if kind == "unsubscribed":
            extra["list_id"] = details.get("list_ids", [])
        else:
            extra["reason"] = details.get("reason", "undesired" if kind == "spam_complaint" else "unknown user")
        return {**event, **campaign, **times, **extra}

    def _email_of(self, contact_id):
        with self.lock:
            contact = self.by_id.get(int(contact_id)) if str(contact_id or "").isdigit() else None
            return contact["email"] if contact else ""

    # Validation

    def _clean_write(self, body, creating=False):
        """(attributes to write, None) or (None, Brevo's error) for a create or update body."""
        attributes, problem = self._clean_attributes(body.get("attributes") or {})
        if problem:
            return None, problem
        if body.get("ext_id") not in (None, ""):
            attributes["EXT_ID"] = str(body["ext_id"])
        problem = self._check_lists(body.get("listIds"))
        if not creating:
            problem = problem or self._check_lists(body.get("unlinkListIds"))
        return (None, problem) if problem else (attributes, None)

    def _clean_attributes(self, attributes):
        if not isinstance(attributes, dict):
            return None, error(400, "invalid_parameter", "attributes should be an object")
        cleaned = {}
        for name, value in attributes.items():
            key = str(name).upper()
            if key not in self.attributes and key not in IDENTIFIER_ATTRIBUTES:
                if self.settings["unknown_attributes"] == "reject":
                    return None, error(400, "invalid_parameter", "Attribute %s does not exist" % key)
                continue
            if isinstance(value, str) and len(value) > MAX_ATTRIBUTE_LENGTH:
                message = "Attribute %s exceeds the maximum length of %d characters" % (key, MAX_ATTRIBUTE_LENGTH)
                return None, error(400, "invalid_parameter", message)
            if key == "SMS" and value not in (None, ""):
                value = normalised_sms(value)
                if value is None:
                    return None, error(400, "invalid_parameter", "Invalid phone number")
            if key == "EMAIL" and value not in (None, ""):
                value = str(value).strip().lower()
            cleaned[key] = value
        return cleaned, None

    def _check_lists(self, list_ids):
        if list_ids is None:
            return None
        if not isinstance(list_ids, list) or not all(isinstance(i, int) for i in list_ids):
            return error(400, "invalid_parameter", "listIds should be an array of integers")
        if any(list_id not in self.lists for list_id in list_ids):
            return error(404, "document_not_found", "List ID does not exist")
        return None

    def _email_change_problem(self, email, contact):
        if not email or email == contact["email"]:
            return None
        if not valid_email(email):
            return error(400, "invalid_parameter", "Invalid email address")
        if email in self.by_email:
            return self._duplicate("email", "update")
        return None

    def _identifier_clash(self, attributes, contact):
        """The identifier (SMS, ext_id) this write would share with another contact, if any.
        updateEnabled does not resolve it (docs/crm-api.md section 1)."""
        for key, name in (("SMS", "SMS"), ("EXT_ID", "ext_id")):
            value = attributes.get(key)
            owner = self._by_attribute(key, value) if value else None
            if owner is not None and owner is not contact:
                return name
        return None

    # Records

    def _existing(self, email, attributes):
        """(the contact a create names, the identifier it matched on) or (None, None)."""
        if email:
            return self.by_email.get(email), "email"
        for key, name in (("EXT_ID", "ext_id"), ("SMS", "SMS")):
            if attributes.get(key):
                contact = self._by_attribute(key, attributes[key])
                if contact:
                    return contact, name
                return None, None
        return None, None

    def _by_attribute(self, key, value):
        return self.by_identifier[key].get(value)

    def _lookup(self, identifier, request):
        """(contact, None) or (None, the 400/404 answer) for /contacts/{identifier}."""
        identifier_type = request.query.get("identifierType")
        if identifier_type is not None and identifier_type not in IDENTIFIER_TYPES:
            return None, error(400, "invalid_parameter", "Invalid identifierType")
        contact = self._find(identifier, identifier_type)
        return (contact, None) if contact else (None, contact_not_found())

    def _find(self, identifier, identifier_type=None):
        if identifier_type is None:
            # Without identifierType: an email, a contact id, or a phone number (reference, get-contact-info).
            identifier_type = "email_id" if "@" in identifier else "phone_id"
            identifier_type = "contact_id" if identifier.isdigit() else identifier_type
        if identifier_type == "contact_id":
            return self.by_id.get(int(identifier)) if identifier.isdigit() else None
        if identifier_type == "email_id":
            return self.by_email.get(identifier.strip().lower())
        if identifier_type == "phone_id":
            sms = normalised_sms(identifier)
            return self._by_attribute("SMS", sms) if sms else None
        if identifier_type == "ext_id":
            return self._by_attribute("EXT_ID", identifier)
        return None

    def _find_entry(self, entry):
        if "id" in entry:
            return self.by_id.get(entry["id"]) if isinstance(entry["id"], int) else None
        if "sms" in entry:
            return self._find(str(entry["sms"]), "phone_id")
        if "email" in entry:
            return self.by_email.get(str(entry["email"]).strip().lower())
        return None

    def _new_contact(self, email, attributes, body):
        stamp = now()
        contact = {
            "id": self.next_id,
            "email": email,
            "attributes": {},
            "listIds": [],
            "emailBlacklisted": False,
            "smsBlacklisted": False,
            "whatsappBlacklisted": False,
            "createdAt": stamp,
            "modifiedAt": stamp,
        }
        self.next_id += 1
        self.by_id[contact["id"]] = contact
        self._apply(contact, attributes, body)
        return contact

    def _apply(self, contact, attributes, body):
        new_email = attributes.pop("EMAIL", None)
        if new_email and new_email != contact["email"]:
            self.by_email.pop(contact["email"], None)
            contact["email"] = new_email
        if contact["email"]:
            self.by_email[contact["email"]] = contact
        for key, value in attributes.items():
            self._set_attribute(contact, key, value)
        contact["listIds"] += [i for i in body.get("listIds") or [] if i not in contact["listIds"]]
        unlinked = body.get("unlinkListIds") or []
        contact["listIds"] = [i for i in contact["listIds"] if i not in unlinked]
        for flag in ("emailBlacklisted", "smsBlacklisted"):
            if flag in body:
                contact[flag] = bool(body[flag])
        contact["modifiedAt"] = now()

    def _set_attribute(self, contact, key, value):
        """Set (or with None or "", clear) one attribute, keeping the SMS and EXT_ID indexes right."""
        index = self.by_identifier.get(key)
        old = contact["attributes"].get(key)
        if index is not None and old is not None and index.get(old) is contact:
            del index[old]
        if value in (None, ""):
            contact["attributes"].pop(key, None)
            return
        contact["attributes"][key] = value
        if index is not None:
            index[value] = contact

    def _shown(self, contact, details=False):
        """A contact as GET /contacts lists it, or with `details` as GET /contacts/{id}
        answers: with `statistics`, which the SDK's model for that answer requires
        (its keys are all optional; the sandbox sends no campaigns)."""
        shown = {**contact, "attributes": dict(contact["attributes"]), "listIds": list(contact["listIds"])}
        if details:
            shown["statistics"] = {}
        return shown

    def _new_list(self, name, folder_id):
        created = {"id": self.next_list_id, "name": name, "folderId": folder_id, "createdAt": now()}
        self.lists[created["id"]] = created
        self.next_list_id += 1
        return created

    def _list_summary(self, item):
        members = [c for c in self.by_id.values() if item["id"] in c["listIds"]]
        blacklisted = sum(1 for c in members if c["emailBlacklisted"])
        return {
            "id": item["id"],
            "name": item["name"],
            "folderId": item["folderId"],
            "totalBlacklisted": blacklisted,
            "totalSubscribers": len(members) - blacklisted,
            "uniqueSubscribers": len(members),
        }

    def _add_members(self, list_id, key_name, keys):
        success, failure = [], []
        for key in keys:
            if key_name == "emails":
                contact = self.by_email.get(str(key).strip().lower())
            elif key_name == "ids":
                contact = self.by_id.get(key) if isinstance(key, int) else None
            else:
                contact = self._by_attribute("EXT_ID", str(key))
            if contact and list_id not in contact["listIds"]:
                contact["listIds"].append(list_id)
                contact["modifiedAt"] = now()
                success.append(key)
            else:
                failure.append(key)
        return success, failure


def paging(request, default, maximum):
    """(limit, offset, None) or (None, None, the out_of_range answer)."""
    try:
        limit, offset = int(request.query.get("limit", default)), int(request.query.get("offset", 0))
    except ValueError:
        return None, None, error(400, "invalid_parameter", "limit and offset must be integers")
    if not 0 <= limit <= maximum or offset < 0:
        return None, None, error(400, "out_of_range", "limit must be between 0 and %d" % maximum)
    return limit, offset, None


def moment(text):
    """(a UTC datetime, None) from modifiedSince (YYYY-MM-DDTHH:mm:ss.SSSZ, or with an
    offset), (None, None) without one, or (None, the 400)."""
    if not text:
        return None, None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None, error(400, "invalid_parameter", "modifiedSince must be a date-time as YYYY-MM-DDTHH:mm:ss.SSSZ")
    return (value if value.tzinfo else value.replace(tzinfo=UTC)), None
