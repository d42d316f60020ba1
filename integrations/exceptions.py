"""Errors of crmsync's CRM layer.

SyncError and its subclasses are about pushing contacts: a backend raises them for
a whole batch, or turns them into per-contact outcomes. Configuration problems are
a separate branch (CRMConfigurationError is an ImproperlyConfigured) so that no
retry path can swallow them.
"""

from django.core.exceptions import ImproperlyConfigured


class UnknownCRM(ValueError):
    """A CRM name that no registered backend answers to."""

    def __init__(self, name, known):
        self.name = name
        self.known = tuple(known)
        super().__init__("Unknown CRM %r. Known CRMs: %s." % (name, ", ".join(self.known) or "none"))


class SyncError(Exception):
    """A push failed. `message` is written for staff; it never holds a secret."""

    def __init__(self, message, *, crm=None, status_code=None):
        super().__init__(message)
        self.message = message
        self.crm = crm
        self.status_code = status_code

    def __str__(self):
        if self.status_code:
            return "%s (HTTP %s)" % (self.message, self.status_code)
        return self.message


class RetryableError(SyncError):
    """Worth trying again later: timeouts, connection errors, 5xx."""

    def __init__(self, message, *, retry_after=None, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class RateLimited(RetryableError):
    """The CRM asked us to slow down. Waiting it out costs no attempt, and the
    whole CRM is paused until `retry_after` seconds have passed."""


class PermanentError(SyncError):
    """The CRM refused this contact; sending it again unchanged will not help."""


class InvalidContact(PermanentError):
    """The contact cannot be turned into this CRM's payload; nothing was sent."""


class CRMUnavailable(SyncError):
    """Nothing will succeed until someone acts (bad credentials, inactive workflow).
    The CRM is paused for every worker. The contacts of the batch keep their
    attempts, unless `fail_contacts` is set: then they end in Error with this
    message, so that staff see on each one what to fix before retrying."""

    def __init__(self, message, *, pause_seconds=None, fail_contacts=False, **kwargs):
        super().__init__(message, **kwargs)
        self.pause_seconds = pause_seconds
        self.fail_contacts = fail_contacts


class CRMConfigurationError(ImproperlyConfigured):
    """A setting is missing or invalid; the message names the variable to set."""
