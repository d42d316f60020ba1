import logging
import time


class UTCFormatter(logging.Formatter):
    """Log timestamps in UTC whatever the server's local time zone, ISO 8601 style."""

    converter = time.gmtime
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"
