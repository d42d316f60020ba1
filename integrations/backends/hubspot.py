"""HubSpot: batch upsert of up to 100 contacts per request, keyed by email.

batch/upsert with idProperty=email creates or updates without a search first;
search-then-create races into duplicates (crm-api.md section 2). When HubSpot
rejects a whole batch because of some of its records, the batch is split until
each bad record stands alone with HubSpot's own message.
"""

import json
from datetime import datetime, timedelta, timezone

from ..conf import get_crm_setting
from ..exceptions import CRMUnavailable, RetryableError
from .base import Outcome, OutcomeKind
from .base_requests import RequestsBackend, json_or_empty, server_error_message

MAX_INPUTS = 100
UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"
PROPERTIES_PATH = "/crm/v3/properties/contacts"
BUILT_IN_PROPERTIES = {
    "email", "firstname", "lastname", "phone", "company", "website", "city", "country",
    "jobtitle", "lifecyclestage", "mobilephone", "address", "state", "zip",
}
AUTH_PAUSE_SECONDS = 900
DEFAULT_WINDOW_SECONDS = 10


class HubSpotBackend(RequestsBackend):
    name = "hubspot"
    verbose_name = "HubSpot"
    required_settings = ("API_KEY",)
    optional_settings = ("API_BASE_URL", "PORTAL_ID", "FIELD_MAP", "REQUESTS_PER_SECOND", "TIMEOUT_SECONDS")
    default_batch_size = MAX_INPUTS
    default_api_url = "https://api.hubapi.com"
    # HubSpot validates emails by RFC 2822 plus a TLD check; the ASCII (punycode)
    # form passes under every reading of its docs (docs/crm-api.md, section 2,
    # "Email addresses").
    email_form = "ascii"
    sandbox_path = "/hubspot"
    # 100 requests per rolling 10 s on Free/Starter (19/s fits Professional and
    # Enterprise), paced a hair under so that timing jitter never tips a window over.
    default_requests_per_second = 9.8
    default_field_map = {
        "firstname": "first_name",
        "lastname": "last_name",
        "phone": "phone",
        "company": "company",
        "website": "website",
    }

    def __init__(self, **overrides):
        super().__init__(**overrides)
        self.session.headers["Authorization"] = "Bearer %s" % self.credential("API_KEY")

    def sandbox_credentials(self):
        from ..sandbox.hubspot import ACCESS_TOKEN

        return {"API_KEY": ACCESS_TOKEN}

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

    # Push

    def push(self, items):
        outcomes, waiting = [], None
        for start in range(0, len(items), MAX_INPUTS):
            chunk = items[start : start + MAX_INPUTS]
            if waiting:
                outcomes += [Outcome.wait(i, waiting.message, retry_after=waiting.retry_after) for i in chunk]
                continue
            chunk_outcomes = self._upsert(chunk)
            outcomes += chunk_outcomes
            waiting = first_rate_limited(chunk_outcomes)
        return outcomes

    def _upsert(self, chunk):
        self.pacer.wait()
        try:
            response = self.request("POST", UPSERT_PATH, json={"inputs": [item.payload for item in chunk]})
        except RetryableError as exc:
            return [Outcome.retry(item, str(exc)) for item in chunk]
        status = response.status_code
        if status in (200, 201, 207):
            return self._match_results(chunk, response)
        self._raise_for_account_error(response)
        if status == 429:
            seconds = rate_limit_wait(response)
            message = "HubSpot's %s rate limit was reached; waiting." % rate_limit_policy(response)
            return [Outcome.wait(item, message, retry_after=seconds) for item in chunk]
        if status >= 500:
            return [Outcome.retry(item, server_error_message(self.verbose_name, response), http_status=status) for item in chunk]
        return self._isolate_bad_records(chunk, response)

    def _isolate_bad_records(self, chunk, response):
        """A 4xx for the whole batch: find the records it is about by halving."""
        if len(chunk) == 1:
            return [Outcome.permanent(chunk[0], hubspot_error_message(response), http_status=response.status_code)]
        middle = len(chunk) // 2
        first = self._upsert(chunk[:middle])
        waiting = first_rate_limited(first)
        if waiting:
            return first + [Outcome.wait(i, waiting.message, retry_after=waiting.retry_after) for i in chunk[middle:]]
        return first + self._upsert(chunk[middle:])

    def _match_results(self, chunk, response):
        """Results come back in no documented order: match them on the email, both
        sides in the form HubSpot was sent, whatever case or form it echoes."""
        body = json_or_empty(response)
        ids = {
            self.crm_email(str((result.get("properties") or {}).get("email", ""))): str(result.get("id", ""))
            for result in body.get("results", [])
        }
        errors = body.get("errors") or []
        sent = {item.key: self.crm_email(item.contact.email) for item in chunk}
        unmatched = [item for item in chunk if sent[item.key] not in ids]
        outcomes = [
            Outcome.accepted(item, ids[sent[item.key]], http_status=response.status_code)
            for item in chunk
            if sent[item.key] in ids
        ]
        if unmatched and errors and len(unmatched) == 1:
            message = "HubSpot refused it: %s" % errors[0].get("message", "no message")
            return outcomes + [Outcome.permanent(unmatched[0], message, http_status=207)]
        if unmatched and errors:
            return outcomes + [o for item in unmatched for o in self._upsert([item])]
        message = "HubSpot answered without a result for this contact."
        return outcomes + [Outcome.retry(item, message) for item in unmatched]

    def _raise_for_account_error(self, response):
        status, body = response.status_code, json_or_empty(response)
        if status == 401:
            raise CRMUnavailable(
                "HubSpot rejected the access token (401 %s). Set a valid HUBSPOT_API_KEY "
                "(a private app token), then retry these contacts." % body.get("category", "INVALID_AUTHENTICATION"),
                pause_seconds=AUTH_PAUSE_SECONDS,
                fail_contacts=True,
                crm=self.name,
                status_code=status,
            )
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

    def quota_spent_for(self, response):
        # Other apps on the same account share the window, so our own pace is not
        # enough: when HubSpot says none are left, wait for the window to roll.
        if response.headers.get("X-HubSpot-RateLimit-Remaining") == "0" and response.status_code != 429:
            return window_seconds(response)
        return None

    # Set-up

    def ensure_custom_fields(self):
        """Create the text properties the field map needs; return (created, existing)."""
        wanted = [name for name in self.field_map() if name.lower() not in BUILT_IN_PROPERTIES]
        self.pacer.wait()
        response = self.request("GET", PROPERTIES_PATH)
        self._raise_for_setup(response)
        have = {p.get("name") for p in json_or_empty(response).get("results", [])}
        created, existing = [], []
        for name in wanted:
            if name in have:
                existing.append(name)
                continue
            self.pacer.wait()
            response = self.request("POST", PROPERTIES_PATH, json=property_definition(name))
            if response.status_code == 409:
                existing.append(name)
                continue
            self._raise_for_setup(response)
            created.append(name)
        return created, existing

    def _raise_for_setup(self, response):
        if response.status_code >= 400:
            self._raise_for_account_error(response)
            raise RetryableError(hubspot_error_message(response), crm=self.name, status_code=response.status_code)


def first_rate_limited(outcomes):
    return next((o for o in outcomes if o.kind is OutcomeKind.WAIT), None)


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
        now = datetime.now(timezone.utc)
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return (midnight - now).total_seconds()
    return window_seconds(response)


def window_seconds(response):
    interval = response.headers.get("X-HubSpot-RateLimit-Interval-Milliseconds", "")
    return int(interval) / 1000 if interval.isdigit() else DEFAULT_WINDOW_SECONDS
