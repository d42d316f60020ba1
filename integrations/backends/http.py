"""HTTP helpers the backends share: reading answers, and keeping credentials out of them."""

import base64
import binascii
import json
import re
from email.utils import parsedate_to_datetime
from urllib.parse import quote, quote_plus

from django.utils import timezone

from crmsync_project.secrets import FILTERED

USER_AGENT = "crmsync/1.0 (+https://github.com/crmsync/crmsync)"
# Headers whose values are credentials (settings: crmsync_project.secrets.SECRET_NAME).
CREDENTIAL_HEADER = re.compile(r"auth|key|token|secret|password", re.IGNORECASE)


def credentials_in_headers(headers):
    """The credential values a request's headers carry, with what a Bearer or
    Basic value holds."""
    values = set()
    for name, value in headers.items():
        if CREDENTIAL_HEADER.search(name):
            scheme, _, credentials = value.partition(" ")
            values.update((value, credentials))
            if scheme.lower() == "basic":
                values.update(_basic_credentials(credentials))
    return values


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


def retry_after_seconds(response):
    """Retry-After in seconds, whether sent as seconds or as an HTTP date; None without one."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - timezone.now()).total_seconds())
    except (TypeError, ValueError, IndexError):
        return None
