"""Brevo's contacts API as crm-api.md section 1 describes it, in memory.

Settings (POST /_sandbox/brevo/settings): unknown_attributes "drop" (reported for
create) or "reject"; import_delay_seconds (how long an import takes to apply).
"""

import math
import re
import threading
from datetime import datetime, timezone

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from .base import Emulator, Limit, empty_response, json_response, route

API_KEY = "sandbox-brevo-key"
DEFAULT_ATTRIBUTES = {"EMAIL": "text", "FIRSTNAME": "text", "LASTNAME": "text", "SMS": "text"}
MAX_ATTRIBUTE_LENGTH = 5000
MAX_LIST_ADD = 150
MAX_IMPORT_BYTES = 10 * 1024 * 1024
# Brevo wants the country code; stored as digits with it, shown as Brevo shows them.
SMS_FORM = re.compile(r"^\+?[1-9]\d{6,14}$")
SMS_PUNCTUATION = re.compile(r"[\s\-.()]")


def now():
    return datetime.now(timezone.utc).isoformat()


def error(status, code, message, **extra):
    return json_response(status, {"code": code, "message": message, **extra})


class BrevoEmulator(Emulator):
    name = "brevo"
    SETTINGS = {"unknown_attributes": "drop", "import_delay_seconds": 2.0}

    def reset(self):
        with self.lock:
            self.settings = dict(self.SETTINGS)
            self.by_email, self.by_id, self.next_id = {}, {}, 1
            self.attributes = dict(DEFAULT_ATTRIBUTES)
            self.lists, self.next_list_id = {2: {"id": 2, "name": "Your first list", "folderId": 1}}, 3
            self.processes, self.next_process_id = {}, 1
            # General tier, for every /v3/contacts* endpoint (crm-api.md, rate limits).
            self.limits = [("second", Limit(10, 1)), ("hour", Limit(36_000, 3600))]

    def contacts(self):
        with self.lock:
            return [dict(contact) for contact in self.by_id.values()]

    # Server-level hooks

    def authenticate(self, request):
        key = request.header("api-key") or request.header("authorization").removeprefix("Bearer ").strip()
        if key != API_KEY:
            return error(401, "unauthorized", "Key not found")
        return None

    def bad_json(self, exc):
        return error(400, "bad_request", "Input must be a valid JSON object")

    def no_route(self, request, allowed_methods):
        if allowed_methods:
            return error(405, "method_not_allowed", "Method not allowed")
        return error(404, "document_not_found", "Not found")

    def server_error(self, status):
        return error(status, "internal_error", "Internal server error")

    def limits_for(self, request):
        return self.limits if request.path.startswith("/v3/contacts") else []

    def limit_headers(self, name, limit, remaining, wait):
        if name != "second":
            return {}
        return {
            "x-sib-ratelimit-limit": str(limit.requests),
            "x-sib-ratelimit-remaining": str(remaining),
            "x-sib-ratelimit-reset": str(max(1, math.ceil(wait))) if wait else "1",
        }

    def rate_limited(self, request, name, limit, wait):
        # No Retry-After: Brevo documents only the x-sib-ratelimit-* headers.
        response = error(429, "too_many_requests", "The expected rate limit is exceeded.")
        response.headers["x-sib-ratelimit-reset"] = str(max(1, math.ceil(wait)))
        return response

    def set_primary_limit(self, requests, seconds):
        with self.lock:
            self.limits = [] if requests is None else [("second", Limit(requests, seconds))]

    # Contacts

    @route("POST", r"/v3/contacts")
    def create(self, request):
        body = request.json()
        if not isinstance(body, dict):
            return self.bad_json(None)
        email = str(body.get("email") or "").strip().lower()
        with self.lock:
            attributes, problem = self._clean_body(body)
            if problem:
                return problem
            if not email and not attributes.get("SMS") and not body.get("ext_id"):
                return error(400, "missing_parameter", "Please provide Email or SMS attribute value to create user")
            if email and not valid_email(email):
                return error(400, "invalid_parameter", "Invalid email address")
            existing = self.by_email.get(email)
            clash = self._sms_owner(attributes.get("SMS"), existing)
            if clash:
                return error(
                    400,
                    "duplicate_parameter",
                    "Unable to create contact, SMS is already associated with another Contact",
                    metadata={"duplicate_identifiers": ["SMS"]},
                )
            if existing and not body.get("updateEnabled"):
                return error(
                    400,
                    "duplicate_parameter",
                    "Unable to create contact, email is already associated with another Contact",
                    metadata={"duplicate_identifiers": ["email"]},
                )
            if existing:
                self._apply(existing, attributes, body)
                return empty_response(204)
            contact = self._new_contact(email, attributes, body)
            return json_response(201, {"id": contact["id"]})

    @route("GET", r"/v3/contacts/([^/]+)")
    def get(self, request, identifier):
        with self.lock:
            contact = self._find(identifier, request.query.get("identifierType"))
            if contact is None:
                return error(404, "document_not_found", "Contact does not exist")
            return json_response(200, dict(contact))

    @route("PUT", r"/v3/contacts/([^/]+)")
    def update(self, request, identifier):
        body = request.json() or {}
        with self.lock:
            contact = self._find(identifier, request.query.get("identifierType"))
            if contact is None:
                return error(404, "document_not_found", "Contact does not exist")
            attributes, problem = self._clean_body(body)
            if problem:
                return problem
            if self._sms_owner(attributes.get("SMS"), contact):
                return error(400, "duplicate_parameter", "SMS is already associated with another Contact",
                             metadata={"duplicate_identifiers": ["SMS"]})
            self._apply(contact, attributes, body)
            return empty_response(204)

    @route("DELETE", r"/v3/contacts/([^/]+)")
    def delete(self, request, identifier):
        with self.lock:
            contact = self._find(identifier, request.query.get("identifierType"))
            if contact is None:
                return error(404, "document_not_found", "Contact does not exist")
            del self.by_id[contact["id"]]
            self.by_email.pop(contact["email"], None)
            return empty_response(204)

    @route("POST", r"/v3/contacts/batch")
    def batch_update(self, request):
        """Update only; one unknown contact fails the whole batch, nothing applied."""
        entries = (request.json() or {}).get("contacts") or []
        with self.lock:
            found, missing = [], []
            for index, entry in enumerate(entries):
                contact = self._find_entry(entry)
                (found if contact else missing).append((index, contact, entry))
            if missing:
                indexes = ",".join(str(index) for index, _, _ in missing)
                return error(404, "document_not_found", "No contact found for indexes %s" % indexes)
            cleaned = []
            for _, contact, entry in found:
                attributes, problem = self._clean_attributes(entry.get("attributes") or {})
                if problem:
                    return problem
                cleaned.append((contact, attributes, entry))
            for contact, attributes, entry in cleaned:
                self._apply(contact, attributes, entry)
            return empty_response(204)

    @route("POST", r"/v3/contacts/import")
    def import_contacts(self, request):
        if len(request.body) > MAX_IMPORT_BYTES:
            return error(400, "out_of_range", "File size exceeds the limit of 10 MB")
        body = request.json() or {}
        rows = body.get("jsonBody")
        if rows is None and body.get("fileBody"):
            rows = parse_csv_body(body["fileBody"])
        if not isinstance(rows, list):
            return error(400, "missing_parameter", "Please provide fileUrl, fileBody or jsonBody")
        if not body.get("listIds") and not body.get("newList"):
            return error(400, "missing_parameter", "listIds or newList is required")
        with self.lock:
            process_id = self.next_process_id
            self.next_process_id += 1
            self.processes[process_id] = {"id": process_id, "name": "import_contacts", "status": "queued"}
        delay = float(self.settings["import_delay_seconds"])
        threading.Timer(delay / 2, self._set_process, (process_id, "in_process")).start()
        threading.Timer(delay, self._run_import, (process_id, rows, body)).start()
        return json_response(202, {"processId": process_id})

    @route("GET", r"/v3/processes/(\d+)")
    def process(self, request, process_id):
        with self.lock:
            process = self.processes.get(int(process_id))
        if process is None:
            return error(404, "document_not_found", "Process does not exist")
        return json_response(200, dict(process))

    # Lists and attributes

    @route("POST", r"/v3/contacts/lists")
    def create_list(self, request):
        body = request.json() or {}
        if not body.get("name"):
            return error(400, "missing_parameter", "name is missing")
        with self.lock:
            list_id = self.next_list_id
            self.next_list_id += 1
            self.lists[list_id] = {"id": list_id, "name": body["name"], "folderId": body.get("folderId")}
        return json_response(201, {"id": list_id})

    @route("GET", r"/v3/contacts/lists")
    def get_lists(self, request):
        with self.lock:
            lists = [dict(item) for item in self.lists.values()]
        return json_response(200, {"lists": lists, "count": len(lists)})

    @route("POST", r"/v3/contacts/lists/(\d+)/contacts/add")
    def add_to_list(self, request, list_id):
        body = request.json() or {}
        keys = body.get("emails") or body.get("ids") or []
        if len(keys) > MAX_LIST_ADD:
            return error(400, "out_of_range", "You can add at most 150 contacts at a time")
        with self.lock:
            if int(list_id) not in self.lists:
                return error(404, "document_not_found", "List ID does not exist")
            success, failure = [], []
            for key in keys:
                contact = self.by_email.get(str(key).lower()) if "emails" in body else self.by_id.get(key)
                if contact and int(list_id) not in contact["listIds"]:
                    contact["listIds"].append(int(list_id))
                    success.append(key)
                else:
                    failure.append(key)
        if not success:
            return error(400, "invalid_parameter", "Contact already in list and/or does not exist")
        return json_response(201, {"contacts": {"success": success, "failure": failure, "total": len(keys)}})

    @route("GET", r"/v3/contacts/attributes")
    def get_attributes(self, request):
        with self.lock:
            attributes = [{"name": name, "category": "normal", "type": kind} for name, kind in self.attributes.items()]
        return json_response(200, {"attributes": attributes})

    @route("POST", r"/v3/contacts/attributes/(\w+)/([^/]+)")
    def create_attribute(self, request, category, name):
        body = request.json()
        if not body:
            return error(400, "missing_parameter", "No inputs in the body")
        if category not in ("normal", "transactional", "category", "calculated", "global"):
            return error(400, "invalid_parameter", "Invalid attribute category")
        with self.lock:
            if name.upper() in self.attributes:
                # Not confirmed by crm-api.md: the answer for an existing name.
                return error(400, "invalid_parameter", "Attribute name must be unique")
            self.attributes[name.upper()] = body.get("type", "text")
        return empty_response(201)

    # State

    def _clean_body(self, body):
        """(attributes, None), or (None, the error Brevo answers)."""
        problem = self._check_lists(body.get("listIds"))
        if problem:
            return None, problem
        return self._clean_attributes(body.get("attributes") or {})

    def _clean_attributes(self, attributes):
        if not isinstance(attributes, dict):
            return None, error(400, "invalid_parameter", "attributes should be an object")
        cleaned = {}
        for name, value in attributes.items():
            key = str(name).upper()
            if key not in self.attributes:
                if self.settings["unknown_attributes"] == "reject":
                    return None, error(400, "invalid_parameter", "Attribute %s does not exist" % key)
                continue
            if isinstance(value, str) and len(value) > MAX_ATTRIBUTE_LENGTH:
                return None, error(400, "invalid_parameter", "Attribute %s is too long" % key)
            if key == "SMS":
                value = SMS_PUNCTUATION.sub("", str(value))
                if not SMS_FORM.match(value):
                    return None, error(400, "invalid_parameter", "Invalid phone number")
                value = value.lstrip("+")
            cleaned[key] = value
        return cleaned, None

    def _check_lists(self, list_ids):
        for list_id in list_ids or []:
            if list_id not in self.lists:
                return error(404, "document_not_found", "List ID does not exist")
        return None

    def _sms_owner(self, sms, contact):
        if not sms:
            return None
        for other in self.by_id.values():
            if other is not contact and other["attributes"].get("SMS") == sms:
                return other
        return None

    def _new_contact(self, email, attributes, body):
        contact = {
            "id": self.next_id,
            "email": email,
            "attributes": dict(attributes),
            "listIds": list(body.get("listIds") or []),
            "emailBlacklisted": bool(body.get("emailBlacklisted", False)),
            "smsBlacklisted": bool(body.get("smsBlacklisted", False)),
            "createdAt": now(),
            "modifiedAt": now(),
        }
        self.next_id += 1
        self.by_id[contact["id"]] = contact
        if email:
            self.by_email[email] = contact
        return contact

    def _apply(self, contact, attributes, body):
        contact["attributes"].update(attributes)
        for list_id in body.get("listIds") or []:
            if list_id not in contact["listIds"]:
                contact["listIds"].append(list_id)
        for list_id in body.get("unlinkListIds") or []:
            if list_id in contact["listIds"]:
                contact["listIds"].remove(list_id)
        for flag in ("emailBlacklisted", "smsBlacklisted"):
            if flag in body:
                contact[flag] = bool(body[flag])
        contact["modifiedAt"] = now()

    def _find(self, identifier, identifier_type=None):
        from urllib.parse import unquote

        identifier = unquote(identifier)
        if identifier_type == "contact_id" or (identifier_type is None and identifier.isdigit()):
            return self.by_id.get(int(identifier)) if identifier.isdigit() else None
        if identifier_type == "phone_id":
            return next((c for c in self.by_id.values() if c["attributes"].get("SMS") == identifier.lstrip("+")), None)
        if identifier_type == "ext_id":
            return next((c for c in self.by_id.values() if c.get("ext_id") == identifier), None)
        return self.by_email.get(identifier.lower())

    def _find_entry(self, entry):
        if "id" in entry:
            return self.by_id.get(entry["id"])
        if "sms" in entry:
            return self._find(str(entry["sms"]), "phone_id")
        return self.by_email.get(str(entry.get("email", "")).lower())

    def _set_process(self, process_id, status):
        with self.lock:
            self.processes[process_id]["status"] = status

    def _run_import(self, process_id, rows, body):
        with self.lock:
            for row in rows:
                email = str(row.get("email", "")).strip().lower()
                if not valid_email(email):
                    continue
                # Import ignores unknown attributes (crm-api.md).
                attributes = {k.upper(): v for k, v in (row.get("attributes") or {}).items() if k.upper() in self.attributes}
                existing = self.by_email.get(email)
                if existing and body.get("updateExistingContacts", True):
                    self._apply(existing, attributes, body)
                elif not existing:
                    self._new_contact(email, attributes, body)
            self.processes[process_id]["status"] = "completed"


def valid_email(email):
    try:
        validate_email(email)
    except ValidationError:
        return False
    return True


def parse_csv_body(text):
    lines = [line.split(";") for line in str(text).splitlines() if line.strip()]
    if not lines:
        return []
    header = [name.strip().lower() for name in lines[0]]
    rows = []
    for cells in lines[1:]:
        values = dict(zip(header, cells))
        email = values.pop("email", "")
        rows.append({"email": email, "attributes": {k.upper(): v for k, v in values.items()}})
    return rows
