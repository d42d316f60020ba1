"""Refuse, with 400, addresses no page can use: a NUL character in the path or the
query string, or a query string that is not UTF-8; and a NUL character in the
Authorization header (the API looks its token up in the database).

PostgreSQL cannot hold a NUL in a text value, so one in a filter or an object id
would otherwise end as a database error; Django reads bytes that are not UTF-8 as
U+FFFD, which no link of ours ever sends. Views still check their own parameters.
Under /api/ the refusal is JSON (`{"detail": ...}`), as every other API error is.
"""

from urllib.parse import unquote_to_bytes

from django.http import HttpResponseBadRequest, JsonResponse

REFUSAL = (
    "Bad request: the address holds %s, which no page here accepts. "
    "Remove it (or follow the link again from the page it came from) and try again."
)
API_PREFIX = "/api/"  # where crmsync_project/urls.py mounts the HTTP API
API_REFUSAL = "Bad request: the request holds %s, which the API refuses. Remove it and try again."


class RefuseMalformedAddressMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        problem = address_problem(request)
        if not problem:
            return self.get_response(request)
        if request.path_info.startswith(API_PREFIX):
            return JsonResponse({"detail": API_REFUSAL % problem}, status=400)
        return HttpResponseBadRequest(REFUSAL % problem, content_type="text/plain; charset=utf-8")


def address_problem(request):
    """What is wrong with the request's path, query string or Authorization header, or None."""
    if "\x00" in request.path_info:
        return "a NUL character (%00) in its path"
    if "\x00" in request.META.get("HTTP_AUTHORIZATION", ""):
        return "a NUL character in its Authorization header"
    raw = request.META.get("QUERY_STRING", "")
    try:
        # The server hands the bytes over as ISO-8859-1 text, as PEP 3333 says.
        data = unquote_to_bytes(raw.encode("iso-8859-1"))
    except UnicodeEncodeError:
        data = unquote_to_bytes(raw)
    if b"\x00" in data:
        return "a NUL character (%00) in its query string"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes that are not UTF-8 text in its query string"
    return None
