"""The suppression list: keyed hashes of erased people's emails.

An erased person must not come back through an import, an API upsert or an
enrichment callback. crmsync keeps no address for them, only
HMAC-SHA256(CRMSYNC_SUPPRESSION_KEY, canonical email): enough to recognise the
address when it is offered again, useless to anyone without the key. The key is
its own secret, not SECRET_KEY, so that rotating one does not break the other.
Rotating CRMSYNC_SUPPRESSION_KEY itself makes every stored hash unrecognisable:
don't.
"""

import hashlib
import hmac

from django.conf import settings

from .emails import canonical_email
from .models import Suppression

SUPPRESSED_REASON = "this person was erased (GDPR) and is on the suppression list; staff can lift it in the admin"


class SuppressionKeyMissing(Exception):
    """Erasure and suppression need CRMSYNC_SUPPRESSION_KEY."""

    def __init__(self):
        super().__init__(
            "CRMSYNC_SUPPRESSION_KEY is not set. Erasure keeps a keyed hash of each erased email "
            "and needs its own key: set CRMSYNC_SUPPRESSION_KEY (e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))') in the environment or .env, and keep it."
        )


def suppression_key():
    return getattr(settings, "CRMSYNC_SUPPRESSION_KEY", "") or ""


def email_hash(email):
    """The keyed hash of `email`'s canonical form; SuppressionKeyMissing without a key."""
    key = suppression_key()
    if not key:
        raise SuppressionKeyMissing()
    return hmac.new(key.encode(), canonical_email(email).encode(), hashlib.sha256).hexdigest()


def suppressed(emails):
    """The addresses among `emails` on the suppression list, in one query. Without a
    key nothing can have been suppressed, so none are."""
    if not suppression_key():
        return set()
    by_hash = {}
    for email in emails:
        if email:
            by_hash.setdefault(email_hash(email), set()).add(email)
    if not by_hash:
        return set()
    found = Suppression.objects.filter(email_hash__in=list(by_hash)).values_list("email_hash", flat=True)
    return {email for digest in found for email in by_hash[digest]}


def is_suppressed(email):
    return bool(suppressed([email]))


def lift(emails):
    """Take addresses off the suppression list (staff's explicit decision); returns how many."""
    hashes = [email_hash(email) for email in emails]
    deleted, _ = Suppression.objects.filter(email_hash__in=hashes).delete()
    return deleted
