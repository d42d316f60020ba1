"""Mautic (self-hosted): batch create-or-update through /api/contacts/batch/new.

batch/new upserts on the unique identifier (email by default) and always answers
201, with a status code per item (docs/crm-api.md, section 3, "Batch create-or-update"). Authentication is HTTP
Basic (which the instance must enable) or OAuth2 client credentials.
"""

import threading
import time

from ..conf import is_set, setting_name
from ..exceptions import CRMUnavailable, RetryableError
from .base import AUTH_PAUSE_SECONDS, LOWER_CASE_FIELD_MAP, CRMBackend, Outcome
from .http import json_or_empty

BATCH_LIMIT = 200  # Mautic's api_batch_max_limit
BATCH_PATH = "/api/contacts/batch/new"
TOKEN_PATH = "/oauth/v2/token"
TOKEN_MARGIN_SECONDS = 60
BASIC = ("USERNAME", "PASSWORD")
OAUTH = ("CLIENT_ID", "CLIENT_SECRET")


class MauticBackend(CRMBackend):
    name = "mautic"
    verbose_name = "Mautic"
    required_settings = ("BASE_URL",)
    optional_settings = (*BASIC, *OAUTH, "SEGMENT_ID", "FIELD_MAP", "TIMEOUT_SECONDS")
    default_batch_size = BATCH_LIMIT
    # Mautic validates with PHP's filter_var(FILTER_VALIDATE_EMAIL), which refuses
    # a non-ASCII domain (docs/crm-api.md, section 3, "Email addresses").
    email_form = "ascii"
    default_field_map = LOWER_CASE_FIELD_MAP
    # Access tokens by client id, shared by the workers of one process.
    _tokens = {}
    _tokens_lock = threading.Lock()

    def configure_session(self, session):
        session.headers["Accept"] = "application/json"
        if self.auth_mode() == "basic":
            session.auth = (self.setting("USERNAME"), self.setting("PASSWORD"))

    @classmethod
    def missing_settings(cls):
        missing = super().missing_settings()
        if cls.in_sandbox() or _all_set(cls, BASIC) or _all_set(cls, OAUTH):
            return missing
        return [*missing, "%s and %s, or %s and %s" % tuple(setting_name(cls.name, name) for name in (*BASIC, *OAUTH))]

    def auth_mode(self):
        oauth = all(self.setting(name, "") for name in OAUTH)
        return "oauth2" if oauth else "basic"

    @property
    def api_url(self):
        return self.setting("BASE_URL").rstrip("/")

    # Payload

    def build_payload(self, contact):
        return {"email": self.checked_email(contact), **self.mapped_values(contact)}

    # Push: batch/new creates or updates on the email, one status per item
    # (docs/crm-api.md, section 3).

    def contacts_per_request(self):
        return BATCH_LIMIT

    def send(self, chunk):
        return self.authorized_request("POST", BATCH_PATH, json=[item.payload for item in chunk])

    def parse_outcomes(self, chunk, response):
        """Match results by index. `contacts` and `errors` are PHP arrays keyed by
        index, which json_encode writes as a list when the keys run 0..n-1 (all
        accepted; or only the first items failed) and as an object otherwise."""
        body = json_or_empty(response)
        contacts, codes = by_index(body.get("contacts")), body.get("statusCodes") or []
        errors = by_index(body.get("errors"))
        if isinstance(codes, dict):
            codes = [codes.get(str(i)) for i in range(len(chunk))]
        return [
            item_outcome(item, codes[index] if index < len(codes) else None, contacts, errors, index)
            for index, item in enumerate(chunk)
        ]

    def raise_for_account_error(self, response):
        status = response.status_code
        kind = first_error(json_or_empty(response)).get("type")
        if status == 403 and kind == "api_disabled":
            raise CRMUnavailable(
                "Mautic's API is disabled: enable it in Mautic's configuration (API settings); "
                "syncing resumes by itself.",
                crm=self.name,
                status_code=status,
            )
        if status == 403 and kind == "access_denied" and self.auth_mode() == "basic":
            raise CRMUnavailable(
                "Mautic refuses HTTP basic auth: enable it in Mautic's API settings, or set "
                "MAUTIC_CLIENT_ID and MAUTIC_CLIENT_SECRET; syncing resumes by itself.",
                crm=self.name,
                status_code=status,
            )

    def rate_limit_message(self, response):
        return "Mautic's API rate limit was reached; waiting."

    def rate_limit_wait(self, response):
        return _reset_seconds(response)

    def credentials_rejected_message(self, response):
        return "Mautic rejected the credentials (401: %s). Check %s, then retry these contacts." % (
            self.error_message(response),
            self._credential_names(),
        )

    def error_message(self, response):
        return mautic_error_message(json_or_empty(response))

    def after_push(self, items, outcomes):
        """Add the contacts Mautic took to MAUTIC_SEGMENT_ID; one that could not
        be added is retried (the upsert finds it again)."""
        segment = self.setting("SEGMENT_ID", "")
        ids = [o.external_id for o in outcomes if o.external_id]
        if not segment or not ids:
            return outcomes
        try:
            response = self.authorized_request(
                "POST", "/api/segments/%s/contacts/add" % segment, json={"ids": [int(i) for i in ids]}
            )
        except RetryableError as exc:
            return _retry_added(items, outcomes, "Synced, but not added to the segment: %s" % exc)
        if response.status_code == 404:
            raise CRMUnavailable(
                "Mautic has no segment %s. Fix MAUTIC_SEGMENT_ID; syncing resumes by itself." % segment,
                crm=self.name,
                status_code=404,
            )
        if response.status_code >= 400:
            message = "Synced, but Mautic did not add it to segment %s: %s" % (segment, self.error_message(response))
            return _retry_added(items, outcomes, message)
        return outcomes

    # Authentication

    def authorized_request(self, method, path, **kwargs):
        """A request with the current credentials; with OAuth2, a 401 fetches a new
        token once and tries again."""
        if self.auth_mode() != "oauth2":
            return self.request(method, path, **kwargs)
        response = self.request(method, path, headers=self._bearer(), **kwargs)
        if response.status_code == 401:
            response = self.request(method, path, headers=self._bearer(refresh=True), **kwargs)
        return response

    def _bearer(self, refresh=False):
        client_id = self.setting("CLIENT_ID")
        with self._tokens_lock:
            token, expires = self._tokens.get(client_id, (None, 0))
            if refresh or not token or time.monotonic() >= expires:
                token, expires = self._fetch_token(client_id)
                self._tokens[client_id] = (token, expires)
        return {"Authorization": "Bearer %s" % token}

    def _fetch_token(self, client_id):
        data = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": self.setting("CLIENT_SECRET"),
        }
        response = self.request("POST", TOKEN_PATH, data=data)
        if response.status_code == 403:
            # The token endpoint is an API request too: api_disabled while the API is off.
            self.raise_for_account_error(response)
        body = json_or_empty(response)
        if response.status_code in (400, 401):
            raise CRMUnavailable(
                "Mautic refused the OAuth2 client (%s). Check MAUTIC_CLIENT_ID and MAUTIC_CLIENT_SECRET "
                "(an API credential created in OAuth2 mode), then retry these contacts." % mautic_error_message(body),
                pause_seconds=AUTH_PAUSE_SECONDS,
                fail_contacts=True,
                crm=self.name,
                status_code=response.status_code,
            )
        if response.status_code >= 300 or "access_token" not in body:
            raise RetryableError("Mautic's token endpoint answered HTTP %d." % response.status_code, crm=self.name)
        lifetime = float(body.get("expires_in") or 3600)
        return body["access_token"], time.monotonic() + max(0.0, lifetime - TOKEN_MARGIN_SECONDS)

    def _credential_names(self):
        names = OAUTH if self.auth_mode() == "oauth2" else BASIC
        return " and ".join(setting_name(self.name, name) for name in names)


