"""A Mautic 5 instance's REST API as docs/crm-api.md section 3 describes it, in memory.

Settings (POST /_sandbox/mautic/settings): api_enabled and basic_auth_enabled (both
off by default in a real Mautic, on here so the demo works), token_lifetime_seconds,
rate_limit_per_hour (0: off, Mautic's default), non_atomic_uniqueness (check then
insert with a pause between, as Mautic does, so tests can show crmsync never races
two creates for one email).
"""

import base64
import secrets
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from .base import Emulator, Limit, json_response, route

USERNAME = "sandbox-mautic-user"
PASSWORD = "sandbox-mautic-password"
CLIENT_ID = "1_sandbox-client"
CLIENT_SECRET = "sandbox-mautic-client-secret"
VERSION = "5.1.0"
BATCH_LIMIT = 200
# Mautic's own words, as its API answers them.
BASIC_AUTH_DISABLED = (
    "Basic Auth disabled. You need to enable HTTP basic auth in the API settings of Mautic's Configuration."
)
SERVER_ERROR = (
    "Looks like I encountered an error (error #%d). If I do it again, please report me to the system administrator!"
)
CORE_FIELDS = ("email", "firstname", "lastname", "phone", "mobile", "company", "position", "website", "city", "country")


def crm_settings(url):
    """The Mautic settings that point crmsync at this emulator when it is served at `url`."""
    # Basic auth with the placeholder user: the empty client overrides a real
    # OAuth2 client configured beside the sandbox, which would take precedence.
    return {
        "BASE_URL": url + "/mautic",
        "USERNAME": USERNAME,
        "PASSWORD": PASSWORD,
        "CLIENT_ID": "",
        "CLIENT_SECRET": "",
    }


def now():
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def api_error(status, message, details=None):
    """What CommonApiController::returnError() builds: `details` (the form's errors
    by field, or an empty list) and a null `type`."""
    return {"code": status, "message": message, "details": details or [], "type": None}


def errors(status, message, details=None):
    return json_response(status, {"errors": [api_error(status, message, details)]})


def auth_error(status, message, kind):
    """The API and OAuth2 listeners' errors (ApiSubscriber): a type, no details."""
    return json_response(status, {"errors": [{"message": message, "code": status, "type": kind}]})


def email_problem(value):
    """Why Mautic's EmailValidator refuses this email, or None. An empty email is
    fine: the core email field is not required (FieldModel::$coreFields)."""
    if value in (None, ""):
        return None
    text = str(value)
    try:
        validate_email(text)
    except ValidationError:
        return "%s is invalid." % text
    if not text.isascii():
        # filter_var(FILTER_VALIDATE_EMAIL) takes ASCII only (docs/crm-api.md, section 3).
        return "%s is invalid." % text
    if any(character in text for character in "^&*%"):
        return "%s has characters not allowed in email addresses." % text
    return None


def php_array(by_index):
    """{index: value} as PHP's json_encode writes an array: a JSON list when the
    keys run 0..n-1 in order, else an object keyed by index."""
    keys = list(by_index)
    if keys == list(range(len(keys))):
        return [by_index[key] for key in keys]
    return {str(key): value for key, value in by_index.items()}


