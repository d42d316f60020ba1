"""The sandbox: every CRM emulator on one local port, with faults on demand.

    /brevo/v3/...        Brevo's https://api.brevo.com/v3/...
    /hubspot/crm/...     HubSpot's https://api.hubapi.com/crm/...
    /mautic/api/...      a Mautic instance's /api/... (and /mautic/oauth/v2/token)
    /n8n/webhook/<path>  an n8n instance's production webhooks

    GET  /_sandbox/<crm>/contacts   what the CRM holds, as its own GET shows it
    GET  /_sandbox/<crm>/requests   every API request it received, with its status
    POST /_sandbox/<crm>/faults     {latency_ms, error_rate, timeout_rate, timeout_seconds,
                                     rate_limit: {"requests": N, "seconds": S} | null}
    POST /_sandbox/<crm>/settings   emulator settings (see each emulator's SETTINGS)
    POST /_sandbox/reset            forget everything
"""

import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from . import EMULATOR_CLASSES
from .base import Request, Response, json_response

logger = logging.getLogger(__name__)

REQUEST_LOG_LIMIT = 200_000


@dataclass
class Faults:
    latency_ms: int = 0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_seconds: float = 30.0


@dataclass
class SandboxOptions:
    latency_ms: int = 0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_seconds: float = 30.0
    # crm -> (requests, seconds): replaces that CRM's main rate limit.
    rate_limits: dict = field(default_factory=dict)
    real_rate_limits: bool = True
    seed: int = None


class Sandbox:
    """The emulators and what the server does around them: faults and the request log."""

    def __init__(self, options):
        self.options = options
        self.rng, self.rng_lock = random.Random(options.seed), threading.Lock()
        self.emulators = {cls.name: cls(self.rng, self.rng_lock) for cls in EMULATOR_CLASSES}
        self.faults, self.logs, self.log_lock = {}, {}, threading.Lock()
        self.reset()

    def reset(self):
        for name, emulator in self.emulators.items():
            emulator.reset()
            self.faults[name] = Faults(
                self.options.latency_ms, self.options.error_rate, self.options.timeout_rate, self.options.timeout_seconds
            )
            if not self.options.real_rate_limits:
                emulator.set_primary_limit(None, None)
            if name in self.options.rate_limits:
                emulator.set_primary_limit(*self.options.rate_limits[name])
        with self.log_lock:
            self.logs = {name: [] for name in self.emulators}

    def handle(self, crm, request):
        emulator = self.emulators[crm]
        response = self._with_faults(crm, emulator, request)
        entry = {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "status": response.status,
            "at": datetime.now(timezone.utc).isoformat(),
        }
        with self.log_lock:
            log = self.logs[crm]
            if len(log) < REQUEST_LOG_LIMIT:
                log.append(entry)
        return response

    def _with_faults(self, crm, emulator, request):
        faults = self.faults[crm]
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        with self.rng_lock:
            draw = self.rng.random()
        if draw < faults.timeout_rate:
            time.sleep(faults.timeout_seconds)
            return emulator.timeout_error()
        if draw < faults.timeout_rate + faults.error_rate:
            with self.rng_lock:
                status = self.rng.choice((500, 502, 503))
            return emulator.server_error(status)
        headers = {}
        for name, limit in emulator.limits_for(request):
            allowed, remaining, wait = limit.take()
            headers.update(emulator.limit_headers(name, limit, remaining, wait))
            if not allowed:
                refused = emulator.rate_limited(request, name, limit, wait)
                refused.headers.update(headers)
                return refused
        response = emulator.dispatch(request)
        for key, value in headers.items():
            response.headers.setdefault(key, value)
        return response

    def control(self, method, parts, body):
        """The /_sandbox endpoints."""
        if method == "POST" and parts == ["reset"]:
            self.reset()
            return json_response(200, {"reset": True})
        if len(parts) != 2 or parts[0] not in self.emulators:
            return json_response(404, {"message": "Unknown sandbox endpoint"})
        crm, what = parts
        if method == "GET" and what == "contacts":
            return json_response(200, self.emulators[crm].contacts())
        if method == "GET" and what == "requests":
            with self.log_lock:
                return json_response(200, list(self.logs[crm]))
        if method == "POST" and what == "faults":
            return self._set_faults(crm, body)
        if method == "POST" and what == "settings":
            return self._set_settings(crm, body)
        return json_response(404, {"message": "Unknown sandbox endpoint"})

    def _set_faults(self, crm, body):
        faults = self.faults[crm]
        for key in ("latency_ms", "error_rate", "timeout_rate", "timeout_seconds"):
            if key in body:
                setattr(faults, key, type(getattr(faults, key))(body[key]))
        if "rate_limit" in body:
            limit = body["rate_limit"]
            self.emulators[crm].set_primary_limit(*((limit["requests"], limit["seconds"]) if limit else (None, None)))
        return json_response(200, {"faults": faults.__dict__})

    def _set_settings(self, crm, body):
        emulator = self.emulators[crm]
        unknown = sorted(set(body) - set(emulator.SETTINGS))
        if unknown:
            return json_response(400, {"message": "Unknown settings: %s" % ", ".join(unknown)})
        with emulator.lock:
            emulator.settings.update(body)
        return json_response(200, {"settings": emulator.settings})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sandbox = None  # set on the subclass the server builds

    def do_GET(self):
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        parts = [part for part in url.path.split("/") if part]
        try:
            if parts[:1] == ["_sandbox"]:
                response = self.sandbox.control(self.command, parts[1:], json.loads(body or b"{}"))
            elif parts and parts[0] in self.sandbox.emulators:
                request = Request(
                    method=self.command,
                    path=url.path[len(parts[0]) + 1 :] or "/",
                    query={key: values[0] for key, values in parse_qs(url.query).items()},
                    headers={key.lower(): value for key, value in self.headers.items()},
                    body=body,
                )
                response = self.sandbox.handle(parts[0], request)
            else:
                response = json_response(404, {"message": "No CRM is emulated at %s" % url.path})
        except Exception:
            logger.exception("sandbox failed on %s %s", self.command, url.path)
            response = json_response(500, {"message": "The sandbox itself failed; see its log."})
        self._send(response)

    def _send(self, response: Response):
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.body:
            self.wfile.write(response.body)

    def log_message(self, format, *args):
        logger.debug("sandbox %s", format % args)


class SandboxServer:
    """The sandbox on a local port, served from a background thread.

    >>> with SandboxServer(port=0) as server:
    ...     server.url
    """

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
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="crm-sandbox", daemon=True)
        self.thread.start()
        return self

    def serve_forever(self):
        self.httpd.serve_forever()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
