"""The sandbox: every CRM emulator on one local port, with faults on demand.

Each emulator answers under its name, where the CRM's API root would be:

    /brevo/v3/...                   Brevo's https://api.brevo.com/v3/...
    /hubspot/crm/...                HubSpot's https://api.hubapi.com/crm/...
                                    (and /hubspot/crm/objects/2026-03/...)

    GET  /_sandbox/<crm>/contacts   what the CRM holds, as its own GET shows it
    GET  /_sandbox/<crm>/requests   every API request it received, with its status
    GET  /_sandbox/<crm>/faults     the faults in force
    POST /_sandbox/<crm>/faults     {latency_ms, jitter_ms (0 to this much more latency, at random),
                                     error_rate, timeout_rate, timeout_seconds,
                                     slow_body, slow_headers (seconds per byte; 0: off),
                                     down (true: close every connection unanswered),
                                     rate_limit: {"requests": N, "seconds": S, "model": M} | null,
                                     limiter: M (the main limit's model, its numbers kept),
                                     rate_limit_burst: {"seconds": T, "after": A, "every": E} | null}
                                    M is one of crm_sandbox.base.LIMITER_MODELS: "fixed" (window),
                                    "sliding" (window) or "bucket" (token bucket).
    GET  /_sandbox/<crm>/settings   the emulator's settings (each emulator's SETTINGS)
    POST /_sandbox/<crm>/settings   change some of them
    POST /_sandbox/reset            forget everything, back to the start-up options
"""

import json
import logging
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from . import EMULATOR_CLASSES
from .base import LIMITER_MODELS, Limit, Request, Response, json_response

logger = logging.getLogger(__name__)

REQUEST_LOG_LIMIT = 500_000
FAULT_FIELDS = {
    "latency_ms": float,
    "jitter_ms": float,
    "error_rate": float,
    "timeout_rate": float,
    "timeout_seconds": float,
    "slow_body": float,
    "slow_headers": float,
}
SWITCHES = ("down",)
BURST_SHAPE = 'rate_limit_burst must be {"seconds": T, "after": A, "every": E} (after and every optional) or null.'


@dataclass
class SandboxOptions:
    latency_ms: float = 0
    jitter_ms: float = 0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_seconds: float = 30.0
    slow_body: float = 0.0
    slow_headers: float = 0.0
    # crm name -> (requests, seconds): replaces that CRM's main rate-limit window.
    rate_limits: dict = field(default_factory=dict)
    # False: no rate limit at all unless rate_limits sets one.
    real_rate_limits: bool = True
    # crm name -> one of LIMITER_MODELS: how that CRM's main limit is enforced
    # (default: what the vendor documents, the emulator's own choice).
    limiters: dict = field(default_factory=dict)
    seed: int = None


@dataclass
class Faults:
    latency_ms: float = 0
    # Up to this much more latency, drawn at random for each request, before the
    # CRM counts it against its rate limit: the jitter a real network adds.
    jitter_ms: float = 0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_seconds: float = 30.0
    # Seconds between two bytes of the answer's body, or of its header lines (after
    # the status line): the answer comes whole, but slower than any read timeout.
    slow_body: float = 0.0
    slow_headers: float = 0.0
    # Every connection closed without an answer, the request unread by the CRM.
    down: bool = False


class FaultError(ValueError):
    pass


def checked_faults(body):
    """The fault fields of a /faults body, converted and range-checked."""
    unknown = sorted(set(body) - set(FAULT_FIELDS) - set(SWITCHES) - {"rate_limit", "rate_limit_burst", "limiter"})
    if unknown:
        raise FaultError("Unknown fault fields: %s" % ", ".join(unknown))
    values = {}
    for name in SWITCHES:
        if name in body:
            if not isinstance(body[name], bool):
                raise FaultError("%s must be true or false." % name)
            values[name] = body[name]
    for name, cast in FAULT_FIELDS.items():
        if name in body:
            try:
                values[name] = cast(body[name])
            except (TypeError, ValueError):
                raise FaultError("%s must be a number." % name) from None
            is_rate = name.endswith("_rate")
            if values[name] < 0 or (is_rate and values[name] > 1):
                raise FaultError("%s must be %s." % (name, "between 0 and 1" if is_rate else "0 or more"))
    return values