class MauticEmulator(Emulator):
    name = "mautic"
    SETTINGS = {
        "api_enabled": True,
        "basic_auth_enabled": True,
        "token_lifetime_seconds": 3600,
        "rate_limit_per_hour": 0,
        "non_atomic_uniqueness": False,
    }

    def reset(self):
        with self.lock:
            self.settings = dict(self.SETTINGS)
            self.records, self.by_email, self.next_id = {}, {}, 1
            self.fields = {
                alias: {"alias": alias, "label": alias.title(), "type": "text", "group": "core"}
                for alias in CORE_FIELDS
            }
            self.segments, self.next_segment_id = {}, 1
            self.tokens = {}
            self.limit = None

    def contacts(self):
        with self.lock:
            return [self._public(record) for record in self.records.values()]

    # Server-level hooks

    def dispatch(self, request):
        response = super().dispatch(request)
        response.headers["Mautic-Version"] = VERSION
        return response

    def authenticate(self, request):
        # ApiSubscriber refuses every /api and /oauth request while the API is off,
        # the token endpoint included (RequestHelper::isApiRequest).
        if not self.settings["api_enabled"]:
            return auth_error(
                403,
                "API disabled. You need to enable the API in the API settings of Mautic's Configuration.",
                "api_disabled",
            )
        scheme, _, credentials = request.header("authorization").partition(" ")
        if scheme.lower() == "basic" and not self.settings["basic_auth_enabled"]:
            return auth_error(403, BASIC_AUTH_DISABLED, "access_denied")
        if request.path == "/oauth/v2/token":
            return None
        if scheme.lower() == "basic":
            return self._check_basic(credentials)
        if scheme.lower() == "bearer":
            expires = self.tokens.get(credentials.strip())
            if expires is None or expires < time.monotonic():
                return auth_error(401, "The access token provided is invalid.", "invalid_grant")
            return None
        return auth_error(401, "API authorization denied.", "access_denied")

    def _check_basic(self, credentials):
        try:
            user, _, password = base64.b64decode(credentials).decode().partition(":")
        except ValueError:
            user, password = "", ""
        if (user, password) != (USERNAME, PASSWORD):
            return auth_error(401, "Authorization denied, invalid credentials.", "access_denied")
        return None

    def bad_json(self, exc):
        return errors(400, "Request body contains invalid JSON.")

    def no_route(self, request, allowed_methods):
        return errors(405 if allowed_methods else 404, "Requested URL not found: /%s" % request.path.strip("/"))

    def server_error(self, status):
        return errors(status, SERVER_ERROR % status)

    def limits_for(self, request):
        if not request.path.startswith("/api"):
            return []
        if self.limit is None and self.settings["rate_limit_per_hour"]:
            self.limit = Limit(int(self.settings["rate_limit_per_hour"]), 3600)
        return [("hour", self.limit)] if self.limit else []

    def rate_limited(self, request, name, limit, wait):
        return json_response(
            429,
            {
                "errors": [
                    {
                        "code": 429,
                        "message": "You exceeded the rate limit of %d API calls per hour." % limit.requests,
                        "details": [],
                    }
                ]
            },
        )

    def limit_headers(self, name, limit, remaining, wait):
        return {
            "X-RateLimit-Limit": str(limit.requests),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(int(time.time() + wait)),
        }

    def set_primary_limit(self, requests, seconds):
        with self.lock:
            self.limit = None if requests is None else Limit(requests, seconds)

    # OAuth2

    @route("POST", r"/oauth/v2/token")
    def token(self, request):
        form = {key: values[0] for key, values in parse_qs(request.body.decode()).items()}
        if form.get("grant_type") != "client_credentials" or (form.get("client_id"), form.get("client_secret")) != (
            CLIENT_ID,
            CLIENT_SECRET,
        ):
            return auth_error(400, "The client credentials are invalid", "invalid_client")
        token = secrets.token_urlsafe(24)
        lifetime = int(self.settings["token_lifetime_seconds"])
        with self.lock:
            self.tokens[token] = time.monotonic() + lifetime
        return json_response(
            200, {"access_token": token, "expires_in": lifetime, "token_type": "bearer", "scope": None}
        )

    # Contacts

    @route("POST", r"/api/contacts/new")
    def create(self, request):
        body = request.json()
        with self.lock:
            problem = self._validate(body)
            if problem:
                return json_response(400, {"errors": [problem]})
            record, created = self._upsert(body)
        response = json_response(201 if created else 200, {"contact": self._public(record)})
        if created:
            # generateUrl(..., true): PHP turns true into 1, Symfony's ABSOLUTE_PATH, so
            # a path below the instance's base path (here /mautic), not a full URL.
            response.headers["Location"] = "/%s/api/contacts/%d" % (self.name, record["id"])
        return response

    @route("GET", r"/api/contacts/(\d+)")
    def get(self, request, contact_id):
        with self.lock:
            record = self.records.get(int(contact_id))
            if record is None:
                return errors(404, "Item was not found.")
            return json_response(200, {"contact": self._public(record)})

    @route("GET", r"/api/contacts")
    def search(self, request):
        term = request.query.get("search", "")
        with self.lock:
            if term.startswith("email:"):
                found = [r for r in self.records.values() if r["fields"].get("email") == term[6:].lower()]
            else:
                found = list(self.records.values())
            return json_response(200, {"total": len(found), "contacts": {str(r["id"]): self._public(r) for r in found}})

    @route("PATCH", r"/api/contacts/(\d+)/edit")
    def patch(self, request, contact_id):
        body = request.json()
        with self.lock:
            record = self.records.get(int(contact_id))
            if record is None:
                return errors(404, "Item was not found.")
            problem = self._validate(body)
            if problem:
                return json_response(400, {"errors": [problem]})
            self._write(record, body, blank_missing=False)
            return json_response(200, {"contact": self._public(record)})

    @route("PUT", r"/api/contacts/(\d+)/edit")
    def put(self, request, contact_id):
        """PUT creates a missing contact and blanks the fields left out."""
        body = request.json()
        with self.lock:
            problem = self._validate(body)
            if problem:
                return json_response(400, {"errors": [problem]})
            record = self.records.get(int(contact_id))
            if record is None:
                record, _ = self._upsert(body)
                return json_response(201, {"contact": self._public(record)})
            self._write(record, body, blank_missing=True)
            return json_response(200, {"contact": self._public(record)})

    @route("POST", r"/api/contacts/batch/new")
    def batch_new(self, request):
        items = request.json()
        if not isinstance(items, list):
            return errors(400, "Request body must be an array of entities.")
        if len(items) > BATCH_LIMIT:
            # Mautic answers this with its default error code, 500 (docs/crm-api.md section 3).
            return errors(500, "A max of 200 entities are supported at a time.")
        contacts, codes, problems = {}, [], {}
        for index, item in enumerate(items):
            with self.lock:
                problem = self._validate(item)
                if problem:
                    codes.append(problem["code"])
                    problems[index] = problem
                    continue
                record, created = self._upsert(item)
            codes.append(201 if created else 200)
            contacts[index] = self._public(record)
        # CommonApiController::newEntitiesAction: failed items are left out of
        # `contacts`, and `errors` is there only when an item failed.
        body = {"contacts": php_array(contacts), "statusCodes": codes}
        if problems:
            body["errors"] = php_array(problems)
        return json_response(201, body)

    @route("PATCH", r"/api/contacts/batch/edit")
    def batch_edit(self, request):
        items = request.json() or []
        contacts, codes = [], []
        with self.lock:
            for item in items:
                record = self.records.get(int(item.get("id") or 0))
                if record is None:
                    codes.append(404)
                    continue
                self._write(record, item, blank_missing=False)
                codes.append(200)
                contacts.append(self._public(record))
        return json_response(200, {"contacts": contacts, "statusCodes": codes})

    # Fields and segments

    @route("GET", r"/api/fields/contact")
    def get_fields(self, request):
        with self.lock:
            return json_response(200, {"total": len(self.fields), "fields": list(self.fields.values())})

    @route("POST", r"/api/fields/contact/new")
    def create_field(self, request):
        body = request.json() or {}
        if not body.get("label"):
            return errors(400, "label: A label is required.", details={"label": ["A label is required."]})
        alias = body.get("alias") or body["label"].lower().replace(" ", "_")
        with self.lock:
            if alias in self.fields:
                return errors(
                    400,
                    "alias: Another field is already using this alias.",
                    details={"alias": ["Another field is already using this alias."]},
                )
            self.fields[alias] = {
                "alias": alias,
                "label": body["label"],
                "type": body.get("type", "text"),
                "group": body.get("group", "core"),
            }
            return json_response(201, {"field": self.fields[alias]})

    @route("POST", r"/api/segments/new")
    def create_segment(self, request):
        body = request.json() or {}
        if not body.get("name"):
            return errors(400, "name: A name is required.", details={"name": ["A name is required."]})
        with self.lock:
            segment = {
                "id": self.next_segment_id,
                "name": body["name"],
                "alias": body.get("alias") or body["name"].lower(),
                "members": [],
            }
            self.segments[segment["id"]] = segment
            self.next_segment_id += 1
        return json_response(201, {"list": {k: v for k, v in segment.items() if k != "members"}})

    @route("POST", r"/api/segments/(\d+)/contact/(\d+)/add")
    def add_one_to_segment(self, request, segment_id, contact_id):
        with self.lock:
            segment, record = self.segments.get(int(segment_id)), self.records.get(int(contact_id))
            if segment is None or record is None:
                return errors(404, "Item was not found.")
            if record["id"] not in segment["members"]:
                segment["members"].append(record["id"])
        return json_response(200, {"success": 1})

    @route("POST", r"/api/segments/(\d+)/contacts/add")
    def add_to_segment(self, request, segment_id):
        # ListApiController::addLeadsAction refuses only a missing (null) ids; an
        # empty list adds nobody and succeeds.
        ids = (request.json() or {}).get("ids")
        if ids is None:
            return errors(400, "This is a bad request.")
        with self.lock:
            segment = self.segments.get(int(segment_id))
            if segment is None:
                return errors(404, "Item was not found.")
            details = {}
            for contact_id in ids:
                found = int(contact_id) in self.records
                if found and int(contact_id) not in segment["members"]:
                    segment["members"].append(int(contact_id))
                details[contact_id] = {"success": found}
        return json_response(200, {"success": 1, "details": php_array(details)})

    # State

    def _validate(self, body):
        """The returnError() entry for a contact the form refuses, or None."""
        if not isinstance(body, dict):
            return api_error(400, "This is a bad request.")
        problem = email_problem(body.get("email"))
        if problem:
            # FormErrorMessagesTrait: "field: message" from the errors by field.
            return api_error(400, "email: %s" % problem, {"email": [problem]})
        return None

    def _upsert(self, body):
        """Match on email, Mautic's unique identifier: (record, created). Without
        an email there is nothing to match on, and the contact is new."""
        email = str(body.get("email") or "").strip().lower()
        existing = self.by_email.get(email) if email else None
        if existing is None and self.settings["non_atomic_uniqueness"]:
            # Mautic checks then inserts, outside any lock a database would give.
            self.lock.release()
            time.sleep(0.05)
            self.lock.acquire()
        if existing:
            self._write(existing, body, blank_missing=False)
            return existing, False
        stamp = now()
        record = {"id": self.next_id, "fields": {}, "dateAdded": stamp, "dateModified": stamp, "tags": [], "points": 0}
        self.next_id += 1
        self._write(record, body, blank_missing=False)
        self.records[record["id"]] = record
        if email:
            self.by_email[email] = record
        return record, True

    def _write(self, record, body, blank_missing):
        overwrite_blank = blank_missing or bool(body.get("overwriteWithBlank"))
        for alias in self.fields:
            if alias in body:
                value = body[alias]
                # POST and PATCH keep existing data when given a blank (overwriteWithBlank off).
                if value in ("", None) and not overwrite_blank and record["fields"].get(alias):
                    continue
                record["fields"][alias] = str(value).lower() if alias == "email" else value
            elif blank_missing:
                record["fields"][alias] = None
        record["dateModified"] = now()

    def _public(self, record):
        all_fields = {"id": record["id"], **record["fields"]}
        return {
            "id": record["id"],
            "isPublished": True,
            "dateAdded": record["dateAdded"],
            "dateModified": record["dateModified"],
            "points": record["points"],
            "tags": list(record["tags"]),
            "fields": {
                "core": {alias: {"alias": alias, "value": value} for alias, value in record["fields"].items()},
                "all": all_fields,
            },
        }
