"""Machinery every CRM emulator shares: requests, responses, routing, rate limiters."""

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field


class BadJSON(ValueError):
    pass


@dataclass
class Request:
    method: str
    path: str  # below the emulator's prefix, e.g. "/v3/contacts"
    query: dict
    headers: dict  # lower-cased names
    body: bytes = b""

    def json(self):
        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise BadJSON(str(exc)) from None

    def header(self, name, default=""):
        return self.headers.get(name.lower(), default)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict = field(default_factory=dict)


def json_response(status, data, headers=None):
    body = json.dumps(data).encode()
    return Response(status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})})


def text_response(status, text, headers=None):
    return Response(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8", **(headers or {})})


def empty_response(status, headers=None):
    return Response(status, b"", dict(headers or {}))


def correlation_id():
    return str(uuid.uuid4())


def route(method, pattern):
    """Mark an emulator method as the handler of METHOD on a path pattern."""

    def mark(function):
        function.route = (method, re.compile("^%s$" % pattern))
        return function

    return mark


class Limit:
    """A rate limit: at most `requests` per `seconds`, rolling (HubSpot) or as a
    token bucket refilled continuously (Brevo)."""

    def __init__(self, requests, seconds, rolling=False):
        self.requests, self.seconds, self.rolling = requests, seconds, rolling
        self.lock = threading.Lock()
        self.stamps = []
        self.tokens, self.updated = float(requests), time.monotonic()

    def take(self):
        """Spend one request if allowed; return (allowed, remaining, seconds until the next is allowed)."""
        with self.lock:
            now = time.monotonic()
            if self.rolling:
                return self._take_rolling(now)
            self.tokens = min(self.requests, self.tokens + (now - self.updated) * self.requests / self.seconds)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True, int(self.tokens), 0.0
            return False, 0, (1 - self.tokens) * self.seconds / self.requests

    def _take_rolling(self, now):
        self.stamps = [stamp for stamp in self.stamps if stamp > now - self.seconds]
        if len(self.stamps) < self.requests:
            self.stamps.append(now)
            return True, self.requests - len(self.stamps), 0.0
        return False, 0, self.stamps[0] + self.seconds - now


class Emulator:
    """One CRM's API. Subclasses set `name`, declare handlers with @route, and
    implement authenticate(), server_error(), and the limit hooks."""

    name = None

    def __init__(self, rng, rng_lock):
        self.lock = threading.RLock()
        self.rng, self.rng_lock = rng, rng_lock
        routes = [
            (getattr(self, attribute).route, getattr(self, attribute))
            for attribute in dir(type(self))
            if hasattr(getattr(type(self), attribute), "route")
        ]
        # Fixed paths first: /v3/contacts/attributes is not a contact called "attributes".
        self.routes = sorted(routes, key=lambda entry: entry[0][1].groups)
        self.reset()

    def reset(self):
        """Forget every contact, setting and limit state."""

    def contacts(self):
        """The stored contacts as the CRM's own GET returns them."""
        return []

    def dispatch(self, request):
        allowed = []
        for (method, pattern), handler in self.routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                refusal = self.authenticate(request)
                if refusal:
                    return refusal
                try:
                    return handler(request, *match.groups())
                except BadJSON as exc:
                    return self.bad_json(exc)
            if match:
                allowed.append(method)
        return self.no_route(request, allowed)

    def authenticate(self, request):
        return None

    def bad_json(self, exc):
        return json_response(400, {"message": "Invalid JSON: %s" % exc})

    def no_route(self, request, allowed_methods):
        return json_response(404, {"message": "Not found"})

    def server_error(self, status):
        return json_response(status, {"message": "Internal server error"})

    def timeout_error(self):
        return text_response(504, "Gateway Timeout")

    def limits_for(self, request):
        """The Limit objects this request counts against, with their names."""
        return []

    def rate_limited(self, request, name, limit, wait):
        return json_response(429, {"message": "Too many requests"})

    def limit_headers(self, name, limit, remaining, wait):
        return {}

    def set_primary_limit(self, requests, seconds):
        """Replace (or with None, remove) the CRM's main rate limit."""

    def shuffled(self, items):
        with self.rng_lock:
            self.rng.shuffle(items)
        return items