def checked_burst(burst):
    """A RateLimitBurst from {"seconds": T, "after": A, "every": E}, or None for null."""
    if burst is None:
        return None
    if not isinstance(burst, dict) or set(burst) - {"seconds", "after", "every"}:
        raise FaultError(BURST_SHAPE)
    try:
        seconds = float(burst["seconds"])
        after = int(burst.get("after", 0))
        every = None if burst.get("every") is None else int(burst["every"])
    except (TypeError, KeyError, ValueError):
        raise FaultError(BURST_SHAPE) from None
    if not seconds > 0 or after < 0 or (every is not None and every < 1):
        raise FaultError("rate_limit_burst needs seconds above 0, after of 0 or more and every of 1 or more.")
    return RateLimitBurst(seconds, after, every)


class RateLimitBurst:
    """Bursts of 429: once `after` more API requests have been let through, every
    request for the next `seconds` is refused as the CRM refuses one over its rate
    limit; with `every`, the same again after each `every` requests let through."""

    def __init__(self, seconds, after=0, every=None):
        self.seconds, self.after, self.every = seconds, after, every
        self.countdown, self.ends, self.started = after, None, 0
        self.lock = threading.Lock()

    def wait(self, now=None):
        """Seconds left of the burst this request falls in, or 0 when it may pass."""
        now = time.monotonic() if now is None else now
        with self.lock:
            if self.ends is not None:
                if now < self.ends:
                    return self.ends - now
                self.ends, self.countdown = None, self.every
            if self.countdown is None:
                return 0.0
            if self.countdown > 0:
                self.countdown -= 1
                return 0.0
            self.ends, self.started = now + self.seconds, self.started + 1
            return self.seconds

    def view(self):
        with self.lock:
            return {"seconds": self.seconds, "after": self.after, "every": self.every, "bursts": self.started}


def burst_response(emulator, request, wait):
    """The emulator's own 429 and rate-limit headers, as if the first limit this
    request counts against were spent for `wait` more seconds."""
    with emulator.lock:
        pairs = list(emulator.limits_for(request))
    name, limit = next(((each, found) for each, found in pairs if found is not None), (None, None))
    if name is None:
        # No limit of its own applies (Mautic's is off by default; n8n has none).
        name = pairs[0][0] if pairs else emulator.primary_limit or "burst"
    limit = limit or Limit(1, wait)
    response = emulator.rate_limited(request, name, limit, wait)
    response.headers.update(emulator.limit_headers(name, limit, 0, wait))
    return response


def checked_rate_limit(limit):
    """(requests, seconds, model or None) from {"requests": N, "seconds": S, "model": M},
    or (None, None, None) for null."""
    if limit is None:
        return None, None, None
    try:
        requests, seconds = int(limit["requests"]), float(limit["seconds"])
    except (TypeError, KeyError, ValueError):
        raise FaultError('rate_limit must be {"requests": N, "seconds": S} or null.') from None
    if requests < 1 or seconds <= 0:
        raise FaultError("rate_limit needs requests of 1 or more and seconds above 0.")
    return requests, seconds, checked_model(limit.get("model"))


def checked_model(model):
    """A limiter model name, or None for none given."""
    if model is not None and model not in LIMITER_MODELS:
        raise FaultError("The limiter model must be one of %s." % ", ".join(LIMITER_MODELS))
    return model


