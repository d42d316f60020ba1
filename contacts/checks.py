from django.core import checks

from .suppression import suppression_key


def check_suppression_key(app_configs=None, **kwargs):
    """Erasure keeps keyed hashes (contacts.suppression) and refuses to start
    without its key; say so before staff find out from a refused erasure."""
    if suppression_key():
        return []
    return [
        checks.Warning(
            "CRMSYNC_SUPPRESSION_KEY is not set, so erasing contacts (GDPR) is refused and the "
            "suppression list cannot be checked.",
            hint="Set CRMSYNC_SUPPRESSION_KEY to a long random secret of its own (not SECRET_KEY) and keep it: "
            "a new key makes every stored hash unrecognisable.",
            id="contacts.W001",
        )
    ]
