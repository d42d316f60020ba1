"""What a CRM's inbound webhook hands to crmsync: the call as it arrived, and
the events read from it. Each CRM's backend verifies and parses its own calls
(CRMBackend.verify_webhook, parse_webhook); integrations.webhooks.crm applies
the events to the database."""

import hmac
from dataclasses import dataclass
from datetime import datetime


class WebhookRejected(Exception):
    """The call is refused: a bad or missing signature (401), a body that is not
    the CRM's (400). `message` says why, without any secret."""

    def __init__(self, message, status=401):
        super().__init__(message)
        self.message, self.status = message, status


@dataclass(frozen=True)
class WebhookCall:
    method: str
    # The URL the CRM called, as it was registered there (HubSpot signs it).
    url: str
    # Case-insensitive: Django's request.headers.
    headers: object
    body: bytes
    received_at: datetime


@dataclass(frozen=True)
class CRMNotice:
    """One thing the CRM tells us about one of its records.

    `kind` is a contacts.models.CRMEvent value ("unsubscribed", "hard_bounce",
    "spam_complaint", "deleted", "privacy_deleted", "merged"); the record is found
    by `external_id` or, when the CRM sends none, by `email`. For "merged",
    `external_id` is a record that was merged away and `merged_into` the one that
    survives. `event_id` is unique per event (the CRM's own id where it has one),
    so the same event twice is taken once."""

    event_id: str
    kind: str
    external_id: str = ""
    email: str = ""
    merged_into: str = ""
    occurred_at: datetime = None


def same_secret(given, expected):
    """Compare a signature or token in constant time (hmac.compare_digest)."""
    return hmac.compare_digest(str(given or "").encode(), str(expected or "").encode())