def item_outcome(item, code, contacts, errors, index):
    """One item of a batch/new answer: its status code, its contact or its error."""
    found = contacts.get(str(index)) or {}
    if code in (200, 201) and found.get("id"):
        return Outcome.accepted(item, found["id"], http_status=code)
    if code is not None and code >= 500:
        message = "Mautic failed on this contact (HTTP %s), an error on its side." % code
        return Outcome.retry(item, message, http_status=code)
    error = errors.get(str(index))
    return Outcome.permanent(item, mautic_error_message({"errors": [error or {}]}), http_status=code)


def _retry_added(items, outcomes, message):
    by_key = {item.key: item for item in items}
    return [Outcome.retry(by_key[o.key], message) if o.external_id else o for o in outcomes]


def by_index(value):
    """A PHP array keyed by index, as json_encode wrote it, as {"0": ...}."""
    if isinstance(value, list):
        return {str(index): item for index, item in enumerate(value)}
    return value if isinstance(value, dict) else {}


def first_error(body):
    """The first error of an error answer ({"errors": [...]}); batch answers key
    theirs by index instead."""
    errors = body.get("errors") or []
    if isinstance(errors, dict):
        errors = list(errors.values())
    return errors[0] if errors and isinstance(errors[0], dict) else {}


def _all_set(cls, names):
    return all(is_set(setting_name(cls.name, name)) for name in names)


def _reset_seconds(response):
    try:
        return max(1.0, float(response.headers.get("X-RateLimit-Reset", "")) - time.time())
    except ValueError:
        return None


def mautic_error_message(body):
    """Mautic's {"errors":[{"code","message","details":{field:[...]}}]} in one line."""
    parts = []
    for error in body.get("errors") or []:
        if not isinstance(error, dict):
            continue
        details = error.get("details")
        if isinstance(details, dict) and details:
            parts += [
                "%s: %s" % (field, "; ".join(map(str, msgs)) if isinstance(msgs, list) else msgs)
                for field, msgs in details.items()
            ]
        elif error.get("message"):
            parts.append(str(error["message"]))
    return "Mautic refused it: %s" % ("; ".join(parts) or "no message")
