"""What every CRM emulator shares: requests and responses, routing, rate limiters."""

import json
import math
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, unquote


class BadJSON(ValueError):
    def __init__(self, message, line=1, column=1):
        super().__init__(message)
        self.line, self.column = line, column


@dataclass
class Request:
    method: str
    path: str  # below the emulator's prefix, e.g. "/v3/contacts"
    query_string: str
    headers: dict  # lower-cased names
    body: bytes = b""

    def json(self):
        try:
            return json.loads(self.body or b"null")
        except json.JSONDecodeError as exc:
            raise BadJSON(exc.msg, exc.lineno, exc.colno) from None
        except ValueError as exc:
            raise BadJSON(str(exc)) from None

    def json_object(self):
        """The body as a JSON object, {} when empty; any other JSON is as bad as none."""
        body = self.json()
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise BadJSON("a JSON object was expected")
        return body

    @property
    def query(self):
        """The query string's parameters, the first value of each."""
        return {name: values[0] for name, values in parse_qs(self.query_string, keep_blank_values=True).items()}

    def header(self, name, default=""):
        return self.headers.get(name.lower(), default)

    def params(self, name):
        """Every value of a repeated query parameter."""
        return parse_qs(self.query_string, keep_blank_values=True).get(name, [])


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict = field(default_factory=dict)


def json_response(status, data, headers=None):
    body = json.dumps(data).encode()
    return Response(status, body, {"Content-Type": "application/json;charset=utf-8", **(headers or {})})


def text_response(status, text, headers=None):
    return Response(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8", **(headers or {})})


def html_response(status, html, headers=None):
    return Response(status, html.encode(), {"Content-Type": "text/html", **(headers or {})})


def empty_response(status, headers=None):
    return Response(status, b"", dict(headers or {}))


def gateway_page(status, reason):
    """What an edge proxy answers when the API behind it fails: HTML, not the API's JSON."""
    title = "%d %s" % (status, reason)
    page = "<html><head><title>%s</title></head><body><h1>%s</h1></body></html>" % (title, title)
    return html_response(status, page)


def correlation_id():
    return str(uuid.uuid4())


def route(method, pattern):
    """Mark an emulator method as the handler of METHOD on a path pattern."""

    def mark(function):
        function.route = (method, re.compile("^%s$" % pattern))
        return function

    return mark


# The limiter models a Limit can follow (what "N requests per T seconds" means):
FIXED_WINDOW = "fixed"  # N per window of T s, the windows back to back (counts reset at each boundary)
SLIDING_WINDOW = "sliding"  # at most N in ANY T s (HubSpot's TEN_SECONDLY_ROLLING)
TOKEN_BUCKET = "bucket"  # a bucket of N tokens refilled continuously at N / T a second
LIMITER_MODELS = (FIXED_WINDOW, SLIDING_WINDOW, TOKEN_BUCKET)


class Limit:
    """At most `requests` per `seconds` under one of LIMITER_MODELS: a token
    bucket by default (Brevo), a sliding window with rolling=True (HubSpot).
    Every method takes `now` (time.monotonic() when None), so tests can drive it
    with a clock of their own."""

    def __init__(self, requests, seconds, rolling=False, model=None):
        self.requests, self.seconds = requests, seconds
        self.model = model or (SLIDING_WINDOW if rolling else TOKEN_BUCKET)
        if self.model not in LIMITER_MODELS:
            raise ValueError("model must be one of %s" % ", ".join(LIMITER_MODELS))
        self.tokens, self.updated = float(requests), None
        self.stamps = deque()  # sliding window: when each request in it was let through
        self.window, self.count = None, 0  # fixed window: which window, and its count

    @property
    def rolling(self):
        return self.model == SLIDING_WINDOW

    def _catch_up(self, now):
        if self.model == SLIDING_WINDOW:
            while self.stamps and self.stamps[0] <= now - self.seconds:
                self.stamps.popleft()
        elif self.model == FIXED_WINDOW:
            window = math.floor(now / self.seconds)
            if window != self.window:
                self.window, self.count = window, 0
        else:
            elapsed = 0.0 if self.updated is None else now - self.updated
            self.tokens = min(self.requests, self.tokens + elapsed * self.requests / self.seconds)
            self.updated = now

    def wait(self, now=None):
        """Seconds until one more request is allowed; 0 when it is now."""
        now = _now(now)
        self._catch_up(now)
        if self.model == SLIDING_WINDOW:
            over = len(self.stamps) - self.requests
            return 0.0 if over < 0 else self.stamps[over] + self.seconds - now
        if self.model == FIXED_WINDOW:
            return 0.0 if self.count < self.requests else self._window_end() - now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) * self.seconds / self.requests

    def take(self, now=None):
        now = _now(now)
        self._catch_up(now)
        if self.model == SLIDING_WINDOW:
            self.stamps.append(now)
        elif self.model == FIXED_WINDOW:
            self.count += 1
        else:
            self.tokens -= 1

    def remaining(self, now=None):
        now = _now(now)
        self._catch_up(now)
        if self.model == SLIDING_WINDOW:
            return max(0, self.requests - len(self.stamps))
        if self.model == FIXED_WINDOW:
            return max(0, self.requests - self.count)
        return max(0, int(self.tokens))

    def reset_in(self, now=None):
        """Seconds until the limit "resets", as a rate-limit header says it: the
        end of the current window (fixed), until the oldest request in the window
        leaves it (sliding), until the bucket is full again (bucket)."""
        now = _now(now)
        self._catch_up(now)
        if self.model == SLIDING_WINDOW:
            return self.stamps[0] + self.seconds - now if self.stamps else 0.0
        if self.model == FIXED_WINDOW:
            return self._window_end() - now
        return (self.requests - self.tokens) * self.seconds / self.requests

    def until_full(self, now=None):
        """Seconds until the whole allowance is back."""
        now = _now(now)
        self._catch_up(now)
        if self.model == SLIDING_WINDOW:
            return self.stamps[-1] + self.seconds - now if self.stamps else 0.0
        if self.model == FIXED_WINDOW:
            return 0.0 if self.count == 0 else self._window_end() - now
        return (self.requests - self.tokens) * self.seconds / self.requests

    def _window_end(self):
        return (self.window + 1) * self.seconds

    def view(self):
        return {"requests": self.requests, "seconds": self.seconds, "model": self.model}


