"""HubSpot's CRM contacts API (docs/crm-api.md section 2), in memory.

Settings: search_index_lag_seconds, how long a write stays invisible to search;
send_retry_after, whether a 429 carries Retry-After (not confirmed for the real API).
"""

import base64
import fnmatch
import hashlib
import hmac
import itertools
import json
import re
import time
from datetime import UTC, datetime

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from .base import (
    DailyQuota,
    Emulator,
    Limit,
    correlation_id,
    empty_response,
    gateway_page,
    json_response,
    route,
    whole_seconds,
)

ACCESS_TOKEN = "sandbox-hubspot-token"
MAX_INPUTS = 100
MAX_SEARCH_LIMIT = 200
MAX_SEARCH_RESULTS = 10_000
MAX_VALUE_LENGTH = 65_536
CONTACT_OBJECT_TYPE = "0-1"
# The legacy /crm/v3/objects/ paths and the date-versioned ones take the same bodies.
CONTACTS = r"/crm/(?:v3/objects|objects/2026-03)/(?:contacts|0-1)"
PROPERTIES = r"/crm/(?:v3/properties|properties/2026-03)/(?:contacts|0-1)"
LISTS = r"/crm/(?:v3/lists|lists/2026-03)"
LIFECYCLE_STAGES = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
)
BUILT_IN_PROPERTIES = {
    # name: (label, type, fieldType)
    "email": ("Email", "string", "text"),
    "firstname": ("First Name", "string", "text"),
    "lastname": ("Last Name", "string", "text"),
    "phone": ("Phone Number", "string", "phonenumber"),
    "mobilephone": ("Mobile Phone Number", "string", "phonenumber"),
    "company": ("Company Name", "string", "text"),
    "website": ("Website URL", "string", "text"),
    "address": ("Street Address", "string", "text"),
    "city": ("City", "string", "text"),
    "state": ("State/Region", "string", "text"),
    "zip": ("Postal Code", "string", "text"),
    "country": ("Country/Region", "string", "text"),
    "jobtitle": ("Job Title", "string", "text"),
    "lifecyclestage": ("Lifecycle Stage", "enumeration", "radio"),
    "hs_object_id": ("Record ID", "number", "number"),
    "createdate": ("Create Date", "datetime", "date"),
    "lastmodifieddate": ("Last Modified Date", "datetime", "date"),
}
READ_ONLY_PROPERTIES = ("hs_object_id", "lastmodifieddate")
# What GET, search and batch/read return when no `properties` are asked for.
DEFAULT_RETURNED = ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname")
ALWAYS_RETURNED = ("createdate", "hs_object_id", "lastmodifieddate")
PROPERTY_TYPES = ("string", "number", "date", "datetime", "enumeration", "bool", "phone_number")
FIELD_TYPES = (
    "text",
    "textarea",
    "number",
    "date",
    "select",
    "radio",
    "checkbox",
    "booleancheckbox",
    "phonenumber",
    "html",
    "file",
    "calculation_equation",
)
PROCESSING_TYPES = ("MANUAL", "DYNAMIC", "SNAPSHOT")
OPERATORS = (
    "EQ",
    "NEQ",
    "LT",
    "LTE",
    "GT",
    "GTE",
    "BETWEEN",
    "IN",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN",
    "NOT_CONTAINS_TOKEN",
)
QUERY_PROPERTIES = ("email", "firstname", "lastname", "phone", "company")
AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
    "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)
# 429 policies: (policyName, message, groupName). The group names are not confirmed.
POLICIES = {
    "window": (
        "TEN_SECONDLY_ROLLING",
        "You have reached your ten_secondly_rolling limit.",
        "publicapi:private-app-ten-secondly",
    ),
    "daily": ("DAILY", "You have reached your daily limit.", "publicapi:private-app-daily"),
    "search": ("SECONDLY", "You have reached your secondly limit.", "publicapi:crm-search-secondly"),
}


