"""The base every CRM backend fills in.

A backend turns contacts into its CRM's payloads and pushes a batch of them over
HTTP, returning one Outcome per item. It never touches the database: the engine
claims work, calls the backend, paces it, and records what happened.
"""

import enum
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from contacts.emails import ascii_email, canonical_email
from crmsync_project.secrets import MIN_SECRET_LENGTH, SECRET_NAME

from ..conf import UNSET, get_crm_setting, in_sandbox, is_set, setting_name
from ..exceptions import (
    CRMConfigurationError,
    CRMUnavailable,
    InvalidContact,
    PermanentError,
    RateLimited,
    RetryableError,
)
from .deadline import Deadline, DeadlineAdapter
from .http import USER_AGENT, credentials_in_headers, retry_after_seconds, scrub_credentials, server_error_message
from .pacing import LocalPacer

logger = logging.getLogger(__name__)

# How long a CRM that rejected our credentials is paused: someone must fix them.
AUTH_PAUSE_SECONDS = 900
# A request refused with 429 is sent again this many times within its batch, each
# after a hold of every worker (CRMBackend.request)...
RATE_LIMIT_RETRIES = 3
# ...for the wait the CRM asks, or this long when it names none...
DEFAULT_RATE_LIMIT_HOLD_SECONDS = 1.0
# ...as long as the wait is no longer than this: a longer one (an hourly or daily
# quota) is not slept out inside a batch, whose lease would run out meanwhile.
MAX_HELD_RETRY_SECONDS = 30.0
# Contact fields under the lower-case names HubSpot's and Mautic's built-in
# properties share.
LOWER_CASE_FIELD_MAP = {
    "firstname": "first_name",
    "lastname": "last_name",
    "phone": "phone",
    "company": "company",
    "website": "website",
}

# The forms of an email a CRM may take; see CRMBackend.email_form.
EMAIL_FORMS = {"unicode": canonical_email, "ascii": ascii_email}


# How a CRM is written (<CRM>_SYNC_MODE), for CRMs that set supports_sync_modes.
UPSERT, UPDATE_ONLY, CREATE_ONLY = "upsert", "update_only", "create_only"
SYNC_MODES = (UPSERT, UPDATE_ONLY, CREATE_ONLY)
# SyncItem.operation values; the same strings as contacts.models.Operation.
REMOVE, ERASE = "remove", "erase"


class OutcomeKind(enum.Enum):
    ACCEPTED = "accepted"
    RETRY = "retry"
    WAIT = "wait"
    PERMANENT = "permanent"
    # The CRM has no record to update (its id is gone, or update_only found none):
    # nothing is created, and the row says so until staff select it again.
    NOT_IN_CRM = "not_in_crm"


@dataclass(frozen=True)
class SyncItem:
    """One operation on one contact: `key` identifies its ContactSync row.

    - `operation`: "" to create or update, REMOVE (mirror a delete) or ERASE (GDPR);
    - `payload`: what build_payload made (upserts only);
    - `external_id`: the CRM's id for the contact from an earlier sync, or "";
    - `email`: the address in the form this CRM takes; for a removal or erasure of
      a contact deleted locally, the only thing left to find the record by;
    - `previous_email`: the address the CRM's record had when it differs from
      `email` (the email was changed since the last sync), in the CRM's form;
    - `opted_out`: the CRM reported an opt-out for it (see contacts.models.OPT_OUT_EVENTS).
    `contact` is None for a removal or erasure whose contact is gone locally.
    """

    key: int
    contact: object
    payload: dict
    external_id: str = ""
    operation: str = ""
    email: str = ""
    previous_email: str = ""
    # The CRM told us the person opted out (unsubscribe, hard bounce, spam
    # complaint): a backend must never send anything that would undo it.
    opted_out: bool = False

    @property
    def is_removal(self):
        return self.operation in (REMOVE, ERASE)


