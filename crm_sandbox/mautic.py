"""A Mautic 5 instance's REST API as docs/crm-api.md section 3 describes it, in memory.

Settings (POST /_sandbox/mautic/settings): api_enabled and basic_auth_enabled (both
off by default in a real Mautic, on here so the demo works), token_lifetime_seconds,
rate_limit_per_hour (0: off, Mautic's default), non_atomic_uniqueness (check then
insert with a pause between, as Mautic does, so tests can show crmsync never races
two creates for one email), email_conflict ("refuse", Mautic 5's 422 for an edit to
an email another contact has, or "merge", Mautic 4 merging the two), and the
webhook settings webhook_url and webhook_secret (docs/crm-api.md, section 3,
"Webhooks").
"""

import base64
import csv
import hashlib
import hmac
import json
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
# Mautic's own types of those fields (GET /api/fields/contact); the rest are text.
CORE_FIELD_TYPES = {"email": "email", "phone": "tel", "mobile": "tel", "website": "url", "country": "country"}


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


# The do-not-contact reasons Mautic stores, and the verbs its webhook says.
DNC_REASONS = {"unsubscribed": 1, "hard_bounce": 2}
DNC_VERBS = {"unsubscribed": "unsubscribed", "hard_bounce": "bounced"}


def php_json(data):
    """PHP's json_encode with its default flags: no spaces, "/" as "\\/",
    anything outside ASCII as \\uXXXX. Mautic signs exactly these bytes."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/").encode()


def webhook_contact(public):
    """A contact as Mautic's webhooks serialize it: grouped fields, no `fields.all`
    (the API controller adds that one)."""
    fields = {key: value for key, value in public["fields"].items() if key != "all"}
    return {**public, "fields": fields}


def where_emails(query):
    """The lower-cased emails a where[0] clause on email asks for, or None when
    there is none: eq takes one value, in a CSV string read like str_getcsv."""
    if query.get("where[0][col]") != "email" or "where[0][val]" not in query:
        return None
    value, expr = query["where[0][val]"], query.get("where[0][expr]")
    if expr == "in":
        values = next(csv.reader([value], quotechar='"'), [])
    elif expr == "eq":
        values = [value]
    else:
        return None
    return {v.strip().lower() for v in values}


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
        "email_conflict": "refuse",
    }
    # What Mautic's webhooks say that crmsync records: mautic.lead_post_delete, and
    # mautic.lead_channel_subscription_changed to unsubscribed or bounced.
    WEBHOOK_EVENTS = ("deleted", "unsubscribed", "hard_bounce")

    def reset(self):
        with self.lock:
            self.settings = self.all_settings()
            self.records, self.by_email, self.next_id = {}, {}, 1
            self.fields = {
                alias: {
                    "alias": alias,
                    "label": alias.title(),
                    "type": CORE_FIELD_TYPES.get(alias, "text"),
                    "group": "core",
                }
                for alias in CORE_FIELDS
            }
            self.segments, self.next_segment_id = {}, 1
            self.tokens = {}
            self.limit = None

    def contacts(self):
        with self.lock:
            return [self._public(record) for record in self.records.values()]

    def check_settings(self, settings):
        if settings.get("email_conflict", "refuse") not in ("refuse", "merge"):
            return "email_conflict is refuse (Mautic 5) or merge (Mautic 4)."
        return None

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
        """search=email:<email>, or where[0][col]=email with expr eq (one value)
        or in (one CSV string, as str_getcsv reads it); keyed by id, `total` a
        string (docs/crm-api.md, section 3, "Find a contact by email")."""
        term = request.query.get("search", "")
        wanted = where_emails(request.query)
        start = int(request.query.get("start") or 0)
        limit = int(request.query.get("limit") or 30)
        with self.lock:
            found = list(self.records.values())
            if wanted is not None:
                found = [r for r in found if str(r["fields"].get("email") or "").lower() in wanted]
            elif term.startswith("email:"):
                found = [r for r in found if r["fields"].get("email") == term[6:].lower()]
            page = found[start : start + limit]
            return json_response(
                200, {"total": str(len(found)), "contacts": {str(r["id"]): self._public(r) for r in page}}
            )

    @route("DELETE", r"/api/contacts/(\d+)/delete")
    def delete(self, request, contact_id):
        """200 with the contact as serialized after the delete (its id null);
        mautic.lead_post_delete goes to the webhook."""
        with self.lock:
            record = self.records.get(int(contact_id))
            if record is None:
                return errors(404, "Item was not found.")
            gone = self._delete(record)
        return json_response(200, {"contact": {**gone, "id": None}})

    @route("PATCH", r"/api/contacts/(\d+)/edit")
    def patch(self, request, contact_id):
        body = request.json()
        with self.lock:
            record = self.records.get(int(contact_id))
            if record is None:
                return errors(404, "Item was not found.")
            problem = self._validate(body) or self._refused_clash(record, body)
            if problem:
                return json_response(problem["code"], {"errors": [problem]})
            record = self._edit(record, body)
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
        """Always 200: contacts, statusCodes and (when an item failed) errors keyed
        by index. An unknown or missing id is 404 in setBatchError's shape (no
        details, type "api"). Mautic's index shift for items without an id is not
        reproduced (docs/crm-api.md, section 3, "Update by id and conflicts")."""
        items = request.json()
        if not isinstance(items, list):
            return errors(400, "Request body must be an array of entities.")
        if len(items) > BATCH_LIMIT:
            return errors(500, "A max of 200 entities are supported at a time.")
        contacts, codes, problems = {}, [], {}
        for index, item in enumerate(items):
            with self.lock:
                record = self._record_for(item)
                problem = {"message": "Item was not found.", "code": 404, "type": "api"} if record is None else None
                problem = problem or self._validate(item) or self._refused_clash(record, item)
                if problem:
                    codes.append(problem["code"])
                    problems[index] = problem
                    continue
                contacts[index] = self._public(self._edit(record, item))
            codes.append(200)
        body = {"contacts": php_array(contacts), "statusCodes": codes}
        if problems:
            body["errors"] = php_array(problems)
        return json_response(200, body)

    def _record_for(self, item):
        if not isinstance(item, dict) or not str(item.get("id", "")).isdigit():
            return None
        return self.records.get(int(item["id"]))

    def _holder(self, record, body):
        """Another contact that has the email `body` gives `record`, or None."""
        email = str(body.get("email") or "").strip().lower()
        holder = self.by_email.get(email) if email else None
        return holder if holder is not None and holder is not record else None

    def _refused_clash(self, record, body):
        """Mautic 5's UniqueCustomField violation, when it refuses clashes."""
        if self.settings["email_conflict"] != "refuse" or self._holder(record, body) is None:
            return None
        message = "This field must be unique."
        return api_error(422, "email: %s" % message, {"email": [message]})

    def _edit(self, record, body):
        """Write `body` on `record`; with email_conflict "merge" (Mautic 4) an email
        another contact has merges the two: the older one stays, the other is
        deleted. Returns the contact that stays."""
        holder = self._holder(record, body)
        self._write(record, body, blank_missing=False)
        if holder is None:
            return record
        winner, loser = sorted((record, holder), key=lambda r: r["id"])
        for alias, value in record["fields"].items():
            if value not in ("", None):
                winner["fields"][alias] = value
        self._delete(loser)
        self.by_email[str(winner["fields"].get("email") or "").lower()] = winner
        return winner

    def _delete(self, record):
        """Forget `record` and send mautic.lead_post_delete; returns its public form."""
        public = self._public(record)
        del self.records[record["id"]]
        email = str(record["fields"].get("email") or "").lower()
        if self.by_email.get(email) is record:
            del self.by_email[email]
        for segment in self.segments.values():
            if record["id"] in segment["members"]:
                segment["members"].remove(record["id"])
        self.emit("deleted", id=record["id"], contact={**webhook_contact(public), "id": None})
        return public

    # Webhooks out (docs/crm-api.md, section 3, "Webhooks")

    def webhook_request(self, kind, details, url, secret):
        """One event as Mautic's immediate mode posts it: {"<type>": [event]},
        json_encode'd and signed with Webhook-Signature. "unsubscribed" and
        "hard_bounce" (POST /_sandbox/mautic/events {"kind", "id" or "email"})
        also put the do-not-contact entry on the contact, as Mautic does first."""
        stamp = now()
        if kind == "deleted":
            contact = details.get("contact") or {"id": None, "fields": {"core": {}}}
            payload = {"mautic.lead_post_delete": [{"id": details.get("id"), "contact": contact, "timestamp": stamp}]}
        else:
            payload = {
                "mautic.lead_channel_subscription_changed": [
                    {
                        "contact": self._do_not_contact(kind, details),
                        "channel": "email",
                        "old_status": "contactable",
                        "new_status": DNC_VERBS[kind],
                        "timestamp": stamp,
                    }
                ]
            }
        body = php_json(payload)
        signature = base64.b64encode(hmac.new(str(secret).encode(), body, hashlib.sha256).digest()).decode()
        headers = {
            "Content-Type": "application/json",
            "X-Origin-Base-URL": "http://mautic.sandbox",
            "Webhook-Signature": signature,
        }
        return body, headers

    def _do_not_contact(self, kind, details):
        """Mark the contact the event names (by id, else email) do-not-contact on
        the email channel; its webhook form."""
        with self.lock:
            record = self.records.get(int(details.get("id") or 0)) or self.by_email.get(
                str(details.get("email") or "").lower()
            )
            if record is None:
                email = details.get("email")
                return {"id": details.get("id"), "fields": {"core": {"email": {"alias": "email", "value": email}}}}
            entry = {"reason": DNC_REASONS[kind], "comments": "", "channel": "email", "channelId": None}
            record.setdefault("doNotContact", []).append({"id": len(record["doNotContact"]) + 1, **entry})
            return webhook_contact(self._public(record))

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
        old_email = str(record["fields"].get("email") or "").lower()
        self._write_fields(record, body, blank_missing)
        new_email = str(record["fields"].get("email") or "").lower()
        if new_email != old_email and record["id"] in self.records:
            if self.by_email.get(old_email) is record:
                del self.by_email[old_email]
            if new_email:
                self.by_email[new_email] = record

    def _write_fields(self, record, body, blank_missing):
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
            "doNotContact": list(record.get("doNotContact", [])),
            "fields": {
                "core": {alias: {"alias": alias, "value": value} for alias, value in record["fields"].items()},
                "all": all_fields,
            },
        }