# Webhook events: what HubSpot's subscriptions send for each crmsync event kind.
SUBSCRIPTION_TYPES = {
    "unsubscribed": "contact.propertyChange",
    "hard_bounce": "contact.propertyChange",
    "deleted": "contact.deletion",
    "privacy_deleted": "contact.privacyDeletion",
    "merged": "contact.merge",
}
SUBSCRIPTION_IDS = {"unsubscribed": 101, "hard_bounce": 102, "deleted": 103, "privacy_deleted": 104, "merged": 105}
# (propertyName, propertyValue); the hard-bounce property and its value are not confirmed.
PROPERTY_EVENTS = {
    "unsubscribed": ("hs_email_optout", "true"),
    "hard_bounce": ("hs_email_hard_bounce_reason_enum", "UNKNOWN_USER"),
}
PORTAL_ID, APP_ID, SANDBOX_USER_ID = 62515, 1160452, 1
# HubSpot decodes these escapes in the URI before signing it (request-validation docs).
SIGNED_URI_ESCAPES = {
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


def signature_v3(secret, method, url, body, timestamp):
    """X-HubSpot-Signature-v3: base64(HMAC-SHA256(secret, method + URI + body + timestamp))."""
    uri = re.sub(r"%[0-9A-Fa-f]{2}", lambda match: SIGNED_URI_ESCAPES.get(match.group().upper(), match.group()), url)
    message = (method + uri).encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def numeric(value):
    """A record id as HubSpot's events carry it: a number."""
    text = str(value or "").strip()
    return int(text) if text.isdigit() else text


def crm_settings(url):
    """The HubSpot settings that point crmsync at this emulator when it is served at `url`."""
    return {"API_BASE_URL": url + "/hubspot", "API_KEY": ACCESS_TOKEN}


def now():
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error(status, category, message, **extra):
    body = {"status": "error", "message": message, "correlationId": correlation_id(), "category": category}
    return json_response(status, {**body, **extra})


def not_found():
    return error(404, "OBJECT_NOT_FOUND", "resource not found")


def invalid_json(request, message):
    """HubSpot's wording for a body its JSON reader refused, placed where the body ends."""
    lines = request.body.decode(errors="replace").splitlines() or [""]
    where = "line %d, column %d" % (len(lines), max(1, len(lines[-1])))
    return error(400, "VALIDATION_ERROR", "Invalid input JSON on %s: %s" % (where, message))


def missing_attributes(request, model, names):
    message = "Cannot build %s, some of required attributes are not set [%s]" % (model, ", ".join(names))
    return invalid_json(request, message)


def not_allowed(request, field, value, allowed):
    message = '%s: "%s" is not one of the allowed values: [%s]' % (field, value, ", ".join(allowed))
    return invalid_json(request, message)


def non_unique_id_property():
    # docs/crm-api.md section 2: batch update refuses email as idProperty, though upsert and single PATCH take it.
    message = "Unable to perform update/upsert by non-unique %s property" % CONTACT_OBJECT_TYPE
    return error(400, "VALIDATION_ERROR", message)


def detail(name, code, message):
    return {"isValid": False, "message": message, "error": code, "name": name}


def invalid_properties(details):
    """The per-property errors travel as JSON text inside the message."""
    text = json.dumps(details, separators=(",", ":"))
    return error(400, "VALIDATION_ERROR", "Property values were not valid: %s" % text)


def conflict(record_id):
    return error(409, "CONFLICT", "Contact already exists. Existing ID: %s" % record_id)


def stored_value(value):
    """Every HubSpot property value is a string; booleans are "true"/"false", null clears."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def valid_email(email):
    try:
        validate_email(email)
    except ValidationError:
        return False
    return True


def property_definition(name, label, kind, field_type, hubspot_defined=True, **extra):
    stamp = now()
    definition = {
        "updatedAt": stamp,
        "createdAt": stamp,
        "name": name,
        "label": label,
        "type": kind,
        "fieldType": field_type,
        "description": "",
        "groupName": "contactinformation",
        "options": [],
        "displayOrder": -1,
        "calculated": False,
        "externalOptions": False,
        "hasUniqueValue": name == "email",
        "hidden": False,
        "hubspotDefined": hubspot_defined,
        "modificationMetadata": {
            "archivable": not hubspot_defined,
            "readOnlyDefinition": hubspot_defined,
            "readOnlyValue": name in READ_ONLY_PROPERTIES,
        },
        "formField": True,
    }
    if name == "lifecyclestage":
        definition["options"] = [
            {"label": stage.title(), "value": stage, "displayOrder": order, "hidden": False}
            for order, stage in enumerate(LIFECYCLE_STAGES)
        ]
    definition.update(extra)
    return definition


class HubSpotEmulator(Emulator):
    name = "hubspot"
    primary_limit = "window"
    server_error_statuses = (500, 502, 504)
    SETTINGS = {"search_index_lag_seconds": 2.0, "send_retry_after": False}
    # HubSpot has no bounce or spam event: a hard bounce is a property change, a
    # spam complaint shows only as the opt-out it causes (docs/crm-api.md section 2).
    WEBHOOK_EVENTS = ("unsubscribed", "hard_bounce", "deleted", "privacy_deleted", "merged")

    def reset_records(self):
        self.event_ids = itertools.count(1001)
        self.records, self.by_email, self.next_id = {}, {}, 1
        self.index = {}  # record id -> [(monotonic time, the record as it was then)]
        self.properties = {name: property_definition(name, *spec) for name, spec in BUILT_IN_PROPERTIES.items()}
        self.lists, self.next_list_id = {}, 1

    def default_limits(self):
        # Free/Starter private app: 100 per rolling 10 s and 250,000 a day; search 4/s (docs/crm-api.md section 2).
        return {
            "window": Limit(100, 10, rolling=True),
            "daily": DailyQuota(250_000),
            "search": Limit(4, 1, rolling=True),
        }

    def make_primary_limit(self, requests, seconds):
        return Limit(requests, seconds, rolling=True)

    def check_settings(self, settings):
        lag = settings.get("search_index_lag_seconds", 0)
        if not isinstance(lag, (int, float)) or lag < 0:
            return "search_index_lag_seconds must be a number, 0 or more."
        if not isinstance(settings.get("send_retry_after", False), bool):
            return "send_retry_after must be true or false."
        return None

    def contacts(self):
        with self.lock:
            return [self._full(record) for record in self.records.values()]

    # Webhooks out (docs/crm-api.md section 2, "Webhooks")

    def webhook_request(self, kind, details, url, secret):
        """A JSON array of one event, signed v3 (and v1, as HubSpot also sends).
        details may fix "timestamp_ms" (the signed send time), "event_id",
        "occurred_at_ms" and "attempt_number", so tests can send a stale call or
        the same event again."""
        body = json.dumps([self._webhook_event(kind, details)], separators=(",", ":")).encode()
        timestamp = str(int(details.get("timestamp_ms") or time.time() * 1000))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "HubSpot Connect 2.0 (http://dev.hubspot.com/) - WebhooksExecutorDaemon",
            "X-HubSpot-Request-Timestamp": timestamp,
            "X-HubSpot-Signature-v3": signature_v3(secret, "POST", url, body, timestamp),
            "X-HubSpot-Signature-Version": "v1",
            "X-HubSpot-Signature": hashlib.sha256(secret.encode() + body).hexdigest(),
        }
        return body, headers

    def _webhook_event(self, kind, details):
        object_id = numeric(details.get("id"))
        event = {
            "eventId": int(details.get("event_id") or next(self.event_ids)),
            "subscriptionId": SUBSCRIPTION_IDS[kind],
            "portalId": PORTAL_ID,
            "appId": APP_ID,
            "occurredAt": int(details.get("occurred_at_ms") or time.time() * 1000),
            "subscriptionType": SUBSCRIPTION_TYPES[kind],
            "attemptNumber": int(details.get("attempt_number") or 0),
            "objectId": object_id,
            "changeSource": "CRM_UI",
            "sourceId": "userId:%d" % SANDBOX_USER_ID,
        }
        if kind in PROPERTY_EVENTS:
            event.update(zip(("propertyName", "propertyValue"), PROPERTY_EVENTS[kind]))
        if kind == "merged":
            primary = numeric(details.get("merged_into"))
            event.update(
                objectId=primary,
                primaryObjectId=primary,
                mergedObjectIds=[object_id],
                newObjectId=primary,
                numberOfPropertiesMoved=0,
            )
        return event

    # Server hooks

    def authenticate(self, request):
        if request.header("authorization") != "Bearer %s" % ACCESS_TOKEN:
            return error(401, "INVALID_AUTHENTICATION", AUTH_MESSAGE)
        return None

    def limits_for(self, request):
        # Search has its own per-second limit, outside the ten-second window and its headers.
        names = ["search"] if is_search(request) else ["window", "daily"]
        return [(name, self.limits.get(name)) for name in names]

    def limit_headers(self, name, limit, remaining, wait):
        if name == "window":
            return {
                "X-HubSpot-RateLimit-Max": str(limit.requests),
                "X-HubSpot-RateLimit-Remaining": str(remaining),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(limit.seconds * 1000)),
            }
        if name == "daily":
            return {
                "X-HubSpot-RateLimit-Daily": str(limit.requests),
                "X-HubSpot-RateLimit-Daily-Remaining": str(remaining),
            }
        return {}

    def rate_limited(self, request, name, limit, wait):
        policy, message, group = POLICIES[name]
        body = {
            "status": "error",
            "message": message,
            "errorType": "RATE_LIMIT",
            "correlationId": correlation_id(),
            "policyName": policy,
            "groupName": group,
        }
        with self.lock:
            retry_after = self.settings["send_retry_after"]
        return json_response(429, body, {"Retry-After": str(whole_seconds(wait))} if retry_after else None)

    def bad_json(self, exc):
        message = "Invalid input JSON on line %d, column %d: %s" % (exc.line, exc.column, exc)
        return error(400, "VALIDATION_ERROR", message)

    def no_route(self, request, allowed_methods):
        if allowed_methods:
            return error(405, "METHOD_NOT_ALLOWED", "HTTP method %s is not supported by this URL" % request.method)
        return not_found()

    def server_error(self, status):
        if status == 500:
            return error(500, "INTERNAL_ERROR", "internal error")
        # 502 and 504 come from the edge in front of the API, as an HTML page.
        return gateway_page(status, {502: "Bad Gateway", 504: "Gateway Time-out"}[status])

    # Single contact

    @route("POST", CONTACTS)
    def create(self, request):
        properties = request.json_object().get("properties")
        if not isinstance(properties, dict):
            return missing_attributes(request, "SimplePublicObjectInputForCreate", ["properties"])
        with self.lock:
            details = self._property_errors(properties)
            if details:
                return invalid_properties(details)
            existing = self.by_email.get(str(properties.get("email") or "").strip().lower())
            if existing:
                return conflict(existing["id"])
            return json_response(201, self._full(self._create(properties)))

    @route("GET", CONTACTS + r"/([^/]+)")
    def get(self, request, identifier):
        with self.lock:
            record = self._find(identifier, request.query.get("idProperty"))
            if record is None:
                return not_found()
            return json_response(200, self._view(record, requested_properties(request)))

    @route("PATCH", CONTACTS + r"/([^/]+)")
    def update(self, request, identifier):
        properties = request.json_object().get("properties")
        if not isinstance(properties, dict):
            return missing_attributes(request, "SimplePublicObjectInput", ["properties"])
        with self.lock:
            record = self._find(identifier, request.query.get("idProperty"))
            if record is None:
                return not_found()
            details = self._property_errors(properties)
            if details:
                return invalid_properties(details)
            owner = self.by_email.get(str(properties.get("email") or "").strip().lower())
            if owner is not None and owner is not record:
                return conflict(owner["id"])
            self._write(record, properties)
            return json_response(200, self._full(record))

    @route("DELETE", CONTACTS + r"/([^/]+)")
    def archive(self, request, identifier):
        # 204 whether or not the record exists (docs/crm-api.md section 2, "Delete and erase").
        with self.lock:
            record = self.records.get(identifier)
            if record is not None:
                self._remove(record)
        if record is not None:
            self.emit("deleted", id=identifier, email=record["properties"].get("email", ""))
        return empty_response(204)

    @route("POST", CONTACTS + r"/gdpr-delete")
    def gdpr_delete(self, request):
        body = request.json_object()
        if body.get("objectId") in (None, ""):
            return missing_attributes(request, "PublicGdprDeleteInput", ["objectId"])
        with self.lock:
            record = self._find(str(body["objectId"]), body.get("idProperty"))
            if record is not None:
                self._remove(record)
        if record is not None:
            self.emit("privacy_deleted", id=record["id"], email=record["properties"].get("email", ""))
        elif body.get("idProperty") != "email":
            # An unknown record id: not confirmed whether HubSpot answers 404 or 204.
            return not_found()
        # An unknown email is blocklisted, not an error (the SDK's purge docstring).
        return empty_response(204)

    @route("POST", CONTACTS + r"/merge")
    def merge(self, request):
        body = request.json_object()
        missing = [key for key in ("primaryObjectId", "objectIdToMerge") if body.get(key) in (None, "")]
        if missing:
            return missing_attributes(request, "PublicMergeInput", missing)
        primary_id, merged_id = str(body["primaryObjectId"]), str(body["objectIdToMerge"])
        if primary_id == merged_id:
            return error(400, "VALIDATION_ERROR", "Cannot merge a record with itself.")
        with self.lock:
            primary, merged = self.records.get(primary_id), self.records.get(merged_id)
            if primary is None or merged is None:
                return not_found()
            self._absorb(primary, merged)
            answer = self._full(primary)
        self.emit("merged", id=merged_id, merged_into=primary_id)
        return json_response(200, answer)

    def _absorb(self, primary, merged):
        """The primary keeps its values and takes the merged record's where it has
        none; the merged id then answers as missing (404, OBJECT_NOT_FOUND)."""
        self._remove(merged)
        extra = {
            name: value
            for name, value in merged["properties"].items()
            if value and not primary["properties"].get(name) and name not in ("email", *ALWAYS_RETURNED)
        }
        ids = [i for i in str(primary["properties"].get("hs_merged_object_ids") or "").split(";") if i]
        primary["properties"]["hs_merged_object_ids"] = ";".join([*ids, merged["id"]])
        self._write(primary, extra)

    # Search

    @route("POST", CONTACTS + r"/search")
    def search(self, request):
        body = request.json_object()
        spec, problem = search_spec(request, body)
        if problem:
            return problem
        with self.lock:
            lag = float(self.settings["search_index_lag_seconds"])
            snapshots = [self._indexed(record_id, time.monotonic() - lag) for record_id in self.records]
        matches = [s for s in snapshots if s and matches_search(s["properties"], spec)]
        matches = sorted_results(matches, spec["sorts"])
        page = matches[spec["after"] : spec["after"] + spec["limit"]]
        answer = {"total": len(matches), "results": [self._view(s, spec["properties"]) for s in page]}
        if spec["after"] + spec["limit"] < len(matches):
            answer["paging"] = {"next": {"after": str(spec["after"] + spec["limit"])}}
        return json_response(200, answer)

    # Batch

    @route("POST", CONTACTS + r"/batch/upsert")
    def batch_upsert(self, request):
        inputs, problem = batch_inputs(request, "SimplePublicObjectBatchInputUpsert", ("id", "properties"))
        if problem:
            return problem
        with self.lock:
            problem = self._upsert_problem(inputs)
            if problem:
                return problem
            upserted = [(str(item["id"]), self._upsert(item)) for item in inputs]
        results = [result for _, result in upserted if result is not None]
        missing = [key for key, result in upserted if result is None]
        # The order of results is not documented: clients must match them on the email.
        return with_missing(self.shuffled(results), missing)

    def _upsert(self, item):
        """The result for one upsert input, or None for a record ID that does not exist.

        idProperty is optional (the spec and the SDK's SimplePublicObjectBatchInputUpsert):
        without it `id` is the record ID, as everywhere idProperty is taken. A record ID
        is HubSpot's to give, so an unknown one cannot be created; it is reported as
        batch/update reports one (inferred: the docs do not say).
        """
        id_property = item.get("idProperty") or None
        record = self._find(str(item["id"]), id_property)
        if id_property is None:
            if record is None:
                return None
            self._write(record, item["properties"])
            return {**self._full(record), "new": False}
        properties = {**item["properties"], id_property: item["id"]}
        if record is None:
            return {**self._full(self._create(properties)), "new": True}
        self._write(record, properties)
        return {**self._full(record), "new": False}

    @route("POST", CONTACTS + r"/batch/create")
    def batch_create(self, request):
        inputs, problem = batch_inputs(request, "SimplePublicObjectInputForCreate", ("properties",))
        if problem:
            return problem
        # Per-record errors (207) only when every input carries an objectWriteTraceId (error-handling docs).
        traced = all(item.get("objectWriteTraceId") for item in inputs)
        with self.lock:
            failures = self._create_failures(inputs)
            if failures and not traced:
                return failures[0][1]
            failed = {index for index, _ in failures}
            fine = [item for index, item in enumerate(inputs) if index not in failed]
            results = [self._full(self._create(item["properties"])) for item in fine]
        if not failures:
            return json_response(201, batch_answer(results))
        errors = [traced_error(inputs[index], response) for index, response in failures]
        return json_response(207, {**batch_answer(results), "numErrors": len(errors), "errors": errors})

    @route("POST", CONTACTS + r"/batch/update")
    def batch_update(self, request):
        inputs, problem = batch_inputs(request, "SimplePublicObjectBatchInput", ("id", "properties"))
        if problem:
            return problem
        if any(item.get("idProperty") not in (None, "hs_object_id") for item in inputs):
            return non_unique_id_property()
        with self.lock:
            problem = self._duplicate_ids([str(item["id"]) for item in inputs])
            details = next((d for d in (self._property_errors(item["properties"]) for item in inputs) if d), None)
            if problem or details:
                return problem or invalid_properties(details)
            taken = self._taken_email(inputs)
            if taken:
                # The whole call is refused, nothing applied (docs/crm-api.md section 2).
                return conflict(taken)
            found = [(item, self.records.get(str(item["id"]))) for item in inputs]
            results = []
            for item, record in found:
                if record is not None:
                    self._write(record, item["properties"])
                    results.append(self._full(record))
            missing = [str(item["id"]) for item, record in found if record is None]
        return with_missing(self.shuffled(results), missing)

    def _taken_email(self, inputs):
        """The id of the first other record whose email an update input sets, or None."""
        for item in inputs:
            owner = self.by_email.get(str(item["properties"].get("email") or "").strip().lower())
            if owner is not None and owner["id"] != str(item["id"]):
                return owner["id"]
        return None

    @route("POST", CONTACTS + r"/batch/read")
    def batch_read(self, request):
        inputs, problem = batch_inputs(request, "SimplePublicObjectId", ("id",))
        if problem:
            return problem
        body = request.json_object()
        wanted = body.get("properties") or None
        with self.lock:
            found = [(str(item["id"]), self._find(str(item["id"]), body.get("idProperty"))) for item in inputs]
            results = [self._view(record, wanted) for _, record in found if record is not None]
            missing = [key for key, record in found if record is None]
        return with_missing(results, missing)

    @route("POST", CONTACTS + r"/batch/archive")
    def batch_archive(self, request):
        inputs, problem = batch_inputs(request, "SimplePublicObjectId", ("id",))
        if problem:
            return problem
        with self.lock:
            archived = [self.records.get(str(item["id"])) for item in inputs]
            for record in filter(None, archived):
                self._remove(record)
        for record in filter(None, archived):
            self.emit("deleted", id=record["id"], email=record["properties"].get("email", ""))
        return empty_response(204)

    # Properties

    @route("GET", PROPERTIES)
    def get_properties(self, request):
        with self.lock:
            return json_response(200, {"results": [dict(p) for p in self.properties.values()]})

    @route("GET", PROPERTIES + r"/([^/]+)")
    def get_property(self, request, name):
        with self.lock:
            found = self.properties.get(name)
            return json_response(200, dict(found)) if found else not_found()

    @route("POST", PROPERTIES)
    def create_property(self, request):
        body = request.json_object()
        missing = [key for key in ("name", "label", "type", "fieldType", "groupName") if not body.get(key)]
        if missing:
            return missing_attributes(request, "PropertyCreate", missing)
        for key, allowed in (("type", PROPERTY_TYPES), ("fieldType", FIELD_TYPES)):
            if body[key] not in allowed:
                return not_allowed(request, key, body[key], allowed)
        with self.lock:
            if body["name"] in self.properties:
                return error(409, "OBJECT_ALREADY_EXISTS", "Property named '%s' already exists." % body["name"])
            optional = ("description", "groupName", "options", "hasUniqueValue", "hidden", "displayOrder")
            extra = {key: body[key] for key in optional if key in body}
            definition = property_definition(
                body["name"], body["label"], body["type"], body["fieldType"], hubspot_defined=False, **extra
            )
            self.properties[body["name"]] = definition
            return json_response(201, dict(definition))

    # Lists

    @route("POST", LISTS)
    def create_list(self, request):
        body = request.json_object()
        missing = [key for key in ("name", "objectTypeId", "processingType") if not body.get(key)]
        if missing:
            return missing_attributes(request, "ListCreateRequest", missing)
        if body["processingType"] not in PROCESSING_TYPES:
            return not_allowed(request, "processingType", body["processingType"], PROCESSING_TYPES)
        if body["processingType"] == "DYNAMIC" and not body.get("filterBranch"):
            return error(400, "VALIDATION_ERROR", "A DYNAMIC list needs a filterBranch.")
        with self.lock:
            if any(item["name"] == body["name"] for item in self.lists.values()):
                # List names are unique in HubSpot; the exact answer is inferred
                # (docs/crm-api.md section 2 does not confirm it).
                return error(409, "CONFLICT", "A list with the name '%s' already exists." % body["name"])
            created = self._new_list(body)
            return json_response(200, {"list": list_view(created)})

    @route("GET", LISTS + r"/(\d+)")
    def get_list(self, request, list_id):
        with self.lock:
            found = self.lists.get(list_id)
            return json_response(200, {"list": list_view(found)}) if found else not_found()

    @route("GET", LISTS + r"/object-type-id/([^/]+)/name/([^/]+)")
    def get_list_by_name(self, request, object_type, name):
        with self.lock:
            wanted = (name, object_type)
            found = next((item for item in self.lists.values() if (item["name"], item["objectTypeId"]) == wanted), None)
            return json_response(200, {"list": list_view(found)}) if found else not_found()

    @route("PUT", LISTS + r"/(\d+)/memberships/add")
    def add_members(self, request, list_id):
        ids = request.json()
        if not isinstance(ids, list):
            return invalid_json(request, "a JSON array of record ids was expected")
        with self.lock:
            members = self.lists.get(list_id)
            if members is None:
                return not_found()
            if members["processingType"] == "DYNAMIC":
                return error(400, "VALIDATION_ERROR", "Records can only be added to MANUAL or SNAPSHOT lists.")
            wanted = list(dict.fromkeys(str(record_id) for record_id in ids))
            present = set(members["members"])
            added = [i for i in wanted if i in self.records and i not in present]
            members["members"] += added
            members["updatedAt"] = now()
            missing = [i for i in wanted if i not in self.records]
        # The spec spells the first key recordsIdsAdded; docs/crm-api.md section 2 leaves open whether the wire does.
        # This follows the SDKs' recordIdsAdded, matching recordIdsMissing and recordIdsRemoved.
        return json_response(200, {"recordIdsAdded": added, "recordIdsMissing": missing, "recordIdsRemoved": []})

    # Validation

    def _property_errors(self, properties):
        """HubSpot's per-property error details for these values, [] when all are fine."""
        details = []
        for name, value in properties.items():
            definition = self.properties.get(name)
            text = stored_value(value)
            if definition is None:
                details.append(detail(name, "PROPERTY_DOESNT_EXIST", 'Property "%s" does not exist' % name))
            elif name in READ_ONLY_PROPERTIES:
                # Inferred wording; docs/crm-api.md section 2 only says read-only properties cause an error.
                message = "%s is a read only property; its value cannot be set." % name
                details.append(detail(name, "READ_ONLY_VALUE", message))
            elif len(text) > MAX_VALUE_LENGTH:
                message = "value for %s is longer than %d characters" % (name, MAX_VALUE_LENGTH)
                details.append(detail(name, "INVALID_LONG_STRING", message))
            elif name == "email" and text and not valid_email(text.strip()):
                details.append(detail(name, "INVALID_EMAIL", "Email address %s is invalid" % text))
            elif definition["type"] == "enumeration" and text and not self._allowed_option(definition, text):
                allowed = ", ".join(option["value"] for option in definition["options"])
                message = "%s was not one of the allowed options: [%s]" % (text, allowed)
                details.append(detail(name, "INVALID_OPTION", message))
        return details

    def _allowed_option(self, definition, text):
        values = {option["value"] for option in definition["options"]}
        # Checkbox enumerations take several values separated by ";".
        return all(part in values for part in text.split(";"))

    def _duplicate_ids(self, ids):
        seen, twice = set(), []
        for key in ids:
            if key in seen and key not in twice:
                twice.append(key)
            seen.add(key)
        if twice:
            return error(400, "VALIDATION_ERROR", "Duplicate IDs found in batch input: [%s]" % ", ".join(twice))
        return None

    def _upsert_problem(self, inputs):
        """The 400 that rejects a whole upsert batch, or None; nothing is written before it."""
        for item in inputs:
            if item.get("idProperty") and not self._is_unique(item["idProperty"]):
                return non_unique_id_property()
        problem = self._duplicate_ids([self._key(item.get("idProperty"), item["id"]) for item in inputs])
        if problem:
            return problem
        for item in inputs:
            written = dict(item["properties"])
            if item.get("idProperty"):
                written[item["idProperty"]] = item["id"]
            details = self._property_errors(written)
            if details:
                return invalid_properties(details)
        return None

    def _is_unique(self, name):
        definition = self.properties.get(name)
        return bool(definition and definition["hasUniqueValue"])

    def _create_failures(self, inputs):
        """[(input index, the error response)] for a create batch: bad values, taken emails."""
        failures, emails = [], set()
        for index, item in enumerate(inputs):
            details = self._property_errors(item["properties"])
            email = str(item["properties"].get("email") or "").strip().lower()
            if details:
                failures.append((index, invalid_properties(details)))
            elif email in self.by_email:
                failures.append((index, conflict(self.by_email[email]["id"])))
            elif email and email in emails:
                # Two inputs with one email: 409 (docs/crm-api.md section 2); the wording here is not confirmed.
                message = "Contact already exists. Duplicate email in batch input: %s" % email
                failures.append((index, error(409, "CONFLICT", message)))
            emails.add(email)
        return failures

    # Records

    def _key(self, id_property, value):
        text = str(value).strip()
        return text.lower() if id_property == "email" else text

    def _find(self, identifier, id_property=None):
        if id_property in (None, "", "hs_object_id"):
            return self.records.get(identifier)
        if id_property == "email":
            return self.by_email.get(identifier.strip().lower())
        definition = self.properties.get(id_property)
        if definition is None or not definition["hasUniqueValue"]:
            return None
        return next((r for r in self.records.values() if r["properties"].get(id_property) == identifier), None)

    def _create(self, properties):
        record_id = str(self.next_id)
        self.next_id += 1
        stamp = now()
        record = {
            "id": record_id,
            "properties": {"createdate": stamp, "hs_object_id": record_id},
            "createdAt": stamp,
            "updatedAt": stamp,
            "archived": False,
        }
        self.records[record_id] = record
        self.index[record_id] = []
        self._write(record, properties)
        return record

    def _write(self, record, properties):
        values = record["properties"]
        old_email = values.get("email")
        for name, value in properties.items():
            text = stored_value(value)
            # An empty string clears a value (HubSpot docs, "Update a contact").
            values[name] = text.strip().lower() if name == "email" else text
        record["updatedAt"] = values["lastmodifieddate"] = now()
        if old_email and old_email != values.get("email"):
            self.by_email.pop(old_email, None)
        if values.get("email"):
            self.by_email[values["email"]] = record
        self._reindex(record)

    def _reindex(self, record):
        """Search sees a write only once it is older than the index lag; until then, the version before."""
        moment = time.monotonic()
        versions = self.index[record["id"]]
        versions.append((moment, self._full(record)))
        cutoff = moment - float(self.settings["search_index_lag_seconds"])
        visible = [i for i, (stamp, _) in enumerate(versions) if stamp <= cutoff]
        if visible:
            del versions[: visible[-1]]

    def _indexed(self, record_id, cutoff):
        versions = [snapshot for stamp, snapshot in self.index.get(record_id, []) if stamp <= cutoff]
        return versions[-1] if versions else None

    def _remove(self, record):
        del self.records[record["id"]]
        self.index.pop(record["id"], None)
        if self.by_email.get(record["properties"].get("email")) is record:
            del self.by_email[record["properties"]["email"]]

    def _full(self, record):
        return {**record, "properties": dict(record["properties"])}

    def _view(self, record, wanted=None):
        """The record with the properties a read returns: those asked for, else the defaults."""
        names = list(dict.fromkeys([*(wanted or DEFAULT_RETURNED), *ALWAYS_RETURNED]))
        properties = {name: record["properties"].get(name) or None for name in names}
        return {**record, "properties": properties}

    def _new_list(self, body):
        stamp = now()
        created = {
            "listId": str(self.next_list_id),
            "listVersion": 1,
            "name": body["name"],
            "objectTypeId": body["objectTypeId"],
            "processingType": body["processingType"],
            "processingStatus": "COMPLETE",
            "createdAt": stamp,
            "updatedAt": stamp,
            "filtersUpdatedAt": stamp,
            "members": [],
        }
        self.next_list_id += 1
        self.lists[created["listId"]] = created
        return created


def is_search(request):
    return request.method == "POST" and request.path.endswith("/search")


def requested_properties(request):
    """`properties` from the query string, repeated or comma-separated."""
    names = [name for value in request.params("properties") for name in value.split(",") if name]
    return names or None


def batch_inputs(request, model, required):
    """(inputs, None) or (None, the 400): 1 to 100 inputs, each with its required keys."""
    inputs = request.json_object().get("inputs")
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_INPUTS:
        # docs/crm-api.md section 2: more than 100 gives 400 VALIDATION_ERROR; this wording is not confirmed.
        return None, invalid_json(request, "inputs: size must be between 1 and %d" % MAX_INPUTS)
    for item in inputs:
        missing = [key for key in required if not isinstance(item, dict) or item.get(key) in (None, "")]
        if missing:
            return None, missing_attributes(request, model, missing)
        if "properties" in required and not isinstance(item["properties"], dict):
            return None, invalid_json(request, "properties: a JSON object was expected")
    return inputs, None


def batch_answer(results):
    stamp = now()
    return {"status": "COMPLETE", "results": results, "startedAt": stamp, "completedAt": stamp}


def traced_error(item, response):
    body = json.loads(response.body)
    return {
        "status": "error",
        "category": body["category"],
        "message": body["message"],
        "context": {"objectWriteTraceId": [str(item["objectWriteTraceId"])]},
        "errors": [],
    }


def with_missing(results, missing):
    if not missing:
        return json_response(200, batch_answer(results))
    errors = [
        {
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": "Could not get some CONTACT objects, they may be deleted or not exist. "
            "Check that ids are valid.",
            "context": {"ids": missing},
            "errors": [],
        }
    ]
    return json_response(207, {**batch_answer(results), "numErrors": len(errors), "errors": errors})


def list_view(item):
    return {**{key: value for key, value in item.items() if key != "members"}, "size": len(item["members"])}


# Search


def search_spec(request, body):
    """(the parsed search, None) or (None, the 400)."""
    try:
        limit, after = int(body.get("limit") or 10), int(body.get("after") or 0)
    except (TypeError, ValueError):
        return None, invalid_json(request, "limit and after must be integers")
    if not 0 < limit <= MAX_SEARCH_LIMIT:
        return None, error(400, "VALIDATION_ERROR", "limit must be between 1 and %d" % MAX_SEARCH_LIMIT)
    if after >= MAX_SEARCH_RESULTS:
        # Search pages through at most 10,000 results; the wording here is not confirmed.
        message = "Search results are limited to %d; after goes past them" % MAX_SEARCH_RESULTS
        return None, error(400, "VALIDATION_ERROR", message)
    groups = body.get("filterGroups") or []
    filters = [f for group in groups for f in (group.get("filters") or [])]
    unknown = sorted({str(f.get("operator")) for f in filters} - set(OPERATORS))
    if unknown:
        return None, not_allowed(request, "operator", unknown[0], OPERATORS)
    spec = {
        "groups": [group.get("filters") or [] for group in groups],
        "query": str(body.get("query") or "").strip().lower(),
        "sorts": body.get("sorts") or [],
        "properties": body.get("properties") or None,
        "limit": limit,
        "after": after,
    }
    return spec, None


def matches_search(properties, spec):
    """Filters within a group are ANDed; groups are ORed; `query` searches the default text properties."""
    texts = [str(properties.get(name) or "").lower() for name in QUERY_PROPERTIES]
    if spec["query"] and not any(spec["query"] in text for text in texts):
        return False
    if not spec["groups"]:
        return True
    return any(all(matches_filter(properties, f) for f in group) for group in spec["groups"])


def matches_filter(properties, spec):
    value = properties.get(spec.get("propertyName")) or None
    operator = spec.get("operator")
    if operator in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
        return (value is not None) == (operator == "HAS_PROPERTY")
    if operator in ("IN", "NOT_IN"):
        inside = value is not None and comparable(value) in [comparable(v) for v in spec.get("values") or []]
        return inside == (operator == "IN")
    if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        return contains_token(value, spec.get("value")) == (operator == "CONTAINS_TOKEN")
    if operator == "NEQ":
        return value is None or comparable(value) != comparable(spec.get("value"))
    if value is None:
        return False
    return compare(operator, comparable(value), comparable(spec.get("value")), comparable(spec.get("highValue")))


def compare(operator, value, wanted, high):
    try:
        if operator == "BETWEEN":
            return wanted <= value <= high
        checks = {"EQ": value == wanted, "LT": value < wanted, "LTE": value <= wanted, "GT": value > wanted}
        return value >= wanted if operator == "GTE" else checks[operator]
    except TypeError:
        return False


def comparable(value):
    """Numbers and dates as numbers (dates in epoch milliseconds), text without case."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000
    except ValueError:
        return text.lower()


def contains_token(value, wanted):
    if value is None or wanted is None:
        return False
    pattern = str(wanted).lower()
    tokens = [token for token in re.split(r"[\s,;]+", str(value).lower()) if token]
    if "*" in pattern:
        return any(fnmatch.fnmatchcase(token, pattern) for token in tokens)
    return pattern in tokens or any(pattern in re.split(r"[@.\-_]+", token) for token in tokens)


def sorted_results(records, sorts):
    """HubSpot sorts on one property; without sorts, by record id ascending."""
    if not sorts:
        return sorted(records, key=lambda r: int(r["id"]))
    first = sorts[0]
    if isinstance(first, str):
        name, descending = first.lstrip("-"), first.startswith("-")
    else:
        name, descending = first.get("propertyName", "hs_object_id"), first.get("direction") == "DESCENDING"

    def key(record):
        value = comparable(record["properties"].get(name) or None)
        return (value is None, str(type(value)), value if value is not None else 0)

    return sorted(records, key=key, reverse=descending)