@dataclass(frozen=True)
class Outcome:
    key: int
    kind: OutcomeKind
    external_id: str = ""
    message: str = ""
    retry_after: float = None
    http_status: int = None
    # A removal or erasure: whether the CRM had the record (False: "not found",
    # which is done too), and its answer for the erasure's proof.
    found: bool = True
    answer: str = ""

    @classmethod
    def accepted(cls, item, external_id="", *, http_status=None, message=""):
        """The CRM took it; `message` notes anything staff should know (kept on the attempt)."""
        return cls(
            item.key, OutcomeKind.ACCEPTED, external_id=str(external_id or ""), http_status=http_status, message=message
        )

    @classmethod
    def removed(cls, item, *, http_status=None, found=True, answer=""):
        """The CRM confirmed a removal or erasure, or had no such record (`found` False)."""
        return cls(item.key, OutcomeKind.ACCEPTED, http_status=http_status, found=found, answer=answer)

    @classmethod
    def not_in_crm(cls, item, message, *, http_status=None):
        return cls(item.key, OutcomeKind.NOT_IN_CRM, message=message, http_status=http_status)

    @classmethod
    def retry(cls, item, message, *, retry_after=None, http_status=None):
        return cls(item.key, OutcomeKind.RETRY, message=message, retry_after=retry_after, http_status=http_status)

    @classmethod
    def wait(cls, item, message, *, retry_after=None, http_status=429):
        return cls(item.key, OutcomeKind.WAIT, message=message, retry_after=retry_after, http_status=http_status)

    @classmethod
    def permanent(cls, item, message, *, http_status=None):
        return cls(item.key, OutcomeKind.PERMANENT, message=message, http_status=http_status)


