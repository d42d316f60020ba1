"""HTTP plumbing shared by the backends that talk to a CRM's REST API."""

import base64
import binascii
import functools
import importlib.util
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, quote_plus

import requests

from crmsync_project.secrets import FILTERED, MIN_SECRET_LENGTH, SECRET_NAME

from ..conf import get_setting
from ..exceptions import CRMUnavailable, RateLimited, RetryableError
from ..ratelimit import SharedPacer, wait_until
from .base import CRMBackend, Outcome
from .deadline import Deadline, DeadlineAdapter

logger = logging.getLogger(__name__)

USER_AGENT = "crmsync/1.0 (+https://github.com/crmsync/crmsync)"
# Headers whose values are credentials (settings: crmsync_project.secrets.SECRET_NAME).
CREDENTIAL_HEADER = re.compile(r"auth|key|token|secret|password", re.IGNORECASE)


@functools.cache
def has_emulator(crm):
    """Whether the sandbox emulates this CRM: its module sits in integrations/sandbox/."""
    return importlib.util.find_spec("integrations.sandbox.%s" % crm) is not None


def sandbox_url():
    """The local CRM sandbox every backend talks to instead, or "" (see README)."""
    return get_setting("CRMSYNC_SANDBOX_URL", "").rstrip("/")


class RequestsBackend(CRMBackend):
    """A backend over HTTP. Subclasses set:

    - `default_api_url`, and `sandbox_path`: where the CRM's API root sits on the
      sandbox (e.g. "/brevo/v3"); in sandbox mode the sandbox's placeholder
      credentials from `sandbox_credentials()` replace the real ones;
    - `default_requests_per_second`: the pace every worker together keeps.
    """

    default_api_url = None
    sandbox_path = None
    default_requests_per_second = None
    default_timeout_seconds = 30

    def __init__(self, **overrides):
        super().__init__(**overrides)
        self.session = requests.Session()
        # One connection per concurrent request, reused across requests.
        adapter = DeadlineAdapter(pool_connections=1, pool_maxsize=max(4, self.concurrency()))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = USER_AGENT
        self._pacer = None

    @classmethod
    def in_sandbox(cls):
        return bool(sandbox_url() and cls.sandbox_path and has_emulator(cls.name))

    @classmethod
    def is_enabled(cls):
        return cls.in_sandbox() or super().is_enabled()

    @classmethod
    def missing_settings(cls):
        return [] if cls.in_sandbox() else super().missing_settings()

    def sandbox_credentials(self):
        """{setting name: placeholder} that the sandbox accepts for this CRM."""
        return {}

    def credential(self, name):
        if self.in_sandbox():
            return self.sandbox_credentials()[name]
        return self.setting(name)

    @property
    def api_url(self):
        if self.in_sandbox():
            return sandbox_url() + self.sandbox_path
        return self.setting("API_BASE_URL", self.default_api_url).rstrip("/")

    def concurrency(self):
        return 1

    @property
    def timeout(self):
        """Seconds one request may take in all: connecting, sending, the headers and
        the whole body. A request still going then is ended and counts as a timeout."""
        return self.setting("TIMEOUT_SECONDS", self.default_timeout_seconds, cast=int)

    @property
    def pacer(self):
        if self._pacer is None and self.default_requests_per_second:
            rate = float(self.setting("REQUESTS_PER_SECOND", self.default_requests_per_second))
            self._pacer = SharedPacer(self.name, rate)
        return self._pacer

    def request(self, method, path, **kwargs):
        """Send one request within the total deadline `timeout`; transport failures
        become RetryableError. The message names the CRM and the failure, never a URL
        with credentials or a header."""
        if self.stop_sending.is_set():
            raise RetryableError(
                "Not sent to %s: this worker lost its hold on the batch; another worker will push it."
                % self.verbose_name,
                crm=self.name,
            )
        started = time.monotonic()
        deadline = Deadline(self.timeout)
        try:
            with deadline:
                response = self.session.request(
                    method, self.api_url + path, timeout=deadline.requests_timeout(), **kwargs
                )
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
        scrub_credentials(response, self.credentials_sent(response.request))
        quota_wait = self.quota_spent_for(response)
        if quota_wait and self.pacer:
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

    def _timed_out(self):
        return RetryableError("%s did not answer within %d s." % (self.verbose_name, self.timeout), crm=self.name)

    def credentials_sent(self, prepared):
        """The secrets a request carried: its credential headers (and what a Bearer
        or Basic value holds) and this backend's credential settings."""
        values = set()
        for name, value in prepared.headers.items():
            if CREDENTIAL_HEADER.search(name):
                scheme, _, credentials = value.partition(" ")
                values.update((value, credentials))
                if scheme.lower() == "basic":
                    values.update(_basic_credentials(credentials))
        if not self.in_sandbox():
            names = (*self.required_settings, *self.optional_settings)
            values.update(str(self.setting(name, "")) for name in names if SECRET_NAME.search(name))
        return {value for value in values if len(value) >= MIN_SECRET_LENGTH}

    def quota_spent_for(self, response):
        """Seconds to send nothing more when the response's rate-limit headers say
        the quota is spent (before any 429), else None."""
        return None

    def push_each(self, items, send):
        """Push one request per item, `concurrency()` at a time, each in its paced
        slot. `send(item)` returns the response; `outcome_for(item, response)`
        judges it. A rate limit stops the requests not yet sent; a CRMUnavailable
        stops them too and is raised for the whole batch."""
        slots = self.pacer.reserve(len(items)) if self.pacer else [0.0] * len(items)
        halt = _Halt()
        with ThreadPoolExecutor(max_workers=self.concurrency(), thread_name_prefix=self.name) as pool:
            futures = [pool.submit(self._push_one, item, slot, send, halt) for item, slot in zip(items, slots)]
            outcomes = [future.result() for future in futures]
        if halt.error:
            raise halt.error
        return outcomes

    def _push_one(self, item, slot, send, halt):
        if halt.rate_limited:
            return Outcome.wait(item, halt.rate_limited.message, retry_after=halt.rate_limited.retry_after)
        if halt.error:
            return None
        wait_until(slot)
        try:
            return self.outcome_for(item, send(item))
        except RateLimited as exc:
            halt.rate_limited = exc
            return Outcome.wait(item, exc.message, retry_after=exc.retry_after)
        except RetryableError as exc:
            return Outcome.retry(item, str(exc), retry_after=exc.retry_after)
        except CRMUnavailable as exc:
            halt.error = exc
            return None

    def outcome_for(self, item, response):
        raise NotImplementedError("%s must implement outcome_for(item, response)" % self.__class__.__name__)

    def close(self):
        self.session.close()


