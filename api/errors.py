"""Errors as the API answers them: DRF's own answers (field-level 400s, 401, 403,
404, 405, 415, 429), and never a 500 that leaks a traceback. Anything the views
did not foresee is logged (the view and the exception's type, never the request's
body, headers or the exception's message, which may quote them) and answered 500
with a plain message."""

import logging
import traceback

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "Internal error; see the server log."


def exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: DRF's answer when it has one, else a logged 500."""
    response = drf_exception_handler(exc, context)
    if response is not None:
        return response
    set_rollback()  # under ATOMIC_REQUESTS, nothing of the failed request stays
    logger.error(
        "Unexpected %s in %s\n%s",
        exception_types(exc),
        view_name(context.get("view")),
        "".join(traceback.format_tb(exc.__traceback__)),
    )
    return Response({"detail": INTERNAL_ERROR}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)


def exception_types(exc):
    """The exception's type and those of its causes, as "IntegrityError <- psycopg.errors.UniqueViolation"."""
    names, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        cls = type(exc)
        names.append(cls.__qualname__ if cls.__module__ == "builtins" else "%s.%s" % (cls.__module__, cls.__qualname__))
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(names)


def view_name(view):
    if view is None:
        return "an unknown view"
    name = "%s.%s" % (type(view).__module__, type(view).__qualname__)
    action = getattr(view, "action", None)
    return "%s.%s" % (name, action) if action else name


# `{"detail": "..."}`, or DRF's field-level errors (`{"emails": {"0": ["..."]}}`).
ERROR_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": True,
}
SHARED_ERRORS = {
    "400": {
        "description": "Malformed request: JSON that does not parse (`detail`), a NUL character or a lone "
        "surrogate in a string of the body (field-level errors), or a NUL character in the address or the "
        "Authorization header (`detail`).",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CommonError"}}},
    },
    "429": {
        "description": "Throttled: too many requests for this token (CRMSYNC_API_RATE). "
        "Retry-After says how many seconds to wait.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CommonError"}}},
    },
}


def document_shared_errors(result, generator, request, public):
    """drf-spectacular postprocessing hook: the answers every operation can give
    whatever its view does (the throttle's 429, the parser's and the address
    check's 400), unless the operation documents that code itself."""
    result.setdefault("components", {}).setdefault("schemas", {}).setdefault("CommonError", ERROR_SCHEMA)
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                for code, response in SHARED_ERRORS.items():
                    operation["responses"].setdefault(code, response)
    return result