class CRMBackend:
    """One CRM, over HTTP. The class owns the push flow (`push`); a CRM's module
    sets its facts and fills the hooks where it differs. See docs/adding-a-crm.md.

    Facts a subclass sets:

    - `name`: a short lower-case slug stored in the database (never rename it);
    - `verbose_name`: shown to staff;
    - `required_settings`: setting names without the CRM prefix (e.g. "API_KEY")
      that must all be set for the CRM to be enabled; `optional_settings` the rest
      (listing "CONCURRENCY" lets the deployment send requests side by side);
    - `default_batch_size`: contacts per engine batch when the deployment sets none;
    - `email_form`: how the CRM's API takes an email, "unicode" or "ascii";
    - `default_api_url`, `default_requests_per_second` (None: no pace),
      `default_timeout_seconds`, `default_concurrency`.

    Hooks, in the order of the flow: `build_payload(contact)` (required),
    `chunks(items)` with `contacts_per_request()`, `send(chunk)` (required), `classify(response)` with
    its parts (`raise_for_account_error`, `rate_limit_message`, `rate_limit_wait`,
    `credentials_rejected_message`, `error_message`), `parse_outcomes(chunk,
    response)` (required), `split_rejected(response)`, `after_push(items,
    outcomes)`; for set-up, `existing_custom_fields()` and
    `create_custom_field(name)`; `crm_fields()` for checking a staff mapping.
    Removals and erasures (SyncItem.operation) go one request per contact
    through `send_removal(item)`, `removal_not_found(item, response)` and
    `removal_outcome(item, response)`. A backend does HTTP only: no model, no database;
    the engine records what it returns and pauses the CRM when it raises
    CRMUnavailable.
    """

    name = None
    verbose_name = None
    required_settings = ()
    optional_settings = ()
    default_batch_size = 100
    # {CRM field: contact field or attributes key}; <CRM>_FIELD_MAP adds or overrides.
    default_field_map = {}
    # A staff mapping, a list of MappedField, put on the instance from the database
    # above the backend (integrations.mappings.use_mapping); when set it replaces
    # default_field_map and <CRM>_FIELD_MAP. None: those two apply.
    mapping = None
    # How the CRM's API takes an email's domain: "unicode" (as crmsync stores it)
    # or "ascii" (punycode). Each backend says which, citing docs/crm-api.md.
    email_form = "unicode"
    default_api_url = ""
    default_requests_per_second = None
    default_timeout_seconds = 30
    default_concurrency = 1
    # The window the CRM's documented limit is counted in: requests_per_second() x
    # this many requests in any such window (integrations.backends.pacing).
    rate_limit_window_seconds = 1.0
    # Whether <CRM>_SYNC_MODE applies (upsert, update_only, create_only); a CRM
    # that only receives events (n8n) has none.
    supports_sync_modes = False
    # Prefixes (lower-case) of the CRM's fields that hold a person's consent: a
    # field map never writes them, so that no sync can undo an opt-out.
    consent_field_prefixes = ()
    # What an erasure does in this CRM, for the erase confirmation page.
    erase_description = "The CRM is asked to erase the contact."
    # Whether the CRM calls crmsync's webhook, /integrations/<name>/webhook/, with
    # its events (verify_webhook and parse_webhook), secured by <CRM>_WEBHOOK_SECRET.
    receives_webhooks = False
    # Whether ensure_custom_fields applies (the CRM needs its fields created first).
    has_custom_fields = False
    # Custom field names the CRM has built in, as custom_field_key() gives them.
    built_in_fields = frozenset()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name is None:
            return  # an abstract base
        if not cls.name or cls.name != cls.name.lower() or len(cls.name) > 32:
            raise TypeError("%s.name must be a lower-case slug of at most 32 characters" % cls.__name__)
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
        # Where request slots come from; the engine puts in one shared by every worker.
        self.pacer = LocalPacer(self.requests_per_second(), self.rate_limit_window_seconds)
        self.session = requests.Session()
        # One connection per concurrent request, reused across requests.
        adapter = DeadlineAdapter(pool_connections=1, pool_maxsize=max(4, self.concurrency()))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = USER_AGENT
        self.configure_session(self.session)

    # Settings

    def setting(self, name, default=UNSET, *, cast=str):
        if name in self.overrides:
            return self.overrides[name]
        return get_crm_setting(self.name, name, default, cast=cast)

    @classmethod
    def in_sandbox(cls):
        """Whether the local sandbox stands in for this CRM (README, "The sandbox")."""
        return in_sandbox(cls.name)

    @classmethod
    def is_enabled(cls):
        return cls.in_sandbox() or (bool(cls.required_settings) and not cls.missing_settings())

    @classmethod
    def missing_settings(cls):
        if cls.in_sandbox():
            return []
        return [
            setting_name(cls.name, name) for name in cls.required_settings if not is_set(setting_name(cls.name, name))
        ]

    @classmethod
    def present_settings(cls):
        names = (*cls.required_settings, *cls.optional_settings)
        return [setting_name(cls.name, name) for name in names if is_set(setting_name(cls.name, name))]

    @property
    def api_url(self):
        return self.setting("API_BASE_URL", self.default_api_url).rstrip("/")

    @property
    def timeout(self):
        """Seconds one request may take in all: connecting, sending, the headers and
        the whole body. A request still going then is ended and counts as a timeout."""
        return self.setting("TIMEOUT_SECONDS", self.default_timeout_seconds, cast=int)

    def concurrency(self):
        if "CONCURRENCY" not in self.optional_settings:
            return self.default_concurrency
        return self.setting("CONCURRENCY", self.default_concurrency, cast=int)

    def sync_mode(self):
        """How the CRM is written: UPSERT (the default), UPDATE_ONLY or CREATE_ONLY."""
        if not self.supports_sync_modes:
            return UPSERT
        mode = str(self.setting("SYNC_MODE", UPSERT)).strip().lower() or UPSERT
        if mode not in SYNC_MODES:
            raise CRMConfigurationError(
                "%s must be one of %s; it is %r." % (setting_name(self.name, "SYNC_MODE"), ", ".join(SYNC_MODES), mode)
            )
        return mode

    @classmethod
    def mirrors_deletes(cls):
        """Whether a contact deleted locally, or skipped after it was synced, is
        removed from this CRM too (<CRM>_MIRROR_DELETES)."""
        return bool(get_crm_setting(cls.name, "MIRROR_DELETES", False, cast=bool))

    def requests_per_second(self):
        """The pace every worker together keeps, or None for a CRM without one."""
        if not self.default_requests_per_second:
            return None
        return self.setting("REQUESTS_PER_SECOND", self.default_requests_per_second, cast=float)

    def configure_session(self, session):
        """Hook: put the CRM's credentials and fixed headers on the session."""

    # Payload

    def build_payload(self, contact):
        """Hook: the CRM's payload for `contact`; InvalidContact if it cannot take it."""
        raise NotImplementedError("%s must implement build_payload(contact)" % self.__class__.__name__)

    def field_map(self):
        """{CRM field: source} of the fields in effect (see mapped_fields)."""
        return {field.target: field.source for field in self.mapped_fields()}

    def mapped_fields(self):
        """The MappedField list in effect: the staff mapping when there is one, else
        default_field_map with <CRM>_FIELD_MAP over it; never a consent field."""
        fields = self.mapping
        if fields is None:
            extra = parse_field_map(self.setting("FIELD_MAP", ""), setting_name(self.name, "FIELD_MAP"))
            fields = [
                MappedField.named(target, source) for target, source in {**self.default_field_map, **extra}.items()
            ]
        return [field for field in fields if not self.is_consent_field(field.target)]

    @classmethod
    def is_consent_field(cls, name):
        return name.lower().startswith(cls.consent_field_prefixes) if cls.consent_field_prefixes else False

    def mapped_values(self, contact):
        """{CRM field: value} for the contact's non-empty mapped values."""
        values = {field.target: field.value(contact) for field in self.mapped_fields()}
        return {target: value for target, value in values.items() if value not in ("", None)}

    def checked_email(self, contact):
        """The contact's email in the form this CRM takes (`email_form`), or
        InvalidContact if this CRM cannot take it."""
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

    @classmethod
    def external_url(cls, external_id):
        """Where staff can see the contact in the CRM, or None."""
        return None

    # The push flow

    def push(self, items):
        """Push `items`, `contacts_per_request()` per request, `concurrency()`
        requests at a time, each in a paced slot reserved just before it is sent;
        return one Outcome per item.

        A 429 costs one request: it is held and sent again (see request()). Only a
        request whose rate-limit retries are spent makes its contacts wait, and
        with them the requests not yet sent; a CRMUnavailable stops them too and
        is raised for the whole batch."""
        upserts = [item for item in items if not item.is_removal]
        # A removal or erasure is one request per contact, in every CRM.
        chunks = self.chunks(upserts) + [[item] for item in items if item.is_removal]
        halt = _Halt()
        if self.concurrency() <= 1 or len(chunks) <= 1:
            results = [self._push_chunk(chunk, halt) for chunk in chunks]
        else:
            with ThreadPoolExecutor(max_workers=self.concurrency(), thread_name_prefix=self.name) as pool:
                results = list(pool.map(self._push_chunk, chunks, [halt] * len(chunks)))
        if halt.error:
            raise halt.error
        outcomes = [outcome for outcomes in results for outcome in outcomes]
        keys = {item.key for item in upserts}
        upserted = [o for o in outcomes if o.key in keys]
        return self.after_push(upserts, upserted) + [o for o in outcomes if o.key not in keys]

    def chunks(self, items):
        """Hook: the upserts of a batch in the groups sent one request each; by
        default runs of contacts_per_request()."""
        if not items:
            return []
        size = self.contacts_per_request() or len(items)
        return [items[start : start + size] for start in range(0, len(items), size)]

    def _push_chunk(self, chunk, halt):
        if halt.waiting:
            return waiting_outcomes(chunk, halt.waiting)
        if halt.error:
            return []
        try:
            outcomes = self.send_in_slot(chunk)
        except CRMUnavailable as exc:
            halt.error = exc
            return []
        halt.waiting = halt.waiting or first_waiting(outcomes)
        return outcomes

    def send_and_judge(self, chunk):
        """One request for `chunk`, and what it says of each contact in it."""
        if chunk[0].is_removal:
            return [self.remove_and_judge(chunk[0])]
        try:
            response = self.send(chunk)
            rejection = self.classify(response)
        except RateLimited as exc:
            return [Outcome.wait(item, exc.message, retry_after=exc.retry_after) for item in chunk]
        except RetryableError as exc:
            return [Outcome.retry(item, str(exc), retry_after=exc.retry_after) for item in chunk]
        if rejection is None:
            return self.parse_outcomes(chunk, response)
        if isinstance(rejection, RetryableError):
            return [Outcome.retry(item, rejection.message, http_status=rejection.status_code) for item in chunk]
        if len(chunk) > 1 and self.split_rejected(response):
            return self._split(chunk)
        return [Outcome.permanent(item, rejection.message, http_status=rejection.status_code) for item in chunk]

    def remove_and_judge(self, item):
        """One removal or erasure request, and its outcome. The CRM not having the
        record is done ("not found"), not an error: there is nothing to remove."""
        try:
            response = self.send_removal(item)
            if response is None:
                return Outcome.removed(item, found=False, answer="No %s record to remove." % self.verbose_name)
            if self.removal_not_found(item, response):
                return Outcome.removed(
                    item, http_status=response.status_code, found=False, answer=removal_answer(response)
                )
            rejection = self.classify(response)
        except RateLimited as exc:
            return Outcome.wait(item, exc.message, retry_after=exc.retry_after)
        except RetryableError as exc:
            return Outcome.retry(item, str(exc), retry_after=exc.retry_after)
        except PermanentError as exc:
            return Outcome.permanent(item, exc.message, http_status=exc.status_code)
        if rejection is None:
            return self.removal_outcome(item, response)
        if isinstance(rejection, RetryableError):
            return Outcome.retry(item, rejection.message, http_status=rejection.status_code)
        return Outcome.permanent(item, rejection.message, http_status=rejection.status_code)

    def send_removal(self, item):
        """Hook: send the request that removes (item.operation REMOVE) or erases
        (ERASE) the contact, found by item.external_id or else item.email; return
        the response, or None when the CRM is known to have no such record."""
        raise PermanentError("%s cannot remove or erase contacts." % self.verbose_name, crm=self.name)

    def removal_not_found(self, item, response):
        """Hook: whether the answer says the CRM has no such record (done)."""
        return response.status_code == 404

    def removal_outcome(self, item, response):
        """Hook: the outcome of a removal the CRM answered with a 2xx."""
        return Outcome.removed(item, http_status=response.status_code, answer=removal_answer(response))

    def _split(self, chunk):
        """The CRM refused the whole request because of some of its contacts: send
        each half on its own, until each bad contact stands alone with its reason."""
        middle = len(chunk) // 2
        first = self.send_in_slot(chunk[:middle])
        waiting = first_waiting(first)
        if waiting:
            return first + waiting_outcomes(chunk[middle:], waiting)
        return first + self.send_in_slot(chunk[middle:])

    def send_in_slot(self, chunk):
        """send_and_judge in a paced slot of its own."""
        self.pacer.wait()
        return self.send_and_judge(chunk)

    def contacts_per_request(self):
        """Hook: the most contacts one request carries (None: the whole batch)."""
        return 1

    def send(self, chunk):
        """Hook: send one request for `chunk` (a list of SyncItem) and return the response."""
        raise NotImplementedError("%s must implement send(chunk)" % self.__class__.__name__)

    def classify(self, response):
        """None when the answer holds per-contact results (parse_outcomes reads
        them); else what refused the whole request: a RetryableError (the CRM's
        fault) or a PermanentError (the request's). Answers about the account
        raise: RateLimited, CRMUnavailable."""
        self.raise_for_account_error(response)
        status = response.status_code
        if status == 429:
            raise RateLimited(
                self.rate_limit_message(response),
                retry_after=self.rate_limit_wait(response),
                crm=self.name,
                status_code=status,
            )
        if status == 401:
            # Spend the batch's attempts: staff see on each contact what to fix.
            raise CRMUnavailable(
                self.credentials_rejected_message(response),
                pause_seconds=AUTH_PAUSE_SECONDS,
                fail_contacts=True,
                crm=self.name,
                status_code=status,
            )
        if status >= 500:
            return RetryableError(server_error_message(self.verbose_name, response), crm=self.name, status_code=status)
        if status >= 400:
            return PermanentError(self.error_message(response), crm=self.name, status_code=status)
        return None

    def raise_for_account_error(self, response):
        """Hook: raise CRMUnavailable for the CRM's answers that say nothing will
        succeed until someone acts (scopes, a disabled API, a missing list)."""

    def rate_limit_message(self, response):
        return "%s's rate limit was reached; waiting." % self.verbose_name

    def rate_limit_wait(self, response):
        """Seconds a 429 asks to wait, or None (the engine's default)."""
        return retry_after_seconds(response)

    def credentials_rejected_message(self, response):
        names = " and ".join(setting_name(self.name, name) for name in self.required_settings)
        return "%s rejected the credentials (HTTP 401). Check %s, then retry these contacts." % (
            self.verbose_name,
            names,
        )

    def error_message(self, response):
        """Hook: the CRM's reason for refusing, in one line for staff."""
        return "%s refused it (HTTP %d)." % (self.verbose_name, response.status_code)

    def parse_outcomes(self, chunk, response):
        """Hook: one Outcome per item of `chunk` from an answer classify() accepted."""
        raise NotImplementedError("%s must implement parse_outcomes(chunk, response)" % self.__class__.__name__)

    def split_rejected(self, response):
        """Hook: whether a request refused as a whole should be split in halves
        (the CRM refuses a batch for one bad contact)."""
        return False

    def after_push(self, items, outcomes):
        """Hook: a last step over the whole push (look up ids, add to a list)."""
        return outcomes

    # HTTP

    def request(self, method, path, **kwargs):
        """Send one request within the total deadline `timeout`; transport failures
        become RetryableError. The message names the CRM and the failure, never a URL
        with credentials or a header.

        The caller has waited for the request's slot. A 429 costs that one
        request: every worker is held for the wait the CRM asks, and it is sent
        again in a new slot, up to RATE_LIMIT_RETRIES times while that wait is
        short enough to spend inside a batch (rate_limit_hold). The last answer
        is returned either way; classify() turns a 429 into RateLimited."""
        response = self._send_once(method, path, kwargs)
        for _ in range(RATE_LIMIT_RETRIES):
            seconds = self.rate_limit_hold(response)
            if seconds is None:
                break
            self.pacer.hold(seconds)
            self.pacer.wait()
            response = self._send_once(method, path, kwargs)
        return response

    def _send_once(self, method, path, kwargs):
        if self.stop_sending.is_set():
            raise RetryableError(
                "Not sent to %s: this worker lost its hold on the batch; another worker will push it."
                % self.verbose_name,
                crm=self.name,
            )
        started = time.monotonic()
        # Counted for /metrics: the pacer's tally reaches the database with its next
        # slot, or when the engine's run ends.
        self.pacer.tally.note_request()
        response = self._send_within_deadline(method, path, kwargs)
        if response.status_code == 429:
            self.pacer.tally.note_rate_limited()
        scrub_credentials(response, self.credentials_sent(response.request))
        quota_wait = self.quota_spent_for(response)
        # A longer one is not slept out in a batch: the next request's 429 pauses the CRM.
        if quota_wait and quota_wait <= MAX_HELD_RETRY_SECONDS:
            self.pacer.hold(quota_wait)
        logger.debug(
            "crm=%s %s %s -> %s in %.0f ms",
            self.name,
            method,
            path,
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        return response

    def rate_limit_hold(self, response):
        """Seconds to hold every worker before a refused request is sent again, or
        None when it is not sent again: not a 429, or a wait longer than
        MAX_HELD_RETRY_SECONDS (an hourly or daily quota: its contacts wait and
        the engine pauses the CRM)."""
        if response.status_code != 429:
            return None
        seconds = self.rate_limit_wait(response)
        seconds = DEFAULT_RATE_LIMIT_HOLD_SECONDS if seconds is None else seconds
        return seconds if seconds <= MAX_HELD_RETRY_SECONDS else None

    def _send_within_deadline(self, method, path, kwargs):
        deadline = Deadline(self.timeout)
        url = path if path.startswith(("http://", "https://")) else self.api_url + path
        try:
            with deadline:
                response = self.session.request(method, url, timeout=deadline.requests_timeout(), **kwargs)
        except (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            if isinstance(exc, requests.Timeout) or deadline.passed:
                raise self._timed_out() from None
            raise RetryableError(
                "Could not connect to %s (%s)." % (self.verbose_name, type(exc).__name__), crm=self.name
            ) from None
        except (requests.exceptions.InvalidHeader, UnicodeEncodeError) as exc:
            # requests quotes the offending header value, a credential, in its message.
            raise CRMUnavailable(
                "Could not send a request to %s (%s): a credential in its settings has a space, "
                "a line break or a character a header cannot carry." % (self.verbose_name, type(exc).__name__),
                crm=self.name,
            ) from None
        if deadline.expired:
            # Cut off mid-answer: what arrived (a partial header block, say) can parse
            # as a complete response, but it is not the CRM's answer.
            raise self._timed_out()
        return response

    def _timed_out(self):
        return RetryableError("%s did not answer within %d s." % (self.verbose_name, self.timeout), crm=self.name)

    def credentials_sent(self, prepared):
        """The secrets a request carried: its credential headers and this
        backend's credential settings."""
        values = credentials_in_headers(prepared.headers)
        names = (*self.required_settings, *self.optional_settings)
        values.update(str(self.setting(name, "")) for name in names if SECRET_NAME.search(name))
        return {value for value in values if len(value) >= MIN_SECRET_LENGTH}

    def quota_spent_for(self, response):
        """Hook: seconds to send nothing more when the response's rate-limit headers
        say the quota is spent (before any 429), else None."""
        return None

    def close(self):
        """Release connections; the engine calls it when a run ends."""
        self.session.close()

    # Inbound webhooks (class methods: no HTTP session is needed to read a call)

    @classmethod
    def webhook_secret(cls):
        """<CRM>_WEBHOOK_SECRET; "" turns the CRM's inbound webhook off."""
        return str(get_crm_setting(cls.name, "WEBHOOK_SECRET", "") or "")

    @classmethod
    def webhook_url(cls, requested_url):
        """The URL the CRM calls, as registered there: <CRM>_WEBHOOK_URL when set
        (behind a proxy that rewrites the host), else the one Django saw."""
        return str(get_crm_setting(cls.name, "WEBHOOK_URL", "") or "") or requested_url

    @classmethod
    def verify_webhook(cls, call, secret):
        """Hook: raise inbound.WebhookRejected unless `call` (an inbound.WebhookCall)
        is authentic, the way the CRM signs or authenticates its calls; compare
        secrets with inbound.same_secret (constant time)."""
        raise NotImplementedError("%s sends no webhooks" % cls.__name__)

    @classmethod
    def parse_webhook(cls, call):
        """Hook: the inbound.CRMNotice list a verified call carries (events the
        project does not act on are left out); WebhookRejected(status=400) for a
        body that is not the CRM's."""
        raise NotImplementedError("%s sends no webhooks" % cls.__name__)

    # Set-up

    def ensure_custom_fields(self):
        """Create the custom fields the field map needs; return (created, existing)."""
        wanted = [name for name in self.field_map() if self.custom_field_key(name) not in self.built_in_fields]
        self.pacer.wait()
        have = self.existing_custom_fields()
        created, existing = [], []
        for name in wanted:
            if self.custom_field_key(name) in have:
                existing.append(name)
                continue
            self.pacer.wait()
            (created if self.create_custom_field(name) else existing).append(name)
        return created, existing

    def custom_field_key(self, name):
        """Hook: `name` as the CRM compares field names."""
        return name

    def crm_fields(self):
        """Hook: {field key (custom_field_key): the CRM's type name} of the contact
        fields the CRM has, fetched from it, to check a staff mapping against; None
        when the CRM takes any field (its mapping is checked for form only)."""
        return None

    def existing_custom_fields(self):
        """Hook: the keys (custom_field_key) of the fields the CRM has."""
        raise NotImplementedError("%s has no custom fields to set up" % self.__class__.__name__)

    def create_custom_field(self, name):
        """Hook: create the text field `name`; False if it turned out to exist."""
        raise NotImplementedError("%s has no custom fields to set up" % self.__class__.__name__)

    def check_setup_answer(self, response):
        """Raise for a set-up request the CRM refused, with its reason."""
        if response.status_code >= 400:
            self.raise_for_account_error(response)
            self.classify(response)  # raises for a rate limit and bad credentials
            raise RetryableError(self.error_message(response), crm=self.name, status_code=response.status_code)


class _Halt:
    """What the first request to stop the push tells the others not yet sent."""

    waiting = None  # the Outcome of a contact that waits for the CRM
    error = None  # a CRMUnavailable, raised for the whole batch


def removal_answer(response):
    """A removal's answer as the proof keeps it: status and body, one short line
    (the engine removes any email address from it before storing it)."""
    body = " ".join((response.text or "").split())
    return ("HTTP %d %s" % (response.status_code, body[:500])).strip()


def first_waiting(outcomes):
    return next((o for o in outcomes if o.kind is OutcomeKind.WAIT), None)


def waiting_outcomes(items, waiting):
    return [Outcome.wait(item, waiting.message, retry_after=waiting.retry_after) for item in items]


def parse_field_map(text, setting):
    """`"TARGET=source,OTHER=source"` -> {"TARGET": "source", ...}. A source is a
    Contact field (first_name, company, ...) or a key of the contact's attributes."""
    mapping = {}
    for pair in filter(None, (part.strip() for part in (text or "").split(","))):
        target, _, source = pair.partition("=")
        if not target.strip() or not source.strip():
            raise CRMConfigurationError("%s must look like TARGET=source,TARGET=source; %r does not." % (setting, pair))
        mapping[target.strip()] = source.strip()
    return mapping


def contact_value(contact, source):
    """The value a field map names: a Contact field, else a key of its attributes."""
    if source in CONTACT_FIELDS:
        return plain_value(getattr(contact, source))
    return plain_value((contact.attributes or {}).get(source))


def plain_value(value):
    """A contact's value as a payload carries it: "" for none, JSON for a list or dict."""
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        # JSON, not Python's repr ("['a']"): what anything reading the field can parse.
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value if isinstance(value, (bool, int, float)) else str(value).strip()


CONTACT_FIELDS = ("email", "first_name", "last_name", "phone", "company", "website", "source_url")

# Where a mapped CRM field's value comes from.
FROM_FIELD, FROM_ATTRIBUTE, FROM_CONSTANT = "field", "attribute", "constant"
SOURCE_KINDS = (FROM_FIELD, FROM_ATTRIBUTE, FROM_CONSTANT)
# What may be done to a text value before it is sent ("none" leaves it as it is).
TRANSFORMS = {
    "none": lambda text: text,
    "strip": str.strip,
    "lower": str.lower,
    "upper": str.upper,
    "title": str.title,
    "digits_only": lambda text: "".join(character for character in text if character.isdigit()),
}


@dataclass(frozen=True)
class MappedField:
    """What one CRM field receives: a Contact field (`source` one of
    CONTACT_FIELDS), a key of the contact's attributes, or a constant text, with a
    transform (a key of TRANSFORMS) applied to a text value."""

    target: str
    source: str
    kind: str = FROM_FIELD
    transform: str = "none"

    @classmethod
    def named(cls, target, source):
        """A field map's entry (default_field_map, <CRM>_FIELD_MAP): a Contact field
        when `source` is one, else an attributes key."""
        return cls(target, source, FROM_FIELD if source in CONTACT_FIELDS else FROM_ATTRIBUTE)

    def value(self, contact):
        if self.kind == FROM_CONSTANT:
            value = self.source
        elif self.kind == FROM_FIELD:
            value = plain_value(getattr(contact, self.source))
        else:
            value = plain_value((contact.attributes or {}).get(self.source))
        return TRANSFORMS[self.transform](value) if isinstance(value, str) else value
