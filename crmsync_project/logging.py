import logging
import threading
import time
from contextlib import contextmanager


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


# Back to the start of the line, and erase it: a terminal's way to redraw a line.
CLEAR_LINE = "\r\x1b[K"


class ProgressLine:
    """A line a command redraws in place on a terminal (sync_crm's progress bar).

    While one is shown (inside `with ProgressLine(...)`), ProgressAwareStreamHandler
    writes each log record above it: it clears the line, writes the record, then draws
    the line again, so a log line never ends up glued onto the bar.
    """

    current = None

    def __init__(self, write, flush):
        self.write, self.flush = write, flush
        self.text = ""
        # Worker threads update the bar and log at the same time.
        self.lock = threading.RLock()

    def __enter__(self):
        ProgressLine.current = self
        return self

    def __exit__(self, *exc_info):
        ProgressLine.current = None
        self.finish()

    def show(self, text):
        with self.lock:
            self.text = text
            self.write(CLEAR_LINE + text)
            self.flush()

    def finish(self):
        """Leave the line as it is and go to the next one."""
        with self.lock:
            if self.text:
                self.write("\n")
                self.flush()
            self.text = ""

    @contextmanager
    def set_aside(self):
        """Clear the line for other output, and draw it again after."""
        with self.lock:
            if self.text:
                self.write(CLEAR_LINE)
                self.flush()
            try:
                yield
            finally:
                if self.text:
                    self.write(self.text)
                    self.flush()


class ProgressAwareStreamHandler(logging.StreamHandler):
    """A StreamHandler that writes records above a ProgressLine being shown."""

    def emit(self, record):
        line = ProgressLine.current
        if line is None:
            super().emit(record)
            return
        with line.set_aside():
            super().emit(record)
