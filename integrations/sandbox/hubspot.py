"""HubSpot's CRM contacts API as crm-api.md section 2 describes it, in memory.

Settings (POST /_sandbox/hubspot/settings): search_index_lag_seconds (records this
young are invisible to search), send_retry_after (add Retry-After to 429s).
"""

import json
import time
from datetime import datetime, timezone

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from .base import Emulator, Limit, correlation_id, empty_response, json_response, route

ACCESS_TOKEN = "sandbox-hubspot-token"
MAX_INPUTS = 100
MAX_SEARCH_LIMIT = 200
MAX_VALUE_LENGTH = 65_536
DEFAULT_PROPERTIES = (
    "email", "firstname", "lastname", "phone", "mobilephone", "company", "website", "city", "state", "zip",
    "country", "address", "jobtitle", "lifecyclestage", "hs_object_id", "createdate", "lastmodifieddate",
)
# Paths are served under the legacy /crm/v3/objects/ and the date-versioned alias.
CONTACTS = r"/crm/(?:v3/objects|objects/2026-03)/contacts"


def now():
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def error(status, category, message, **extra):
    return json_response(
        status, {"status": "error", "message": message, "correlationId": correlation_id(), "category": category, **extra}
    )


def invalid_properties(details):
    """HubSpot's VALIDATION_ERROR: the per-property errors are JSON text inside the message."""
    return error(400, "VALIDATION_ERROR", "Property values were not valid: %s" % json.dumps(details))


