"""The API's JSON parser: it refuses, before any view sees the data, what no field
can store. PostgreSQL holds no NUL character in text, and a lone surrogate
("\\ud800") cannot be encoded as UTF-8; either would end as a database error."""

import re

from django.core.validators import ProhibitNullCharactersValidator
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.settings import api_settings
from rest_framework.validators import ProhibitSurrogateCharactersValidator

REFUSED_CHARACTER = re.compile("[\x00\ud800-\udfff]")
# The serializers' own messages, so a refusal reads the same from here or from a field.
NUL_MESSAGE = str(ProhibitNullCharactersValidator.message)
SURROGATE_MESSAGE = str(ProhibitSurrogateCharactersValidator.message)
KEY_MESSAGE = "A key of this object holds a NUL character or a lone surrogate."
TOO_DEEP = "JSON parse error - the body is nested too deeply."


class StrictJSONParser(JSONParser):
    """DRF's JSON parser (malformed JSON is its 400 ParseError), plus a field-level
    400 for a NUL character or a lone surrogate in any string of the body, keys
    included: `{"emails": {"0": ["Null characters are not allowed."]}}`, as a
    serializer's field would answer."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(TOO_DEEP) from None
        refused = refused_text(data)
        if refused:
            path, message = refused
            raise ParseError(field_error(path, message))
        return data


def refused_text(data):
    """(path, message) for the first string of the body holding a refused character
    (the path as keys and list indexes, a key's refusal at its object), or None."""
    pending = [((), data)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, dict):
            for key in value:
                if REFUSED_CHARACTER.search(key):
                    return path, KEY_MESSAGE
            pending.extend(((*path, key), item) for key, item in value.items())
        elif isinstance(value, list):
            pending.extend(((*path, index), item) for index, item in enumerate(value))
        elif isinstance(value, str):
            match = REFUSED_CHARACTER.search(value)
            if match:
                character = match.group()
                if character == "\x00":
                    return path, NUL_MESSAGE
                return path, SURROGATE_MESSAGE.format(code_point=ord(character))
    return None


def field_error(path, message):
    """DRF's shape for an error at `path`: {"emails": {"0": [message]}}; at the top,
    {"non_field_errors": [message]}."""
    error = [message]
    for key in reversed(path or (api_settings.NON_FIELD_ERRORS_KEY,)):
        error = {str(key): error}
    return error
