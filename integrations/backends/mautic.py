"""Mautic (self-hosted): contacts without a Mautic id go through
/api/contacts/batch/new, which upserts on the unique identifier (email by
default) and always answers 201 with a status code per item; contacts with an id
are updated by that id through /api/contacts/batch/edit, so an email change
updates the same record (docs/crm-api.md, section 3, "Batch create-or-update"
and "Update by id and conflicts"). Removals and erasures delete the contact;
Mautic's webhooks report deletions and email opt-outs ("Webhooks").
Authentication is HTTP Basic (which the instance must enable) or OAuth2 client
credentials.
"""

import base64
import csv
import hashlib
import hmac
import io
import json
import threading
import time
from dataclasses import replace
from datetime import datetime

from ..conf import is_set, setting_name
from ..exceptions import CRMUnavailable, PermanentError, RateLimited, RetryableError
from .base import (
    AUTH_PAUSE_SECONDS,
    CREATE_ONLY,
    LOWER_CASE_FIELD_MAP,
    UPDATE_ONLY,
    UPSERT,
    CRMBackend,
    Outcome,
)
from .http import json_or_empty
from .inbound import CRMNotice, WebhookRejected, same_secret

BATCH_LIMIT = 200  # Mautic's api_batch_max_limit
BATCH_PATH = "/api/contacts/batch/new"
EDIT_PATH = "/api/contacts/batch/edit"
CONTACTS_PATH = "/api/contacts"
DELETE_PATH = "/api/contacts/%s/delete"
# What Mautic answers for an id it does not have (mautic.core.error.notfound).
NOT_FOUND = "Item was not found."
# The start of a create_only message for a contact Mautic already had: left as
# it is, so it is not added to MAUTIC_SEGMENT_ID either.
LEFT_AS_IS = "create_only:"
# Webhook event types crmsync acts on, and the do-not-contact verbs of the email
# channel that withdraw consent (docs/crm-api.md, section 3, "Webhooks").
DELETE_EVENT = "mautic.lead_post_delete"
CHANNEL_EVENT = "mautic.lead_channel_subscription_changed"
OPT_OUT_VERBS = {"unsubscribed": "unsubscribed", "bounced": "hard_bounce"}
TOKEN_PATH = "/oauth/v2/token"
TOKEN_MARGIN_SECONDS = 60
BASIC = ("USERNAME", "PASSWORD")
OAUTH = ("CLIENT_ID", "CLIENT_SECRET")

# Fields asked for per request when reading the field list.
FIELDS_PAGE_SIZE = 200