class HubSpotEmulator(Emulator):
    name = "hubspot"
    SETTINGS = {"search_index_lag_seconds": 2.0, "send_retry_after": False}

    def reset(self):
        with self.lock:
            self.settings = dict(self.SETTINGS)
            self.records, self.by_email, self.next_id = {}, {}, 1
            self.indexed_at = {}
            self.properties = {name: property_definition(name) for name in DEFAULT_PROPERTIES}
            self.lists, self.next_list_id = {}, 1
            self.window = Limit(100, 10, rolling=True)
            self.daily = Limit(250_000, 86_400, rolling=True)
            self.search_limit = Limit(4, 1, rolling=True)

    def contacts(self):
        with self.lock:
            return [self._public(record) for record in self.records.values()]

    # Server-level hooks

    def authenticate(self, request):
        if request.header("authorization") != "Bearer %s" % ACCESS_TOKEN:
            return error(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
                "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            )
        return None

    def bad_json(self, exc):
        return error(400, "VALIDATION_ERROR", "Invalid input JSON on line 1: %s" % exc)

    def no_route(self, request, allowed_methods):
        if allowed_methods:
            return error(405, "METHOD_NOT_ALLOWED", "HTTP method %s is not supported." % request.method)
        return error(404, "OBJECT_NOT_FOUND", "resource not found")

    def server_error(self, status):
        if status == 500:
            return error(500, "INTERNAL_ERROR", "internal error")
        return error(status, "BAD_GATEWAY" if status == 502 else "SERVICE_UNAVAILABLE", "Service unavailable")

    def limits_for(self, request):
        if "/search" in request.path:
            return [("search", self.search_limit)]
        limits = [("daily", self.daily)]
        if self.window:
            limits.insert(0, ("window", self.window))
        return limits

    def limit_headers(self, name, limit, remaining, wait):
        if name == "window":
            return {
                "X-HubSpot-RateLimit-Max": str(limit.requests),
                "X-HubSpot-RateLimit-Remaining": str(remaining),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(limit.seconds * 1000)),
            }
        if name == "daily":
            return {"X-HubSpot-RateLimit-Daily": str(limit.requests), "X-HubSpot-RateLimit-Daily-Remaining": str(remaining)}
        return {}

    def rate_limited(self, request, name, limit, wait):
        policy = {"window": "TEN_SECONDLY_ROLLING", "daily": "DAILY", "search": "SECONDLY"}[name]
        message = {"DAILY": "You have reached your daily limit.", "SECONDLY": "You have reached your secondly limit."}.get(
            policy, "You have reached your ten_secondly_rolling limit."
        )
        response = json_response(
            429,
            {
                "status": "error",
                "message": message,
                "errorType": "RATE_LIMIT",
                "correlationId": correlation_id(),
                "policyName": policy,
                "groupName": "api-calls",
            },
        )
        if self.settings["send_retry_after"]:
            response.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
        return response

    def set_primary_limit(self, requests, seconds):
        with self.lock:
            self.window = None if requests is None else Limit(requests, seconds, rolling=True)

    # Single contact

    @route("POST", CONTACTS)
    def create(self, request):
        body = request.json() or {}
        properties = body.get("properties") or {}
        with self.lock:
            problem = self._validate(properties)
            if problem:
                return problem
            existing = self.by_email.get(str(properties.get("email", "")).lower())
            if existing:
                return error(409, "CONFLICT", "Contact already exists. Existing ID: %s" % existing["id"])
            return json_response(201, self._public(self._create(properties)))

    @route("GET", CONTACTS + r"/([^/]+)")
    def get(self, request, identifier):
        with self.lock:
            record = self._find(identifier, request.query.get("idProperty"))
            if record is None:
                return error(404, "OBJECT_NOT_FOUND", "resource not found")
            return json_response(200, self._public(record))

    @route("PATCH", CONTACTS + r"/([^/]+)")
    def update(self, request, identifier):
        properties = (request.json() or {}).get("properties") or {}
        with self.lock:
            record = self._find(identifier, request.query.get("idProperty"))
            if record is None:
                return error(404, "OBJECT_NOT_FOUND", "resource not found")
            problem = self._validate(properties, email_required=False) or self._email_taken(properties, record)
            if problem:
                return problem
            self._update(record, properties)
            return json_response(200, self._public(record))

    @route("POST", CONTACTS + r"/search")
    def search(self, request):
        body = request.json() or {}
        limit = int(body.get("limit") or 10)
        if limit > MAX_SEARCH_LIMIT:
            return error(400, "VALIDATION_ERROR", "limit must be less than or equal to 200")
        filters = [f for group in body.get("filterGroups") or [] for f in group.get("filters") or []]
        visible_before = time.monotonic() - float(self.settings["search_index_lag_seconds"])
        with self.lock:
            matches = [
                record
                for record in self.records.values()
                if self.indexed_at[record["id"]] <= visible_before and all(matches_filter(record, f) for f in filters)
            ]
            after = int(body.get("after") or 0)
            page = matches[after : after + limit]
            answer = {"total": len(matches), "results": [self._public(record) for record in page]}
            if after + limit < len(matches):
                answer["paging"] = {"next": {"after": str(after + limit)}}
            return json_response(200, answer)

    # Batch

    @route("POST", CONTACTS + r"/batch/upsert")
    def batch_upsert(self, request):
        inputs, problem = self._inputs(request)
        if problem:
            return problem
        with self.lock:
            for item in inputs:
                if item.get("idProperty") != "email" or not item.get("id") or "properties" not in item:
                    return error(400, "VALIDATION_ERROR", "Each input needs id, idProperty and properties.")
            duplicate = duplicates([str(item["id"]).lower() for item in inputs])
            if duplicate:
                return error(400, "VALIDATION_ERROR", "Duplicate IDs found in batch input: %s" % duplicate)
            for item in inputs:
                problem = self._validate({**item["properties"], "email": item["id"]})
                if problem:
                    return problem
            results = []
            for item in inputs:
                email = str(item["id"]).lower()
                record = self.by_email.get(email)
                if record:
                    self._update(record, item["properties"])
                    results.append({**self._public(record), "new": False})
                else:
                    record = self._create({**item["properties"], "email": email})
                    results.append({**self._public(record), "new": True})
        return json_response(200, batch_answer(self.shuffled(results)))

    @route("POST", CONTACTS + r"/batch/create")
    def batch_create(self, request):
        inputs, problem = self._inputs(request)
        if problem:
            return problem
        traced = all(item.get("objectWriteTraceId") for item in inputs)
        with self.lock:
            for item in inputs:
                problem = self._validate(item.get("properties") or {})
                if problem:
                    return problem
            emails = [str((item.get("properties") or {}).get("email", "")).lower() for item in inputs]
            duplicate = duplicates(emails)
            if duplicate:
                return error(409, "CONFLICT", "Contact already exists. Existing ID: %s" % duplicate)
            taken = [(item, self.by_email[email]) for item, email in zip(inputs, emails) if email in self.by_email]
            if taken and not traced:
                # Without a trace id per input, the first failure fails the whole call.
                return error(409, "CONFLICT", "Contact already exists. Existing ID: %s" % taken[0][1]["id"])
            taken_ids = {id(item) for item, _ in taken}
            results = [self._public(self._create(item["properties"])) for item in inputs if id(item) not in taken_ids]
            errors = [
                {"status": "error", "category": "CONFLICT", "message": "Contact already exists. Existing ID: %s" % record["id"],
                 "context": {"objectWriteTraceId": [item["objectWriteTraceId"]]}}
                for item, record in taken
            ]
        if errors:
            return json_response(207, {**batch_answer(results), "numErrors": len(errors), "errors": errors})
        return json_response(201, batch_answer(results))

    @route("POST", CONTACTS + r"/batch/update")
    def batch_update(self, request):
        inputs, problem = self._inputs(request)
        if problem:
            return problem
        if any(item.get("idProperty") == "email" for item in inputs):
            return error(400, "VALIDATION_ERROR", "Unable to perform update/upsert by non-unique 0-1 property")
        with self.lock:
            duplicate = duplicates([str(item.get("id")) for item in inputs])
            if duplicate:
                return error(400, "VALIDATION_ERROR", "Duplicate IDs found in batch input: %s" % duplicate)
            found = [(item, self.records.get(str(item.get("id")))) for item in inputs]
            for item, record in found:
                problem = self._validate(item.get("properties") or {}, email_required=False)
                if problem:
                    return problem
            results = []
            for item, record in found:
                if record:
                    self._update(record, item.get("properties") or {})
                    results.append(self._public(record))
            missing = [item.get("id") for item, record in found if record is None]
        return self._with_missing(results, missing)

    @route("POST", CONTACTS + r"/batch/read")
    def batch_read(self, request):
        inputs, problem = self._inputs(request)
        if problem:
            return problem
        id_property = (request.json() or {}).get("idProperty")
        with self.lock:
            found = [(item.get("id"), self._find(str(item.get("id")), id_property)) for item in inputs]
            results = [self._public(record) for _, record in found if record]
            missing = [key for key, record in found if record is None]
        return self._with_missing(results, missing)

    # Properties and lists

    @route("GET", r"/crm/v3/properties/contacts")
    def get_properties(self, request):
        with self.lock:
            return json_response(200, {"results": list(self.properties.values())})

    @route("POST", r"/crm/v3/properties/contacts")
    def create_property(self, request):
        body = request.json() or {}
        for key in ("name", "label", "type", "fieldType", "groupName"):
            if not body.get(key):
                return error(400, "VALIDATION_ERROR", "Property %s is required." % key)
        with self.lock:
            if body["name"] in self.properties:
                return error(409, "OBJECT_ALREADY_EXISTS", "Property named '%s' already exists." % body["name"])
            self.properties[body["name"]] = {**property_definition(body["name"]), **body}
            return json_response(201, self.properties[body["name"]])

    @route("POST", r"/crm/v3/lists")
    def create_list(self, request):
        body = request.json() or {}
        if not body.get("name") or body.get("objectTypeId") != "0-1":
            return error(400, "VALIDATION_ERROR", "name and objectTypeId 0-1 are required.")
        with self.lock:
            list_id = str(self.next_list_id)
            self.next_list_id += 1
            self.lists[list_id] = {"listId": list_id, "name": body["name"], "processingType": body.get("processingType", "MANUAL"), "members": []}
            return json_response(200, {"list": {k: v for k, v in self.lists[list_id].items() if k != "members"}})

    @route("PUT", r"/crm/v3/lists/(\d+)/memberships/add")
    def add_members(self, request, list_id):
        ids = request.json()
        if not isinstance(ids, list):
            return error(400, "VALIDATION_ERROR", "The body must be an array of record ids.")
        with self.lock:
            members = self.lists.get(list_id)
            if members is None:
                return error(404, "OBJECT_NOT_FOUND", "List %s does not exist." % list_id)
            added = [str(i) for i in ids if str(i) in self.records and str(i) not in members["members"]]
            members["members"] += added
            missing = [str(i) for i in ids if str(i) not in self.records]
        # The spec spells it recordsIdsAdded; this follows the SDK's recordIdsAdded (crm-api.md: unconfirmed).
        return json_response(200, {"recordIdsAdded": added, "recordIdsMissing": missing, "recordIdsRemoved": []})

    # State

    def _inputs(self, request):
        inputs = (request.json() or {}).get("inputs")
        if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_INPUTS:
            # The exact text for more than 100 inputs is not confirmed (crm-api.md).
            return None, error(400, "VALIDATION_ERROR", "Invalid input JSON: inputs: size must be between 1 and 100")
        return inputs, None

    def _validate(self, properties, email_required=True):
        details = []
        for name, value in properties.items():
            if name not in self.properties:
                details.append({"isValid": False, "message": 'Property "%s" does not exist' % name,
                                "error": "PROPERTY_DOESNT_EXIST", "name": name})
            elif isinstance(value, str) and len(value) > MAX_VALUE_LENGTH:
                details.append({"isValid": False, "message": "%s is longer than %d characters" % (name, MAX_VALUE_LENGTH),
                                "error": "INVALID_LONG_STRING", "name": name})
        email = properties.get("email")
        if email is not None or email_required:
            try:
                validate_email(str(email or ""))
            except ValidationError:
                details.append({"isValid": False, "message": "Email address %s is invalid" % email,
                                "error": "INVALID_EMAIL", "name": "email"})
        return invalid_properties(details) if details else None

    def _email_taken(self, properties, record):
        email = str(properties.get("email", "")).lower()
        other = self.by_email.get(email)
        if email and other and other is not record:
            return error(409, "CONFLICT", "Contact already exists. Existing ID: %s" % other["id"])
        return None

    def _create(self, properties):
        record_id = str(self.next_id)
        self.next_id += 1
        stamp = now()
        record = {"id": record_id, "properties": {}, "createdAt": stamp, "updatedAt": stamp, "archived": False}
        self._update(record, properties)
        record["properties"].update({"hs_object_id": record_id, "createdate": stamp})
        self.records[record_id] = record
        self.indexed_at[record_id] = time.monotonic()
        return record

    def _update(self, record, properties):
        old_email = record["properties"].get("email")
        for name, value in properties.items():
            # An empty string clears a value (HubSpot docs).
            record["properties"][name] = str(value).lower() if name == "email" else str(value)
        record["updatedAt"] = record["properties"]["lastmodifieddate"] = now()
        if old_email and old_email != record["properties"].get("email"):
            self.by_email.pop(old_email, None)
        if record["properties"].get("email"):
            self.by_email[record["properties"]["email"]] = record
        self.indexed_at[record["id"]] = time.monotonic()

    def _find(self, identifier, id_property=None):
        from urllib.parse import unquote

        identifier = unquote(identifier)
        if id_property == "email":
            return self.by_email.get(identifier.lower())
        return self.records.get(identifier)

    def _public(self, record):
        return {**record, "properties": dict(record["properties"])}

    def _with_missing(self, results, missing):
        if not missing:
            return json_response(200, batch_answer(results))
        errors = [{"status": "error", "category": "OBJECT_NOT_FOUND", "message": "Could not get some CONTACT objects, they may be deleted or not exist.",
                   "context": {"ids": [str(key) for key in missing]}}]
        return json_response(207, {**batch_answer(results), "numErrors": len(errors), "errors": errors})


def property_definition(name):
    return {"name": name, "label": name.title(), "type": "string", "fieldType": "text", "groupName": "contactinformation",
            "hidden": False, "hasUniqueValue": name == "email"}


def batch_answer(results):
    stamp = now()
    return {"status": "COMPLETE", "results": results, "startedAt": stamp, "completedAt": stamp}


def duplicates(keys):
    seen = set()
    for key in keys:
        if key in seen:
            return key
        seen.add(key)
    return None


def matches_filter(record, spec):
    value = record["properties"].get(spec.get("propertyName"))
    operator, wanted = spec.get("operator"), spec.get("value")
    if spec.get("propertyName") == "email" and wanted is not None:
        wanted = str(wanted).lower()
    if operator == "EQ":
        return value is not None and str(value) == str(wanted)
    if operator == "NEQ":
        return str(value) != str(wanted)
    if operator == "HAS_PROPERTY":
        return bool(value)
    if operator == "NOT_HAS_PROPERTY":
        return not value
    if operator == "IN":
        return str(value) in [str(v) for v in spec.get("values") or []]
    if operator == "CONTAINS_TOKEN":
        return wanted is not None and str(wanted).strip("*").lower() in str(value or "").lower()
    return False