def _now(now):
    return time.monotonic() if now is None else now


class DailyQuota:
    """At most `requests` per UTC day; the count starts again at midnight."""

    seconds = 86_400

    def __init__(self, requests):
        self.requests, self.day, self.used = requests, None, 0

    def _catch_up(self):
        today = datetime.now(UTC).date()
        if today != self.day:
            self.day, self.used = today, 0

    def wait(self, now=None):
        self._catch_up()
        return 0.0 if self.used < self.requests else self.until_full()

    def take(self, now=None):
        self._catch_up()
        self.used += 1

    def remaining(self, now=None):
        self._catch_up()
        return max(0, self.requests - self.used)

    def reset_in(self, now=None):
        return self.until_full(now)

    def until_full(self, now=None):
        current = datetime.now(UTC)
        midnight = datetime.combine(current.date() + timedelta(days=1), datetime.min.time(), UTC)
        return (midnight - current).total_seconds()


def whole_seconds(seconds):
    """Seconds as rate-limit headers give them: whole, rounded up, at least 1."""
    return max(1, math.ceil(seconds))


# Every emulator that sends webhooks takes these settings (POST
# /_sandbox/<crm>/settings): where to send its events, and the secret it signs
# or authenticates them with, as the real CRM is configured in its UI.
WEBHOOK_SETTINGS = {"webhook_url": "", "webhook_secret": ""}