class Sandbox:
    """The emulators, and what the server does around them: faults and the request log."""

    def __init__(self, options):
        self.options = options
        self.rng, self.rng_lock = random.Random(options.seed), threading.Lock()
        self.emulators = {cls.name: cls(self.rng, self.rng_lock) for cls in EMULATOR_CLASSES}
        for name in ("rate_limits", "limiters"):
            unknown = sorted(set(getattr(options, name)) - set(self.emulators))
            if unknown:
                raise ValueError("%s names CRMs the sandbox does not emulate: %s" % (name, ", ".join(unknown)))
        # Its own dice, so that jitter leaves the seeded fault draws as they were.
        self.jitter_rng = random.Random(options.seed)
        self.log_lock = threading.Lock()
        self.faults, self.bursts, self.logs = {}, {}, {}
        self.reset()

    def reset(self):
        options = self.options
        for name, emulator in self.emulators.items():
            emulator.reset()
            if not options.real_rate_limits:
                emulator.set_primary_limit(None, None)
            if name in options.rate_limits:
                emulator.set_primary_limit(*options.rate_limits[name])
            if name in options.limiters:
                emulator.set_limiter_model(options.limiters[name])
            self.faults[name] = Faults(
                options.latency_ms,
                options.jitter_ms,
                options.error_rate,
                options.timeout_rate,
                options.timeout_seconds,
                options.slow_body,
                options.slow_headers,
            )
            self.bursts[name] = None
        with self.log_lock:
            self.logs = {name: [] for name in self.emulators}

    def handle(self, crm, request):
        """The CRM's answer, or None when it is down: the server then closes the
        connection without one."""
        received = datetime.now(UTC).isoformat()
        if self.faults[crm].down:
            self._log(crm, request, None, received)
            return None
        response = self._with_faults(self.emulators[crm], self.faults[crm], self.bursts[crm], request)
        self._log(crm, request, response, received)
        return response

    def _with_faults(self, emulator, faults, burst, request):
        if faults.latency_ms or faults.jitter_ms:
            with self.rng_lock:
                jitter = self.jitter_rng.uniform(0, faults.jitter_ms)
            time.sleep((faults.latency_ms + jitter) / 1000)
        wait = burst.wait() if burst else 0.0
        if wait:
            return burst_response(emulator, request, wait)
        # One draw per request, so a seed replays the same faults for the same requests.
        with self.rng_lock:
            draw = self.rng.random()
        if draw < faults.timeout_rate:
            time.sleep(faults.timeout_seconds)
            return emulator.timeout_error()
        if draw < faults.timeout_rate + faults.error_rate:
            with self.rng_lock:
                status = self.rng.choice(emulator.server_error_statuses)
            return emulator.server_error(status)
        return emulator.dispatch(request)

    def _log(self, crm, request, response, received):
        entry = {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "status": response.status if response else None,
            "at": received,
        }
        with self.log_lock:
            log = self.logs[crm]
            if len(log) < REQUEST_LOG_LIMIT:
                log.append(entry)

    def requests(self, crm):
        with self.log_lock:
            return list(self.logs[crm])

    # /_sandbox

    def control(self, method, parts, raw_body):
        try:
            body = json.loads(raw_body or b"{}")
        except ValueError:
            return json_response(400, {"message": "The body must be JSON."})
        if method == "POST" and parts == ["reset"]:
            self.reset()
            return json_response(200, {"reset": True})
        if len(parts) != 2 or parts[0] not in self.emulators:
            return json_response(404, {"message": "Unknown sandbox endpoint; CRMs: %s" % ", ".join(self.emulators)})
        handler = {
            ("GET", "contacts"): lambda crm, _: json_response(200, self.emulators[crm].contacts()),
            ("GET", "requests"): lambda crm, _: json_response(200, self.requests(crm)),
            ("GET", "faults"): lambda crm, _: json_response(200, self._faults_view(crm)),
            ("POST", "faults"): self._set_faults,
            ("GET", "settings"): lambda crm, _: json_response(200, self._settings_view(crm)),
            ("POST", "settings"): self._set_settings,
            ("POST", "events"): self._send_event,
        }.get((method, parts[1]))
        if handler is None:
            return json_response(404, {"message": "Unknown sandbox endpoint."})
        if not isinstance(body, dict):
            return json_response(400, {"message": "The body must be a JSON object."})
        return handler(parts[0], body)

    def _set_faults(self, crm, body):
        try:
            values = checked_faults(body)
            limit = checked_rate_limit(body["rate_limit"]) if "rate_limit" in body else None
            model = checked_model(body.get("limiter")) or (limit[2] if limit else None)
            burst = checked_burst(body["rate_limit_burst"]) if "rate_limit_burst" in body else None
            if model and not self._has_main_limit(crm, limit):
                raise FaultError("%s has no rate limit in force to enforce as %r." % (crm, model))
        except FaultError as exc:
            return json_response(400, {"message": str(exc)})
        emulator = self.emulators[crm]
        for name, value in values.items():
            setattr(self.faults[crm], name, value)
        if "rate_limit_burst" in body:
            self.bursts[crm] = burst
        if limit is not None:
            emulator.set_primary_limit(*limit[:2])
        if model:
            emulator.set_limiter_model(model)
        return json_response(200, self._faults_view(crm))

    def _has_main_limit(self, crm, new_limit):
        """Whether the CRM's main limit is in force, or `new_limit` (from
        checked_rate_limit) puts one in force."""
        emulator = self.emulators[crm]
        if not emulator.primary_limit:
            return False
        return bool(new_limit and new_limit[0]) or emulator.limits.get(emulator.primary_limit) is not None

    def _faults_view(self, crm):
        emulator = self.emulators[crm]
        with emulator.lock:
            limits = {
                name: {"requests": limit.requests, "seconds": limit.seconds} for name, limit in emulator.limits.items()
            }
            main = emulator.limits.get(emulator.primary_limit) if emulator.primary_limit else None
        burst = self.bursts[crm]
        return {
            **asdict(self.faults[crm]),
            "rate_limits": limits,
            "limiter": getattr(main, "model", None),
            "rate_limit_burst": burst and burst.view(),
        }

    def _send_event(self, crm, body):
        """POST /_sandbox/<crm>/events {"kind": ..., "id"/"email": ..., ...}: the CRM
        calls its webhook target with that event now."""
        details = {key: value for key, value in body.items() if key != "kind"}
        status, sent = self.emulators[crm].send_event(body.get("kind", ""), details)
        if status is None:
            return json_response(400, {"message": sent})
        return json_response(200, {"target_status": status, "sent": json.loads(sent or b"null")})

    def _set_settings(self, crm, body):
        emulator = self.emulators[crm]
        unknown = sorted(set(body) - set(emulator.all_settings()))
        if unknown:
            return json_response(400, {"message": "Unknown settings: %s" % ", ".join(unknown)})
        problem = emulator.check_settings(body)
        if problem:
            return json_response(400, {"message": problem})
        with emulator.lock:
            emulator.settings.update(body)
        return json_response(200, self._settings_view(crm))

    def _settings_view(self, crm):
        emulator = self.emulators[crm]
        with emulator.lock:
            return dict(emulator.settings)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one write, with Nagle off: keep-alive answers would
    # otherwise wait ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    sandbox = None  # set on the subclass each server builds

    def do_GET(self):
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        parts = [part for part in url.path.split("/") if part]
        try:
            response = self._respond(url, parts, body)
        except Exception:
            logger.exception("The sandbox failed on %s %s", self.command, url.path)
            response = json_response(500, {"message": "The sandbox itself failed; see its log."})
        if response is None:
            self.close_connection = True  # the CRM is down: no answer at all
            return
        crm = parts[0] if parts and parts[0] in self.sandbox.emulators else None
        self._send(response, self.sandbox.faults[crm] if crm else None)

    def _respond(self, url, parts, body):
        if parts[:1] == ["_sandbox"]:
            return self.sandbox.control(self.command, parts[1:], body)
        if parts and parts[0] in self.sandbox.emulators:
            request = Request(
                method=self.command,
                path=url.path[len(parts[0]) + 1 :] or "/",
                query_string=url.query,
                headers={key.lower(): value for key, value in self.headers.items()},
                body=body,
            )
            return self.sandbox.handle(parts[0], request)
        return json_response(404, {"message": "No CRM is emulated at %s" % url.path})

    def _send(self, response: Response, faults=None):
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(response.body)))
        status_line, header_lines = self._headers_buffer[0], b"".join(self._headers_buffer[1:]) + b"\r\n"
        self._headers_buffer = []
        body = response.body if self.command != "HEAD" else b""
        try:
            if faults and faults.slow_headers:
                self.wfile.write(status_line)
                self._trickle(header_lines, faults.slow_headers)
                self.wfile.write(body)
            elif faults and faults.slow_body:
                self.wfile.write(status_line + header_lines)
                self._trickle(body, faults.slow_body)
            else:
                self.wfile.write(status_line + header_lines + body)
        except OSError:
            self.close_connection = True  # the client gave up waiting

    def _trickle(self, data, seconds):
        for index in range(len(data)):
            time.sleep(seconds)
            self.wfile.write(data[index : index + 1])

    def log_message(self, format, *args):
        logger.debug("sandbox %s", format % args)


class SandboxServer:
    """The sandbox on a local port, served from a background thread; also a context manager."""

    def __init__(self, host="127.0.0.1", port=0, options=None):
        self.sandbox = Sandbox(options or SandboxOptions())
        handler = type("SandboxHandler", (_Handler,), {"sandbox": self.sandbox})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = None

    @property
    def url(self):
        host, port = self.httpd.server_address[:2]
        return "http://%s:%d" % (host, port)

    def emulator(self, crm):
        return self.sandbox.emulators[crm]

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name="crm-sandbox", daemon=True)
        self.thread.start()
        logger.debug("CRM sandbox serving on %s", self.url)
        return self

    def stop(self):
        # shutdown() waits for serve_forever to notice, so only when it runs.
        if self.thread is not None:
            self.httpd.shutdown()
            self.thread.join()
            self.thread = None
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
