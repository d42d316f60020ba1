"""n8n: POST each contact (or each batch, as one JSON array) to a Webhook trigger.

Every body says what happened in "event": "upsert" (the contact, with
"previous_email" set when its email changed since the last sync, so the workflow
can find the old record), "delete" (a mirrored delete, N8N_MIRROR_DELETES) or
"erase" (a GDPR erasure: the workflow must erase the person wherever it put them).

A 2xx only means n8n accepted the call: with "Respond Immediately" (n8n's default)
the workflow runs afterwards and its failures never reach us (docs/crm-api.md, section 4, "Responses").
The workflow reports back, when it wants to, through the enrichment callback.
"""

from django.utils import timezone

from ..exceptions import CRMUnavailable
from .base import ERASE, CRMBackend, Outcome
from .http import json_or_empty

UNAVAILABLE_PAUSE_SECONDS = 600


class N8nBackend(CRMBackend):
    name = "n8n"
    verbose_name = "n8n"
    erase_description = 'An "erase" event is sent to the workflow, which must do the erasing.'
    required_settings = ("WEBHOOK_URL",)
    optional_settings = (
        "WEBHOOK_SECRET",
        "WEBHOOK_AUTH_HEADER",
        "WEBHOOK_BATCH",
        "MIRROR_DELETES",
        "CONCURRENCY",
        "TIMEOUT_SECONDS",
    )
    default_batch_size = 50
    default_concurrency = 4
    # Our own workflow gets what we send: the form crmsync stores, readable, and
    # its ASCII form derivable without loss (docs/crm-api.md, section 4, "Email addresses").
    email_form = "unicode"

    def configure_session(self, session):
        secret = self.setting("WEBHOOK_SECRET", "")
        if secret:
            header = self.setting("WEBHOOK_AUTH_HEADER", "Authorization")
            # n8n's Header Auth compares the whole value; Bearer is the usual form.
            session.headers[header] = "Bearer %s" % secret if header.lower() == "authorization" else secret

    def batched(self):
        return self.setting("WEBHOOK_BATCH", False, cast=bool)

    # Payload

    def build_payload(self, contact):
        payload = {
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
        # What a staff mapping sends; without one n8n maps nothing and the body
        # (so its hash) stays as it was.
        fields = self.mapped_values(contact)
        if fields:
            payload["fields"] = fields
        return payload

    @staticmethod
    def stamped(item):
        # Stamped when sent, not when built: the built payload's hash (synced_hash)
        # must only change when the contact does, or every contact would re-sync.
        return {
            "event": "upsert",
            **item.payload,
            "previous_email": item.previous_email,
            "timestamp": timezone.now().isoformat(),
        }

    # Push: one POST per contact, or with N8N_WEBHOOK_BATCH the whole batch as one
    # JSON array (one workflow execution for all of it).

    def contacts_per_request(self):
        return None if self.batched() else 1

    def send(self, chunk):
        url = self.setting("WEBHOOK_URL")
        if self.batched():
            return self.request("POST", url, json=[self.stamped(item) for item in chunk])
        return self.request("POST", url, json=self.stamped(chunk[0]))

    # Removal and erasure: an event to the same workflow, which does the work.

    def send_removal(self, item):
        event = {
            "event": "erase" if item.operation == ERASE else "delete",
            "contact_id": item.contact.pk if item.contact else None,
            "email": item.email,
            "timestamp": timezone.now().isoformat(),
        }
        return self.request("POST", self.setting("WEBHOOK_URL"), json=[event] if self.batched() else event)

    def removal_not_found(self, item, response):
        # n8n's 404 means the workflow is off (raise_for_account_error), not "no such person".
        return False

    def split_rejected(self, response):
        return response.status_code == 413  # too large for n8n's payload limit

    def parse_outcomes(self, chunk, response):
        # A 2xx only means n8n took the call; the workflow's own failures never reach us.
        status = response.status_code
        if 200 <= status < 300:
            return [Outcome.accepted(item, http_status=status) for item in chunk]
        return [Outcome.permanent(item, self.error_message(response), http_status=status) for item in chunk]

    def raise_for_account_error(self, response):
        """n8n's answers about the workflow as a whole rather than one contact."""
        status, message = response.status_code, n8n_message(response)
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

    def rate_limit_message(self, response):
        # n8n has no rate limit; a proxy in front of it does (docs/crm-api.md, section 4).
        return "n8n, or the proxy in front of it, asked to slow down (%s); waiting." % n8n_message(response)

    def error_message(self, response):
        return "n8n refused it (HTTP %d): %s" % (response.status_code, n8n_message(response))


def n8n_message(response):
    """n8n answers errors as JSON {code, message, hint} or as plain text."""
    body = json_or_empty(response)
    message = body.get("message") or response.text.strip() or response.reason or "no message"
    return message[:300]
