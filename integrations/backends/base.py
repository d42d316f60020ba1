"""The interface every CRM backend implements.

A backend turns contacts into its CRM's payloads and pushes a batch of them,
returning one Outcome per item. It never touches the database: the engine claims
work, calls the backend and records what happened.
"""

import enum
import json
import threading
from dataclasses import dataclass

from contacts.emails import ascii_email, canonical_email

from ..conf import UNSET, get_crm_setting, is_set, setting_name

# The forms of an email a CRM may take; see CRMBackend.email_form.
EMAIL_FORMS = {"unicode": canonical_email, "ascii": ascii_email}


class OutcomeKind(enum.Enum):
    ACCEPTED = "accepted"
    RETRY = "retry"
    WAIT = "wait"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class SyncItem:
    """One contact to push: `key` identifies its ContactSync row; `external_id`
    is the CRM's id for it from an earlier sync, or ""."""

    key: int
    contact: object
    payload: dict
    external_id: str = ""


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
    def wait(cls, item, message, *, retry_after=None, http_status=429):
        return cls(
            item.key, OutcomeKind.WAIT, message=message, retry_after=retry_after, http_status=http_status
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
    - `email_form`: how the CRM's API takes an email, "unicode" or "ascii"
      (checked_email and crm_email give that form);

    and implement `build_payload(contact)` (raise InvalidContact for a contact the
    CRM cannot take) and `push(items)`, which returns one Outcome per SyncItem or
    raises a SyncError subclass for the whole batch.
    """

    name = None
    verbose_name = None
    required_settings = ()
    optional_settings = ()
    default_batch_size = 100
    # {CRM field: contact field or attributes key}; <CRM>_FIELD_MAP adds or overrides.
    default_field_map = {}
    # How the CRM's API takes an email's domain: "unicode" (as crmsync stores it)
    # or "ascii" (punycode). Each backend says which, citing docs/crm-api.md.
    email_form = "unicode"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name is None:
            return  # an abstract base such as RequestsBackend
        if not cls.name or cls.name != cls.name.lower() or len(cls.name) > 32:
            raise TypeError(
                "%s.name must be a lower-case slug of at most 32 characters" % cls.__name__
            )
        if not cls.verbose_name:
            raise TypeError("%s must set verbose_name" % cls.__name__)
        if cls.email_form not in EMAIL_FORMS:
            raise TypeError("%s.email_form must be one of %s" % (cls.__name__, ", ".join(EMAIL_FORMS)))

    def __init__(self, **overrides):
        # Keyword arguments stand in for settings (tests, several accounts).
        self.overrides = {key.upper(): value for key, value in overrides.items()}
        # Set by the engine when this worker can no longer renew its batch's lease:
        # requests not yet sent are not sent, since another worker may take the batch.
        self.stop_sending = threading.Event()

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

    def field_map(self):
        extra = parse_field_map(self.setting("FIELD_MAP", ""), setting_name(self.name, "FIELD_MAP"))
        return {**self.default_field_map, **extra}

    def checked_email(self, contact):
        """The contact's email in the form this CRM takes (`email_form`), or
        InvalidContact if this CRM cannot take it."""
        from django.core.exceptions import ValidationError
        from django.core.validators import validate_email

        from ..exceptions import InvalidContact

        email = self.crm_email(contact.email)
        try:
            validate_email(contact.email)
            # A domain IDNA cannot map has no ASCII form for such a CRM to take.
            valid = self.email_form != "ascii" or email.rpartition("@")[2].isascii()
        except ValidationError:
            valid = False
        if not valid:
            raise InvalidContact("%r is not an email address %s can take." % (contact.email, self.verbose_name))
        return email

    def crm_email(self, email):
        """`email` in the form this CRM takes, without validating it; the same
        mailbox always gives the same text, whatever its spelling."""
        return EMAIL_FORMS[self.email_form](email)

    def mapped_values(self, contact):
        """{CRM field: value} for the contact's non-empty mapped values."""
        values = {target: contact_value(contact, source) for target, source in self.field_map().items()}
        return {target: value for target, value in values.items() if value not in ("", None)}

    @classmethod
    def external_url(cls, external_id):
        """Where staff can see the contact in the CRM, or None."""
        return None

    def build_payload(self, contact):
        raise NotImplementedError(
            "%s must implement build_payload(contact)" % self.__class__.__name__
        )

    def push(self, items):
        raise NotImplementedError("%s must implement push(items)" % self.__class__.__name__)

    def close(self):
        """Release connections; the engine calls it when a run ends."""


def parse_field_map(text, setting):
    """`"TARGET=source,OTHER=source"` -> {"TARGET": "source", ...}. A source is a
    Contact field (first_name, company, ...) or a key of the contact's attributes."""
    from ..exceptions import CRMConfigurationError

    mapping = {}
    for pair in filter(None, (part.strip() for part in (text or "").split(","))):
        target, _, source = pair.partition("=")
        if not target.strip() or not source.strip():
            raise CRMConfigurationError(
                "%s must look like TARGET=source,TARGET=source; %r does not." % (setting, pair)
            )
        mapping[target.strip()] = source.strip()
    return mapping


def contact_value(contact, source):
    """The value a field map names: a Contact field, else a key of its attributes."""
    if source in CONTACT_FIELDS:
        value = getattr(contact, source)
    else:
        value = (contact.attributes or {}).get(source)
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        # JSON, not Python's repr ("['a']"): what anything reading the field can parse.
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value if isinstance(value, (bool, int, float)) else str(value).strip()


CONTACT_FIELDS = ("email", "first_name", "last_name", "phone", "company", "website", "source_url")