class MauticBackend(CRMBackend):
    name = "mautic"
    verbose_name = "Mautic"
    erase_description = "The contact is deleted."
    required_settings = ("BASE_URL",)
    optional_settings = (
        *BASIC,
        *OAUTH,
        "SEGMENT_ID",
        "FIELD_MAP",
        "TIMEOUT_SECONDS",
        "SYNC_MODE",
        "MIRROR_DELETES",
        "WEBHOOK_SECRET",
    )
    default_batch_size = BATCH_LIMIT
    supports_sync_modes = True
    receives_webhooks = True
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

    def crm_fields(self):
        """{alias: Mautic type} of the contact fields, read page by page (Mautic
        pages lists, 30 by default)."""
        fields, start = {}, 0
        while True:
            response = self.request("GET", "/api/fields/contact", params={"start": start, "limit": FIELDS_PAGE_SIZE})
            self.check_setup_answer(response)
            body = json_or_empty(response)
            page = body.get("fields") or []
            page = list(page.values()) if isinstance(page, dict) else page
            fields.update({str(f.get("alias", "")): f.get("type") or "text" for f in page})
            start += len(page)
            if not page or start >= int(body.get("total") or 0):
                return fields

    # Push (docs/crm-api.md, section 3, "Batch create-or-update", "Update by id
    # and conflicts", "Sync modes"). Every request carries one kind of contact:
    # with a Mautic id (batch/edit by id) or without (batch/new, or a lookup first
    # in update_only and create_only). batch/edit pairs an item without an id
    # with the wrong contact (a Mautic bug), so it only ever gets items with ids.

    def contacts_per_request(self):
        return BATCH_LIMIT

    def chunks(self, items):
        with_id = [item for item in items if item.external_id]
        without_id = [item for item in items if not item.external_id]
        return super().chunks(with_id) + super().chunks(without_id)

    def send_and_judge(self, chunk):
        if chunk[0].is_removal:
            return super().send_and_judge(chunk)
        mode = self.sync_mode()
        if mode == CREATE_ONLY and chunk[0].external_id:
            message = LEFT_AS_IS + " Mautic has this contact (id %s); left as it is."
            return [Outcome.accepted(item, item.external_id, message=message % item.external_id) for item in chunk]
        if mode == UPSERT or chunk[0].external_id:
            return super().send_and_judge(chunk)
        try:
            found = self.find_ids([item.email for item in chunk])
        except RateLimited as exc:
            return [Outcome.wait(item, exc.message, retry_after=exc.retry_after) for item in chunk]
        except RetryableError as exc:
            return [Outcome.retry(item, str(exc), retry_after=exc.retry_after) for item in chunk]
        except PermanentError as exc:
            return [Outcome.permanent(item, exc.message, http_status=exc.status_code) for item in chunk]
        if mode == UPDATE_ONLY:
            return self._update_found(chunk, found)
        return self._create_missing(chunk, found)

    def _update_found(self, chunk, found):
        """update_only: the contacts Mautic has are updated by their id; the others
        are not created."""
        known = [replace(item, external_id=found[item.email]) for item in chunk if item.email in found]
        missing = [
            Outcome.not_in_crm(
                item,
                "update_only: Mautic has no contact with this email, and MAUTIC_SYNC_MODE is update_only, "
                "so none was created.",
            )
            for item in chunk
            if item.email not in found
        ]
        return missing + (self._send_more(known) if known else [])

    def _create_missing(self, chunk, found):
        """create_only: only the contacts Mautic does not have are created."""
        message = LEFT_AS_IS + " Mautic already has this email (contact %s); left as it is."
        existing = [
            Outcome.accepted(item, found[item.email], message=message % found[item.email])
            for item in chunk
            if item.email in found
        ]
        new = [item for item in chunk if item.email not in found]
        return existing + (self._send_more(new) if new else [])

    def _send_more(self, chunk):
        """A second request for part of a chunk, in a paced slot of its own."""
        self.pacer.wait()
        return CRMBackend.send_and_judge(self, chunk)

    def send(self, chunk):
        if chunk[0].external_id:
            body = [{**item.payload, "id": mautic_id(item.external_id)} for item in chunk]
            return self.authorized_request("PATCH", EDIT_PATH, json=body)
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
        codes = [codes[index] if index < len(codes) else None for index in range(len(chunk))]
        if chunk[0].external_id:
            return self._edit_outcomes(chunk, codes, contacts, errors)
        return [item_outcome(item, codes[index], contacts, errors, index) for index, item in enumerate(chunk)]

    def _edit_outcomes(self, chunk, codes, contacts, errors):
        """batch/edit's answer: 200 updated (Mautic 4 may answer another id: it
        merged the contact into the one that had the email), 404 the id is gone,
        422 "must be unique" the email belongs to another contact (Mautic 5)."""
        clashes = [item.email for index, item in enumerate(chunk) if is_email_clash(errors.get(str(index)))]
        holders = self._holders(clashes) if clashes else {}
        outcomes = []
        for index, item in enumerate(chunk):
            code, found = codes[index], contacts.get(str(index)) or {}
            if code in (200, 201) and found.get("id"):
                outcomes.append(edited(item, found["id"], code))
            elif code == 404:
                outcomes.append(id_gone(item))
            elif item.email in clashes and code == 422:
                outcomes.append(email_taken(item, holders.get(item.email)))
            else:
                outcomes.append(item_outcome(item, code, contacts, errors, index))
        return outcomes

    def _holders(self, emails):
        """{email: id} of the contacts that hold these emails; {} when the lookup
        fails (the message then names no id)."""
        try:
            return self.find_ids(emails)
        except (RetryableError, PermanentError):
            return {}

    def find_ids(self, emails):
        """{email: Mautic id} for the emails Mautic has, by exact match, in one
        request per page (where expr "in"; an email several contacts share gives
        the oldest, the one Mautic's own merge keeps)."""
        wanted = {email.lower(): email for email in emails}
        found, start = {}, 0
        while True:
            self.pacer.wait()
            response = self.authorized_request("GET", CONTACTS_PATH, params=lookup_params(wanted, start))
            rejection = self.classify(response)
            if rejection is not None:
                raise rejection
            page = json_or_empty(response).get("contacts") or {}
            records = list(page.values()) if isinstance(page, dict) else list(page)
            for record in sorted(records, key=lambda r: int(r.get("id") or 0)):
                email = str(contact_email(record) or "").lower()
                if email in wanted and wanted[email] not in found:
                    found[wanted[email]] = str(record["id"])
            start += len(records)
            if not records or start >= int(json_or_empty(response).get("total") or 0):
                return found

    # Removal and erasure: Mautic's delete, by id, else by the email looked up
    # exactly (docs/crm-api.md, section 3, "Delete and erase").

    def send_removal(self, item):
        if item.external_id:
            return self.authorized_request("DELETE", DELETE_PATH % mautic_id(item.external_id))
        if not item.email:
            return None
        found = self.find_ids([item.email])
        if not found:
            return None
        self.pacer.wait()
        return self.authorized_request("DELETE", DELETE_PATH % found[item.email])

    def removal_not_found(self, item, response):
        """404 "Item was not found." is done; a 404 without Mautic's error (a wrong
        MAUTIC_BASE_URL) is not."""
        return response.status_code == 404 and first_error(json_or_empty(response)).get("message") == NOT_FOUND

    def removal_outcome(self, item, response):
        # The answer is the deleted contact with all its fields: the proof keeps
        # only that Mautic confirmed it, and which contact it was.
        deleted = response.request.path_url.rstrip("/").split("/")[-2]
        answer = "HTTP %d Mautic deleted contact %s." % (response.status_code, deleted)
        return Outcome.removed(item, http_status=response.status_code, answer=answer)

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
        be added is retried (the upsert finds it again). A contact create_only
        left as it is is not added."""
        segment = self.setting("SEGMENT_ID", "")
        ids = [o.external_id for o in outcomes if o.external_id and not o.message.startswith(LEFT_AS_IS)]
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

    # Inbound webhooks (docs/crm-api.md, section 3, "Webhooks")

    @classmethod
    def verify_webhook(cls, call, secret):
        """Webhook-Signature is base64(HMAC-SHA256(raw body, the webhook's secret))."""
        given = call.headers.get("Webhook-Signature", "")
        if not given:
            raise WebhookRejected("The call has no Webhook-Signature header.")
        expected = base64.b64encode(hmac.new(secret.encode(), call.body, hashlib.sha256).digest()).decode()
        if not same_secret(given, expected):
            raise WebhookRejected("The Webhook-Signature does not match MAUTIC_WEBHOOK_SECRET.")

    @classmethod
    def parse_webhook(cls, call):
        """{"<event type>": [event, ...], ...}: deletions and email opt-outs.
        Mautic sends no event id, so an event's id is a digest of its type and
        content: the same event delivered twice has the same id."""
        try:
            body = json.loads(call.body)
        except ValueError:
            raise WebhookRejected("The body is not JSON.", status=400) from None
        if not isinstance(body, dict):
            raise WebhookRejected("The body is not a JSON object of Mautic events.", status=400)
        notices = []
        for event_type, read in ((DELETE_EVENT, deletion_notice), (CHANNEL_EVENT, opt_out_notice)):
            events = body.get(event_type) or []
            for event in events if isinstance(events, list) else []:
                notice = read(event_type, event) if isinstance(event, dict) else None
                if notice:
                    notices.append(notice)
        return notices

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


def mautic_id(external_id):
    """An id as Mautic's JSON has it: a number (anything else is sent as it is,
    and Mautic finds no such contact)."""
    text = str(external_id).strip()
    return int(text) if text.isdigit() else text


def edited(item, returned_id, code):
    """An updated contact. Mautic 4 merges a contact whose new email another
    contact has into the older of the two and answers with the survivor."""
    if str(returned_id) == str(item.external_id):
        return Outcome.accepted(item, returned_id, http_status=code)
    message = "Mautic merged contact %s into contact %s, which had this email; crmsync now updates contact %s." % (
        item.external_id,
        returned_id,
        returned_id,
    )
    return Outcome.accepted(item, returned_id, http_status=code, message=message)


def id_gone(item):
    return Outcome.not_in_crm(
        item,
        "Mautic has no contact %s any more (deleted or merged there). Select it again to create it anew."
        % item.external_id,
        http_status=404,
    )


def email_taken(item, holder):
    """Mautic 5 refuses an email another contact has ("must be unique")."""
    other = "contact %s" % holder if holder else "another contact"
    return Outcome.permanent(
        item,
        "Mautic refused the new email %s: %s already has it, so contact %s was not changed. Merge the two "
        "contacts in Mautic (then select this one again), or change one of the emails."
        % (item.email, other, item.external_id),
        http_status=422,
    )


def is_email_clash(error):
    """Whether a batch/edit item error is the email uniqueness violation."""
    if not isinstance(error, dict):
        return False
    details = error.get("details")
    messages = details.get("email") if isinstance(details, dict) else None
    text = " ".join(map(str, messages)) if isinstance(messages, list) else str(error.get("message") or "")
    return "unique" in text.lower() and (messages is not None or text.lower().startswith("email:"))


def lookup_params(wanted, start):
    """GET /api/contacts by exact email: where expr "in" takes one CSV string
    (str_getcsv with double quotes), "eq" one value."""
    emails = list(wanted.values())
    if len(emails) == 1:
        where = {"where[0][expr]": "eq", "where[0][val]": emails[0]}
    else:
        line = io.StringIO()
        csv.writer(line, quoting=csv.QUOTE_ALL, lineterminator="").writerow(emails)
        where = {"where[0][expr]": "in", "where[0][val]": line.getvalue()}
    return {"where[0][col]": "email", **where, "start": start, "limit": BATCH_LIMIT}


def contact_email(record):
    """A contact's email in an API answer (fields.all) or a webhook (fields.core)."""
    fields = record.get("fields") or {}
    if isinstance(fields, dict) and isinstance(fields.get("all"), dict):
        return fields["all"].get("email")
    core = fields.get("core") if isinstance(fields, dict) else None
    email = core.get("email") if isinstance(core, dict) else None
    return email.get("value") if isinstance(email, dict) else email


def event_id(event_type, event):
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((event_type + "\n" + canonical).encode()).hexdigest()


def event_time(event):
    try:
        return datetime.fromisoformat(str(event.get("timestamp")))
    except ValueError:
        return None


def deletion_notice(event_type, event):
    """mautic.lead_post_delete: the contact's id is the top-level `id` (the
    serialized contact's own id is null after the delete)."""
    contact = event.get("contact") if isinstance(event.get("contact"), dict) else {}
    if not event.get("id"):
        return None
    return CRMNotice(
        event_id=event_id(event_type, event),
        kind="deleted",
        external_id=str(event["id"]),
        email=str(contact_email(contact) or ""),
        occurred_at=event_time(event),
    )


def opt_out_notice(event_type, event):
    """mautic.lead_channel_subscription_changed on the email channel to
    unsubscribed or bounced; other channels and verbs are left out."""
    contact = event.get("contact") if isinstance(event.get("contact"), dict) else {}
    kind = OPT_OUT_VERBS.get(str(event.get("new_status")))
    if event.get("channel") != "email" or not kind or not (contact.get("id") or contact_email(contact)):
        return None
    return CRMNotice(
        event_id=event_id(event_type, event),
        kind=kind,
        external_id=str(contact.get("id") or ""),
        email=str(contact_email(contact) or ""),
        occurred_at=event_time(event),
    )


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
