"""HubSpot: batch upsert of up to 100 contacts per request, keyed by email.

batch/upsert with idProperty=email creates or updates without a search first;
search-then-create races into duplicates (docs/crm-api.md, section 2, "Single contact and search"). When HubSpot
rejects a whole batch because of some of its records, the batch is split until
each bad record stands alone with HubSpot's own message.
"""

import json
from datetime import UTC, datetime, timedelta

from ..conf import get_crm_setting
from ..exceptions import CRMUnavailable
from .base import LOWER_CASE_FIELD_MAP, CRMBackend, Outcome
from .http import json_or_empty

MAX_INPUTS = 100
UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"
PROPERTIES_PATH = "/crm/v3/properties/contacts"


class HubSpotBackend(CRMBackend):
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
    # 100 requests per rolling 10 s on Free/Starter (19/s fits Professional and
    # Enterprise), paced a hair under so that timing jitter never tips a window over.
    default_requests_per_second = 9.8
    default_field_map = LOWER_CASE_FIELD_MAP
    has_custom_fields = True
    built_in_fields = frozenset(
        {
            "email",
            "firstname",
            "lastname",
            "phone",
            "company",
            "website",
            "city",
            "country",
            "jobtitle",
            "lifecyclestage",
            "mobilephone",
            "address",
            "state",
            "zip",
        }
    )

    def configure_session(self, session):
        session.headers["Authorization"] = "Bearer %s" % self.setting("API_KEY")

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

    # Push: batch upsert by email, no search first (docs/crm-api.md, section 2).

    def contacts_per_request(self):
        return MAX_INPUTS

    def send(self, chunk):
        return self.request("POST", UPSERT_PATH, json={"inputs": [item.payload for item in chunk]})

    def split_rejected(self, response):
        # HubSpot refuses a whole batch for one bad record: halve until it stands alone.
        return True

    def parse_outcomes(self, chunk, response):
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
            return [*outcomes, Outcome.permanent(unmatched[0], message, http_status=207)]
        if unmatched and errors:
            return outcomes + [o for item in unmatched for o in self.send_in_slot([item])]
        message = "HubSpot answered without a result for this contact."
        return outcomes + [Outcome.retry(item, message) for item in unmatched]

    def raise_for_account_error(self, response):
        status, body = response.status_code, json_or_empty(response)
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

    def rate_limit_message(self, response):
        return "HubSpot's %s rate limit was reached; waiting." % rate_limit_policy(response)

    def rate_limit_wait(self, response):
        return rate_limit_wait(response)

    def credentials_rejected_message(self, response):
        return (
            "HubSpot rejected the access token (401 %s). Set a valid HUBSPOT_API_KEY "
            "(a private app token), then retry these contacts."
            % json_or_empty(response).get("category", "INVALID_AUTHENTICATION")
        )

    def error_message(self, response):
        return hubspot_error_message(response)

    def quota_spent_for(self, response):
        # Other apps on the same account share the window, so our own pace is not
        # enough: when HubSpot says none are left, wait for the window to roll.
        if response.headers.get("X-HubSpot-RateLimit-Remaining") == "0" and response.status_code != 429:
            return window_seconds(response)
        return None

    # Set-up: text properties for the mapped fields HubSpot lacks.

    def custom_field_key(self, name):
        return name.lower()

    def existing_custom_fields(self):
        response = self.request("GET", PROPERTIES_PATH)
        self.check_setup_answer(response)
        return {p.get("name", "").lower() for p in json_or_empty(response).get("results", [])}

    def create_custom_field(self, name):
        response = self.request("POST", PROPERTIES_PATH, json=property_definition(name))
        if response.status_code == 409:
            return False
        self.check_setup_answer(response)
        return True


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
        now = datetime.now(UTC)
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return (midnight - now).total_seconds()
    return window_seconds(response)


# HubSpot's rolling window when its answer does not say (Free and Starter tiers).
DEFAULT_WINDOW_SECONDS = 10


def window_seconds(response):
    interval = response.headers.get("X-HubSpot-RateLimit-Interval-Milliseconds", "")
    return int(interval) / 1000 if interval.isdigit() else DEFAULT_WINDOW_SECONDS
