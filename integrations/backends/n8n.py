"""n8n: POST each contact (or each batch, as one JSON array) to a Webhook trigger.

A 2xx only means n8n accepted the call: with "Respond Immediately" (n8n's default)
the workflow runs afterwards and its failures never reach us (crm-api.md section 4).
The workflow reports back, when it wants to, through the enrichment callback.
"""

from email.utils import parsedate_to_datetime

from django.utils import timezone

from ..exceptions import CRMUnavailable, RateLimited, RetryableError
from .base import Outcome
from .base_requests import RequestsBackend, json_or_empty, sandbox_url, server_error_message

UNAVAILABLE_PAUSE_SECONDS = 600


class N8nBackend(RequestsBackend):
    name = "n8n"
    verbose_name = "n8n"
    required_settings = ("WEBHOOK_URL",)
    optional_settings = ("WEBHOOK_SECRET", "WEBHOOK_AUTH_HEADER", "WEBHOOK_BATCH", "CONCURRENCY", "TIMEOUT_SECONDS")
    default_batch_size = 50
    sandbox_path = "/n8n"
    # Our own workflow gets what we send: the form crmsync stores, readable, and
    # its ASCII form derivable without loss (docs/crm-api.md, section 4, "Email addresses").
    email_form = "unicode"

    def __init__(self, **overrides):
        super().__init__(**overrides)
        secret = self._secret()
        if secret:
            header = self.setting("WEBHOOK_AUTH_HEADER", "Authorization")
            # n8n's Header Auth compares the whole value; Bearer is the usual form.
            self.session.headers[header] = "Bearer %s" % secret if header.lower() == "authorization" else secret

    def _secret(self):
        if self.in_sandbox():
            from ..sandbox.n8n import WEBHOOK_SECRET

            return WEBHOOK_SECRET
        return self.setting("WEBHOOK_SECRET", "")

    @property
    def webhook_url(self):
        if self.in_sandbox():
            from ..sandbox.n8n import WEBHOOK_PATH

            return "%s/n8n/webhook/%s" % (sandbox_url(), WEBHOOK_PATH)
        return self.setting("WEBHOOK_URL")

    @property
    def api_url(self):
        return ""  # requests go to the full webhook URL

    def concurrency(self):
        return self.setting("CONCURRENCY", 4, cast=int)

    def batched(self):
        return self.setting("WEBHOOK_BATCH", False, cast=bool)

    # Payload

    def build_payload(self, contact):
        return {
            "contact_id": contact.pk,
            # Not checked_email: n8n passes every contact on to its workflow.
            "email": self.crm_email(contact.email),
            "first_name": contact.first_name,
            "last_name": contact.last_name,
            "phone": contact.phone,
            "company": contact.company,
            "website": contact.website,
            "source_url": contact.source_url,
            "attributes": contact.attributes or {},
        }

    @staticmethod
    def stamped(payload):
        # Stamped when sent, not when built: the built payload's hash (synced_hash)
        # must only change when the contact does, or every contact would re-sync.
        return {**payload, "timestamp": timezone.now().isoformat()}

    # Push

    def push(self, items):
        if not self.batched():
            return self.push_each(items, lambda item: self.request("POST", self.webhook_url, json=self.stamped(item.payload)))
        return self._push_array(items)

    def _push_array(self, items):
        """The whole batch as one JSON array: one workflow execution for all of it."""
        try:
            response = self.request("POST", self.webhook_url, json=[self.stamped(item.payload) for item in items])
        except RetryableError as exc:
            return [Outcome.retry(item, str(exc)) for item in items]
        if response.status_code == 413 and len(items) > 1:
            middle = len(items) // 2
            return self._push_array(items[:middle]) + self._push_array(items[middle:])
        return [self.outcome_for(item, response) for item in items]

    def outcome_for(self, item, response):
        status = response.status_code
        if 200 <= status < 300:
            return Outcome.accepted(item, http_status=status)
        self.raise_for_workflow_error(response)
        if status >= 500:
            return Outcome.retry(item, server_error_message(self.verbose_name, response), http_status=status)
        return Outcome.permanent(item, "n8n refused it (HTTP %d): %s" % (status, n8n_message(response)), http_status=status)

    def raise_for_workflow_error(self, response):
        """n8n's answers about the workflow as a whole rather than one contact."""
        status, message = response.status_code, n8n_message(response)
        if status == 429:
            # n8n has no rate limit; a proxy in front of it does (crm-api.md section 4).
            raise RateLimited(
                "n8n, or the proxy in front of it, asked to slow down (%s); waiting." % message,
                retry_after=retry_after_seconds(response),
                crm=self.name,
                status_code=status,
            )
        if status == 404:
            raise CRMUnavailable(
                "The n8n workflow is not active, or N8N_WEBHOOK_URL is wrong (n8n: %s). Activate the "
                "workflow in n8n, or fix N8N_WEBHOOK_URL; syncing resumes by itself." % message,
                pause_seconds=UNAVAILABLE_PAUSE_SECONDS,
                crm=self.name,
                status_code=status,
            )
        if status in (401, 403):
            raise CRMUnavailable(
                "n8n rejected the credentials (HTTP %d: %s). Check N8N_WEBHOOK_SECRET and "
                "N8N_WEBHOOK_AUTH_HEADER against the Webhook node's authentication; syncing resumes by itself."
                % (status, message),
                pause_seconds=UNAVAILABLE_PAUSE_SECONDS,
                crm=self.name,
                status_code=status,
            )
        if status == 500 and "authentication data" in message.lower():
            raise CRMUnavailable(
                "The n8n Webhook node has authentication on but no credential set (%s). Fix the node; "
                "syncing resumes by itself." % message,
                crm=self.name,
                status_code=status,
            )


def n8n_message(response):
    """n8n answers errors as JSON {code, message, hint} or as plain text."""
    body = json_or_empty(response)
    message = body.get("message") or response.text.strip() or response.reason or "no message"
    return message[:300]


def retry_after_seconds(response):
    """Retry-After in seconds, whether sent as seconds or as an HTTP date; None without one."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - timezone.now()).total_seconds())
    except (TypeError, ValueError, IndexError):
        return None
