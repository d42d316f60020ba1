"""An n8n instance with one workflow behind a Webhook trigger, as docs/crm-api.md
section 4 describes n8n's Webhook node.

Settings (POST /_sandbox/n8n/settings):
- active: the workflow is active (else its production URL answers 404);
- auth: "header" (Authorization: Bearer WEBHOOK_SECRET, the default), "basic"
  (user "crmsync", password WEBHOOK_SECRET) or "none";
- respond: "immediately" (n8n's default: 200 "Workflow was started") or
  "empty_200" (the responseNode bug: 200 with no body);
- callback_url, callback_secret, callback_delay_seconds: after each contact is
  received, call crmsync's enrichment endpoint back as a workflow would;
- callback_duplicate_rate, callback_drop_rate: resend or lose callbacks, to prove
  idempotency and time-outs.
"""

import base64
import contextlib
import json
import threading
import uuid
from datetime import UTC, datetime

import requests

from .base import Emulator, json_response, route, text_response, whole_seconds

WEBHOOK_PATH = "crmsync"
WEBHOOK_SECRET = "sandbox-n8n-secret"
BASIC_USER = "crmsync"
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024  # N8N_PAYLOAD_SIZE_MAX's default
REALM = {"WWW-Authenticate": 'Basic realm="Webhook"'}
NOT_ACTIVE_HINT = (
    "The workflow must be active for a production URL to run successfully. You can activate the workflow "
    "using the toggle in the top-right of the editor. Note that unlike test URL calls, production URL calls "
    "aren't shown on the canvas (only in the executions list)"
)


def crm_settings(url):
    """The n8n settings that point crmsync at this emulator when it is served at `url`."""
    return {
        "WEBHOOK_URL": url + "/n8n/webhook/" + WEBHOOK_PATH,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "WEBHOOK_AUTH_HEADER": "Authorization",
    }


class N8nEmulator(Emulator):
    name = "n8n"
    SETTINGS = {
        "active": True,
        "auth": "header",
        "respond": "immediately",
        "callback_url": "",
        "callback_secret": "",
        "callback_delay_seconds": 0.2,
        "callback_duplicate_rate": 0.0,
        "callback_drop_rate": 0.0,
    }

    def reset(self):
        with self.lock:
            self.settings = dict(self.SETTINGS)
            self.executions = []

    def contacts(self):
        """Every item the workflow received, in order (an array body is one execution)."""
        with self.lock:
            return [item for execution in self.executions for item in execution["items"]]

    def server_error(self, status):
        return json_response(status, {"code": status, "message": "Internal Server Error"})

    def rate_limited(self, request, name, limit, wait):
        # n8n has no rate limit (docs/crm-api.md section 4): a 429 comes from a proxy in
        # front of it (nginx, Traefik, Cloudflare), in its own words, with Retry-After.
        return text_response(429, "Too Many Requests", {"Retry-After": str(whole_seconds(wait))})

    def no_route(self, request, allowed_methods):
        return self._not_registered(request.method, request.path.rsplit("/", 1)[-1])

    @route("POST", r"/webhook/([^/]+)")
    def production(self, request, path):
        return self._trigger(request, path)

    @route("POST", r"/webhook-test/([^/]+)")
    def test_url(self, request, path):
        return self._trigger(request, path)

    @route("GET", r"/webhook(?:-test)?/([^/]+)")
    def wrong_method(self, request, path):
        if path != WEBHOOK_PATH:
            return self._not_registered("GET", path)
        return json_response(
            404,
            {
                "code": 404,
                "message": "This webhook is not registered for GET requests. Did you mean to make a POST request?",
            },
        )

    def _trigger(self, request, path):
        if path != WEBHOOK_PATH or not self.settings["active"]:
            return self._not_registered("POST", path)
        refusal = self._check_auth(request)
        if refusal:
            return refusal
        if len(request.body) > MAX_PAYLOAD_BYTES:
            return json_response(413, {"code": 413, "message": "request entity too large"})
        body = request.json()
        items = body if isinstance(body, list) else [body]
        with self.lock:
            self.executions.append(
                {"id": str(len(self.executions) + 1), "items": items, "at": datetime.now(UTC).isoformat()}
            )
        if self.settings["callback_url"]:
            # A workflow enriches contacts it is sent, not the delete and erase events.
            for item in items:
                if isinstance(item, dict) and item.get("event", "upsert") == "upsert":
                    self._schedule_callback(item)
        if self.settings["respond"] == "empty_200":
            return text_response(200, "")
        return json_response(200, {"message": "Workflow was started"})

    def _not_registered(self, method, path):
        return json_response(
            404,
            {
                "code": 404,
                "message": 'The requested webhook "%s %s" is not registered.' % (method, path),
                "hint": NOT_ACTIVE_HINT,
            },
        )

    def _check_auth(self, request):
        """The Webhook node's answers: plain text, with the Basic realm header."""
        mode, given = self.settings["auth"], request.header("authorization")
        if mode == "header":
            if given != "Bearer %s" % WEBHOOK_SECRET:
                return text_response(403, "Authorization data is wrong!", REALM)
        elif mode == "basic":
            if not given:
                return text_response(401, "Authorization is required!", REALM)
            expected = "Basic %s" % base64.b64encode(("%s:%s" % (BASIC_USER, WEBHOOK_SECRET)).encode()).decode()
            if given != expected:
                return text_response(403, "Authorization data is wrong!", REALM)
        return None

    def _schedule_callback(self, item):
        with self.rng_lock:
            dropped = self.rng.random() < float(self.settings["callback_drop_rate"])
            duplicated = self.rng.random() < float(self.settings["callback_duplicate_rate"])
        if dropped:
            return
        callback = enrichment_for(item)
        delay = float(self.settings["callback_delay_seconds"])
        for _ in range(2 if duplicated else 1):
            timer = threading.Timer(delay, self._call_back, (callback,))
            timer.daemon = True
            timer.start()

    def _call_back(self, callback):
        # A failed call back is n8n's HTTP Request node logging it; the workflow goes on.
        with contextlib.suppress(requests.RequestException):
            requests.post(
                self.settings["callback_url"],
                data=json.dumps(callback),
                headers={
                    "Content-Type": "application/json",
                    "Authorization": "Bearer %s" % self.settings["callback_secret"],
                },
                timeout=10,
            )


def enrichment_for(item):
    """What an enrichment workflow might find for a contact it was sent."""
    domain = str(item.get("email", "")).partition("@")[2] or "example.com"
    return {
        "contact_id": item.get("contact_id"),
        "enrichment_id": str(uuid.uuid4()),
        "status": "complete",
        "timestamp": datetime.now(UTC).isoformat(),
        "enriched_data": {
            "company": {"name": item.get("company") or domain.split(".")[0].title(), "website": "https://%s" % domain},
            "confidence_score": 80,
            "sources": ["sandbox"],
        },
        "metadata": {"workflow_id": "sandbox", "duration_ms": 5, "api_calls": 1, "cost": 0},
    }