class Emulator:
    """One CRM's API. A subclass sets `name` and `SETTINGS`, declares its handlers
    with @route, and overrides the hooks below it needs. Its state sits behind
    `self.lock`.

    Rate limits: limits_for() names the (name, Limit) pairs a request counts
    against; a request refused by one uses up none. limit_headers() gives each
    limit's headers (the first limit's win, then the refusing one's), and
    rate_limited() the 429 itself. A subclass that keeps its limits in
    `self.limits` ({name: Limit}) with `primary_limit` naming the main one gets
    set_primary_limit() for free.
    """

    name = None
    primary_limit = None
    server_error_statuses = (500, 502, 503)
    SETTINGS = {}
    # The event kinds (contacts.models.CRMEvent values) this CRM really sends by
    # webhook; empty for a CRM that sends none.
    WEBHOOK_EVENTS = ()

    @classmethod
    def all_settings(cls):
        return {**(WEBHOOK_SETTINGS if cls.WEBHOOK_EVENTS else {}), **cls.SETTINGS}

    def __init__(self, rng, rng_lock):
        self.lock = threading.RLock()
        self.rng, self.rng_lock = rng, rng_lock
        self.routes = self._collect_routes()
        self.limits = {}
        self.reset()

    def _collect_routes(self):
        routes = [
            getattr(self, attribute)
            for attribute in dir(type(self))
            if hasattr(getattr(type(self), attribute), "route")
        ]
        # Fixed paths before patterns: /v3/contacts/lists is not a contact called "lists".
        return sorted(routes, key=lambda handler: handler.route[1].groups)

    def reset(self):
        """Forget every record, setting and rate-limit count."""
        with self.lock:
            self.settings = self.all_settings()
            self.limits = self.default_limits()
            self.reset_records()

    def reset_records(self):
        pass

    def default_limits(self):
        """{name: Limit} at the CRM's real defaults."""
        return {}

    def contacts(self):
        """The stored contacts as the CRM's own GET returns them."""
        return []

    def set_primary_limit(self, requests, seconds):
        """Replace the CRM's main rate-limit window; None turns all its limits off."""
        with self.lock:
            if requests is None:
                self.limits = {}
            elif self.primary_limit:
                self.limits[self.primary_limit] = self.make_primary_limit(requests, seconds)

    def make_primary_limit(self, requests, seconds):
        return Limit(requests, seconds)

    def set_limiter_model(self, model):
        """Enforce the main limit, its numbers unchanged, under another of
        LIMITER_MODELS; False when this CRM has no main limit in force."""
        with self.lock:
            current = self.limits.get(self.primary_limit) if self.primary_limit else None
            if current is None:
                return False
            self.limits[self.primary_limit] = Limit(current.requests, current.seconds, model=model)
            return True

    def check_settings(self, settings):
        """None when these new setting values make sense, else why not."""
        return None

    def shuffled(self, items):
        with self.rng_lock:
            self.rng.shuffle(items)
        return items

    # The pipeline: route, authenticate, count against the limits, handle.

    def dispatch(self, request):
        handler, arguments, allowed = self._match(request)
        if handler is None:
            return self.no_route(request, allowed)
        refusal = self.authenticate(request)
        if refusal:
            return refusal
        refusal, headers = self._count(request)
        if refusal:
            return refusal
        try:
            response = handler(request, *arguments)
        except BadJSON as exc:
            response = self.bad_json(exc)
        for key, value in headers.items():
            response.headers.setdefault(key, value)
        return response

    def _match(self, request):
        allowed = []
        for handler in self.routes:
            method, pattern = handler.route
            match = pattern.match(request.path)
            if match and method == request.method:
                return handler, [unquote(group) for group in match.groups()], allowed
            if match:
                allowed.append(method)
        return None, [], allowed

    def _count(self, request):
        """(the 429 or None, the rate-limit headers for the answer)."""
        with self.lock:
            limits = [(name, limit) for name, limit in self.limits_for(request) if limit is not None]
            now = time.monotonic()
            waits = [(name, limit, limit.wait(now)) for name, limit in limits]
            refused = next((entry for entry in waits if entry[2] > 0), None)
            if refused is None:
                for _, limit in limits:
                    limit.take(now)
            headers = {}
            for name, limit in limits:
                for key, value in self.limit_headers(name, limit, limit.remaining(now), 0.0).items():
                    headers.setdefault(key, value)
            if refused:
                name, limit, wait = refused
                headers.update(self.limit_headers(name, limit, limit.remaining(now), wait))
        if refused:
            response = self.rate_limited(request, *refused)
            response.headers.update(headers)
            return response, {}
        return None, headers

    # Hooks

    def authenticate(self, request):
        """None when the credentials are right, else the CRM's refusal."""
        return None

    def limits_for(self, request):
        """The (name, Limit) pairs this request counts against."""
        return []

    def limit_headers(self, name, limit, remaining, wait):
        """Headers for one limit; wait is 0 unless this limit refused the request."""
        return {}

    def rate_limited(self, request, name, limit, wait):
        return json_response(429, {"message": "Too many requests"})

    def bad_json(self, exc):
        return json_response(400, {"message": "Invalid JSON: %s" % exc})

    def no_route(self, request, allowed_methods):
        return json_response(405 if allowed_methods else 404, {"message": "Not found"})

    # Webhooks out: the CRM calling the configured target with its events.

    def webhook_request(self, kind, details, url, secret):
        """Hook: (body bytes, headers) of the CRM's call for one event of `kind`
        about the record `details` names ({"id", "email", "merged_into", ...}),
        signed or authenticated with `secret` as the CRM does it."""
        raise NotImplementedError("%s sends no webhooks" % self.name)

    def send_event(self, kind, details):
        """Call the configured webhook target with one event now; returns
        (status, the body sent). (None, reason) when it cannot be sent."""
        with self.lock:
            url, secret = self.settings.get("webhook_url"), self.settings.get("webhook_secret")
        if kind not in self.WEBHOOK_EVENTS:
            return None, "%s sends no %r events; it sends: %s" % (self.name, kind, ", ".join(self.WEBHOOK_EVENTS))
        if not url:
            return None, "no webhook_url is set for %s" % self.name
        body, headers = self.webhook_request(kind, details, url, secret)
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, body
        except urllib.error.HTTPError as exc:
            return exc.code, body
        except OSError as exc:
            return None, "could not reach %s: %s" % (url, exc)

    def emit(self, kind, **details):
        """The CRM's own API changed a record (deleted, merged): send the matching
        event after the answer, as a CRM does, when a target is set."""
        if kind not in self.WEBHOOK_EVENTS or not self.settings.get("webhook_url"):
            return
        threading.Thread(target=self.send_event, args=(kind, details), daemon=True).start()

    def server_error(self, status):
        """The CRM's answer when it fails (fault injection)."""
        return json_response(status, {"message": "Internal server error"})

    def timeout_error(self):
        """What the caller gets after a request hangs: the edge's 504 page."""
        return gateway_page(504, "Gateway Time-out")
