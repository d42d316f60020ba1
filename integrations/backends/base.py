"""The interface every CRM backend implements.

A backend turns contacts into its CRM's payloads and pushes a batch of them,
returning one Outcome per item. It never touches the database: the engine claims
work, calls the backend and records what happened.
"""

import enum
from dataclasses import dataclass

from ..conf import UNSET, get_crm_setting, is_set, setting_name


class OutcomeKind(enum.Enum):
    ACCEPTED = "accepted"
    RETRY = "retry"
    RATE_LIMITED = "rate_limited"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class SyncItem:
    """One contact to push: `key` identifies its ContactSync row."""

    key: int
    contact: object
    payload: dict


@dataclass(frozen=True)
class Outcome:
    key: int
    kind: OutcomeKind
    external_id: str = ""
    message: str = ""
    retry_after: float = None
    http_status: int = None

    @classmethod
    def accepted(cls, item, external_id="", *, http_status=None):
        return cls(item.key, OutcomeKind.ACCEPTED, external_id=str(external_id or ""), http_status=http_status)

    @classmethod
    def retry(cls, item, message, *, retry_after=None, http_status=None):
        return cls(item.key, OutcomeKind.RETRY, message=message, retry_after=retry_after, http_status=http_status)

    @classmethod
    def rate_limited(cls, item, message, *, retry_after=None, http_status=429):
        return cls(
            item.key, OutcomeKind.RATE_LIMITED, message=message, retry_after=retry_after, http_status=http_status
        )

    @classmethod
    def permanent(cls, item, message, *, http_status=None):
        return cls(item.key, OutcomeKind.PERMANENT, message=message, http_status=http_status)


class CRMBackend:
    """One CRM. Subclasses set:

    - `name`: a short lower-case slug stored in the database (never rename it);
    - `verbose_name`: shown to staff;
    - `required_settings`: setting names without the CRM prefix (e.g. "API_KEY")
      that must all be set for the CRM to be enabled; `optional_settings` the rest;
    - `default_batch_size`: contacts per push when the deployment sets none;

    and implement `build_payload(contact)` (raise InvalidContact for a contact the
    CRM cannot take) and `push(items)`, which returns one Outcome per SyncItem or
    raises a SyncError subclass for the whole batch.
    """

    name = None
    verbose_name = None
    required_settings = ()
    optional_settings = ()
    default_batch_size = 100

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.name or cls.name != cls.name.lower() or len(cls.name) > 32:
            raise TypeError(
                "%s.name must be a lower-case slug of at most 32 characters" % cls.__name__
            )
        if not cls.verbose_name:
            raise TypeError("%s must set verbose_name" % cls.__name__)

    def __init__(self, **overrides):
        # Keyword arguments stand in for settings (tests, several accounts).
        self.overrides = {key.upper(): value for key, value in overrides.items()}

    def setting(self, name, default=UNSET, *, cast=str):
        if name in self.overrides:
            return self.overrides[name]
        return get_crm_setting(self.name, name, default, cast=cast)

    @classmethod
    def is_enabled(cls):
        return bool(cls.required_settings) and not cls.missing_settings()

    @classmethod
    def missing_settings(cls):
        return [
            setting_name(cls.name, name)
            for name in cls.required_settings
            if not is_set(setting_name(cls.name, name))
        ]

    @classmethod
    def present_settings(cls):
        names = (*cls.required_settings, *cls.optional_settings)
        return [setting_name(cls.name, name) for name in names if is_set(setting_name(cls.name, name))]

    def build_payload(self, contact):
        raise NotImplementedError(
            "%s must implement build_payload(contact)" % self.__class__.__name__
        )

    def push(self, items):
        raise NotImplementedError("%s must implement push(items)" % self.__class__.__name__)

    def close(self):
        """Release connections; the engine calls it when a run ends."""
