"""Brevo (formerly Sendinblue): create-or-update one contact per request.

Brevo has no batch create: /contacts/batch only updates existing contacts and
/contacts/import answers with no per-contact result (docs/crm-api.md, section 1,
"Other contact endpoints the emulator serves"). So each contact is one POST
/contacts with updateEnabled, sent concurrently and paced within the contacts
endpoints' rate limit shared by every worker.
"""

import re
from urllib.parse import quote

from ..exceptions import CRMUnavailable, RetryableError
from .base import CRMBackend, Outcome, OutcomeKind
from .http import json_or_empty

PHONE_PUNCTUATION = re.compile(r"[\s\-.()/]")


class BrevoBackend(CRMBackend):
    name = "brevo"
    verbose_name = "Brevo"
    required_settings = ("API_KEY",)
    optional_settings = (
        "API_BASE_URL",
        "LIST_ID",
        "FIELD_MAP",
        "DEFAULT_COUNTRY_CODE",
        "REQUESTS_PER_SECOND",
        "CONCURRENCY",
        "TIMEOUT_SECONDS",
    )
    default_batch_size = 50
    default_api_url = "https://api.brevo.com/v3"
    # Brevo answers 400 to an address with a Unicode domain and takes its punycode
    # form (docs/crm-api.md, section 1, "Email addresses").
    email_form = "ascii"
    # The General tier's limit for /v3/contacts endpoints; Advanced is 20, Extended 60.
    default_requests_per_second = 10
    default_concurrency = 4
    default_field_map = {
        "FIRSTNAME": "first_name",
        "LASTNAME": "last_name",
        "SMS": "phone",
        "COMPANY": "company",
        "WEBSITE": "website",
    }
    has_custom_fields = True
    built_in_fields = frozenset({"EMAIL", "FIRSTNAME", "LASTNAME", "SMS"})

    def configure_session(self, session):
        session.headers["api-key"] = self.setting("API_KEY")
        session.headers["Accept"] = "application/json"

    def list_ids(self):
        raw = self.setting("LIST_ID", "")
        try:
            return [int(part) for part in str(raw).split(",") if part.strip()]
        except ValueError:
            raise CRMUnavailable("BREVO_LIST_ID must be list ids separated by commas; it is %r." % raw) from None

    # Payload

    def build_payload(self, contact):
        email = self.checked_email(contact)
        attributes = self.mapped_values(contact)
        if "SMS" in attributes:
            sms = brevo_sms(attributes.pop("SMS"), self.setting("DEFAULT_COUNTRY_CODE", ""))
            if sms:
                attributes["SMS"] = sms
        payload = {"email": email, "attributes": attributes, "updateEnabled": True}
        list_ids = self.list_ids()
        if list_ids:
            payload["listIds"] = list_ids
        return payload

    # Push: Brevo has no batch create, so one contact per request (the default).

    def send(self, chunk):
        return self.request("POST", "/contacts", json=chunk[0].payload)

    def parse_outcomes(self, chunk, response):
        item, status = chunk[0], response.status_code
        if status == 201:
            return [Outcome.accepted(item, json_or_empty(response).get("id", ""), http_status=status)]
        if status == 204:
            # Updated an existing contact: Brevo sends no body, so no id.
            return [Outcome.accepted(item, item.external_id, http_status=status)]
        return [Outcome.permanent(item, self.error_message(response), http_status=status)]

    def raise_for_account_error(self, response):
        status, body = response.status_code, json_or_empty(response)
        if status in (402, 403) or body.get("code") == "account_under_validation":
            raise CRMUnavailable(
                "Brevo refused the account: %s. Fix it in Brevo; syncing resumes by itself."
                % self.error_message(response),
                crm=self.name,
                status_code=status,
            )
        if status == 404 and "list" in body.get("message", "").lower():
            raise CRMUnavailable(
                "Brevo: %s Check BREVO_LIST_ID." % body.get("message", "List ID does not exist."),
                crm=self.name,
                status_code=status,
            )

    def rate_limit_message(self, response):
        return "Brevo's rate limit was reached; waiting as Brevo asked."

    def rate_limit_wait(self, response):
        return reset_seconds(response)

    def credentials_rejected_message(self, response):
        return (
            "Brevo rejected the API key (401 %s). Set a valid BREVO_API_KEY, then retry these contacts."
            % json_or_empty(response).get("code", "unauthorized")
        )

    def error_message(self, response):
        return brevo_error_message(response)

    def after_push(self, items, outcomes):
        return [self._with_brevo_id(outcome, item) for outcome, item in zip(outcomes, items)]

    def _with_brevo_id(self, outcome, item):
        """A contact that already existed in Brevo before its first sync answers 204
        with no id: look the id up once, so the admin can link to it."""
        if outcome.external_id or outcome.kind is not OutcomeKind.ACCEPTED:
            return outcome
        self.pacer.wait()
        try:
            response = self.request(
                "GET", "/contacts/%s" % quote(item.payload["email"], safe="@"), params={"identifierType": "email_id"}
            )
        except RetryableError:
            return outcome
        if response.status_code != 200:
            return outcome
        return Outcome.accepted(item, json_or_empty(response).get("id", ""), http_status=outcome.http_status)

    # Set-up: text attributes for the mapped fields Brevo lacks.

    def custom_field_key(self, name):
        return name.upper()

    def existing_custom_fields(self):
        response = self.request("GET", "/contacts/attributes")
        self.check_setup_answer(response)
        return {a.get("name", "").upper() for a in json_or_empty(response).get("attributes", [])}

    def create_custom_field(self, name):
        response = self.request("POST", "/contacts/attributes/normal/%s" % name.upper(), json={"type": "text"})
        self.check_setup_answer(response)
        return True


def brevo_sms(phone, default_country_code=""):
    """A phone number as Brevo's SMS attribute wants it: with its country code,
    "+441234567890". None when it cannot be made so (no country code, not a number):
    the contact still syncs, without SMS."""
    digits = PHONE_PUNCTUATION.sub("", str(phone))
    if digits.startswith("+"):
        digits = digits[1:]
    elif digits.startswith("00"):
        digits = digits[2:]
    elif default_country_code and digits.startswith("0"):
        digits = str(default_country_code).lstrip("+") + digits[1:]
    elif default_country_code:
        digits = str(default_country_code).lstrip("+") + digits
    else:
        return None
    # ASCII digits only: str.isdigit() also takes "²" and "٣", which Brevo refuses.
    if not (digits.isascii() and digits.isdigit()) or not 7 <= len(digits) <= 15 or digits.startswith("0"):
        return None
    return "+" + digits


def brevo_error_message(response):
    body = json_or_empty(response)
    message = body.get("message") or response.reason or "no message"
    duplicates = (body.get("metadata") or {}).get("duplicate_identifiers")
    if duplicates:
        message += " (already used by another Brevo contact: %s)" % ", ".join(duplicates)
    code = body.get("code")
    return "Brevo refused it: %s%s" % (message, " [%s]" % code if code else "")


def reset_seconds(response):
    """Brevo's x-sib-ratelimit-reset (seconds until the window resets); it sends
    no Retry-After."""
    try:
        return max(1.0, float(response.headers.get("x-sib-ratelimit-reset", "")))
    except ValueError:
        return None
