"""The API's only parser: JSON, refusing before any view sees the data what no
field can store. PostgreSQL holds no NUL character in text, and a lone surrogate
("\\ud800") cannot be encoded as UTF-8; either would end as a database error."""

import re

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

REFUSED_CHARACTER = re.compile("[\x00\ud800-\udfff]")
NUL_REFUSAL = 'The body holds a NUL character ("\\u0000") at %s, which the API refuses. Remove it and try again.'
SURROGATE_REFUSAL = (
    'The body holds a lone surrogate ("\\ud800" to "\\udfff") at %s, which is not Unicode text. '
    "Encode the text as UTF-8 and try again."
)
TOO_DEEP = "JSON parse error - the body is nested too deeply."


class StrictJSONParser(JSONParser):
    """DRF's JSON parser (malformed JSON is a 400 ParseError), plus a 400 for a NUL
    character or a lone surrogate in any string of the body, keys included."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(TOO_DEEP) from None
        problem = refused_text(data)
        if problem:
            raise ParseError(problem)
        return data


def refused_text(data):
    """Why the parsed body is refused (naming where, as "items[3].email"), or None."""
    pending = [("body", data)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, str):
            match = REFUSED_CHARACTER.search(value)
            if match:
                return (NUL_REFUSAL if match.group() == "\x00" else SURROGATE_REFUSAL) % where
        elif isinstance(value, dict):
            for key, item in value.items():
                # The key is checked first (popped first), so a refused key never
                # ends up quoted in the message about its value.
                pending.append(("%s.%s" % (where, key), item))
                pending.append(("a key of %s" % where, key))
        elif isinstance(value, list):
            pending.extend(("%s[%d]" % (where, index), item) for index, item in enumerate(value))
    return None