class _Halt:
    """What the first failing request tells the others still waiting for their slot."""

    rate_limited = None
    error = None


def scrub_credentials(response, secrets):
    """Replace the credentials in an answer, as some APIs echo the request's headers
    or body in their errors; the error messages built from it then hold none."""
    content = response._content  # already read: the backends never stream
    if not isinstance(content, bytes):
        return
    for secret in sorted(secrets, key=len, reverse=True):
        for form in _written_forms(secret):
            content = content.replace(form, FILTERED.encode())
            if response.reason and form.decode() in response.reason:
                response.reason = response.reason.replace(form.decode(), FILTERED)
    response._content = content


def _written_forms(secret):
    """The secret as an answer may spell it: as is, in a JSON string (PHP also
    escapes "/"), URL-encoded."""
    in_json = json.dumps(secret)[1:-1]
    forms = {secret, in_json, in_json.replace("/", "\\/"), quote(secret, safe=""), quote_plus(secret)}
    return [form.encode() for form in forms]


def _basic_credentials(value):
    try:
        # requests encodes them as Latin-1.
        user, _, password = base64.b64decode(value, validate=True).decode("latin-1").partition(":")
    except binascii.Error:
        return []
    return [password, "%s:%s" % (user, password)]


def json_or_empty(response):
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {"items": body}


def server_error_message(crm_name, response):
    # No "will retry": the same words end the message of a contact that gave up.
    reason = " %s" % response.reason if response.reason else ""
    return "%s answered HTTP %d%s, an error on its side." % (crm_name, response.status_code, reason)
