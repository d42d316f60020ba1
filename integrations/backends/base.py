"""The base every CRM backend subclasses."""


class CRMBackend:
    """One CRM. Subclasses set `name` (a short lower-case slug stored in the
    database, so never rename it) and `verbose_name` (shown to staff)."""

    name = None
    verbose_name = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.name or cls.name != cls.name.lower() or len(cls.name) > 32:
            raise TypeError(
                "%s.name must be a lower-case slug of at most 32 characters" % cls.__name__
            )
        if not cls.verbose_name:
            raise TypeError("%s must set verbose_name" % cls.__name__)
