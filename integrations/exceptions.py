"""Errors raised by crmsync's CRM layer."""


class UnknownCRM(ValueError):
    """A CRM name that no registered backend answers to."""

    def __init__(self, name, known):
        self.name = name
        self.known = tuple(known)
        super().__init__(
            "Unknown CRM %r. Known CRMs: %s." % (name, ", ".join(self.known) or "none")
        )
