"""Test doubles for the engine: backends whose behaviour each test scripts."""

import threading

from integrations.backends.base import CRMBackend, Outcome
from integrations.exceptions import InvalidContact


class ScriptedBackend(CRMBackend):
    """Accepts everything unless told otherwise. `respond(items)` may be replaced
    to return other outcomes or raise a SyncError for the whole batch."""

    name = "scripted"
    verbose_name = "Scripted CRM"
    required_settings = ("API_KEY",)
    optional_settings = ("REGION",)
    default_batch_size = 50

    def __init__(self, respond=None, **overrides):
        super().__init__(**overrides)
        self.respond = respond or self.accept_all
        self.pushed = []
        self.lock = threading.Lock()

    def build_payload(self, contact):
        if contact.email.startswith("invalid"):
            raise InvalidContact("Scripted CRM cannot take %s" % contact.email)
        return {"email": contact.email, "first_name": contact.first_name}

    def push(self, items):
        with self.lock:
            self.pushed.extend(items)
        return self.respond(items)

    @staticmethod
    def accept_all(items):
        return [Outcome.accepted(item, external_id="ext-%d" % item.contact.pk) for item in items]


class OtherBackend(ScriptedBackend):
    name = "other"
    verbose_name = "Other CRM"
    required_settings = ("TOKEN",)
    optional_settings = ()
