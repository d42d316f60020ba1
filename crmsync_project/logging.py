import logging
import time


class UTCFormatter(logging.Formatter):
    """Log timestamps in UTC whatever the server's local time zone, ISO 8601 style."""

    converter = time.gmtime
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"


class ScrubSecrets(logging.Filter):
    """Blank every configured secret in a record before it is written: an
    exception's text (a library's error message, a CRM's answer) can hold a key."""

    def filter(self, record):
        from .secrets import configured_secrets, scrub

        secrets = configured_secrets()
        message = record.getMessage()
        scrubbed = scrub(message, secrets)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, secrets)
        return True
