"""The CRMs crmsync knows: their names, labels for staff, validation, and backend classes.

A leaf module: it imports no model and no HTTP code, so `contacts` may use it
without importing the CRM layer. A built-in CRM's name and label are written here;
its backend class is imported from its dotted path only when first asked for (as
Django resolves EMAIL_BACKEND). Adding a CRM to crmsync means adding one line to
BUILTIN_CRMS. A deployment adds its own with CRMSYNC_EXTRA_BACKENDS, a list of
dotted paths to CRMBackend subclasses, imported on the registry's first use.
"""

from functools import cached_property

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from .exceptions import CRMConfigurationError, UnknownCRM

__all__ = [
    "BUILTIN_CRMS",
    "CRM",
    "UnknownCRM",
    "backend_classes",
    "crm_choices",
    "crm_names",
    "enabled_backend_classes",
    "get_backend_class",
    "get_enabled_backend_class",
    "mirroring_crms",
    "validate_crm_name",
    "validate_crm_names",
    "verbose_crm_name",
]


class CRM:
    """One CRM: `name` is its key in the database and settings, `label` what staff read,
    `backend_path` the dotted path of its CRMBackend subclass."""

    def __init__(self, name, label, backend_path):
        self.name = name
        self.label = label
        self.backend_path = backend_path

    def __repr__(self):
        return "CRM(%r, %r, %r)" % (self.name, self.label, self.backend_path)

    @cached_property
    def backend_class(self):
        return import_string(self.backend_path)


BUILTIN_CRMS = (
    CRM("brevo", "Brevo", "integrations.backends.brevo.BrevoBackend"),
    CRM("hubspot", "HubSpot", "integrations.backends.hubspot.HubSpotBackend"),
    CRM("mautic", "Mautic", "integrations.backends.mautic.MauticBackend"),
    CRM("n8n", "n8n", "integrations.backends.n8n.N8nBackend"),
)

_by_name = None


def _registry():
    global _by_name
    if _by_name is None:
        crms = {crm.name: crm for crm in BUILTIN_CRMS}
        for path in getattr(settings, "CRMSYNC_EXTRA_BACKENDS", ()):
            extra = _extra_crm(path)
            crms[extra.name] = extra
        _by_name = crms
    return _by_name


def _extra_crm(path):
    # An extra backend's name and label are only known from its class, so it is
    # imported when the registry is first used, not when this module is.
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise CRMConfigurationError(
            "CRMSYNC_EXTRA_BACKENDS names %r, which cannot be imported: %s" % (path, exc)
        ) from exc
    crm = CRM(cls.name, cls.verbose_name, path)
    crm.backend_class = cls
    return crm


@receiver(setting_changed)
def _forget_registry(setting, **kwargs):
    global _by_name
    if setting == "CRMSYNC_EXTRA_BACKENDS":
        _by_name = None


def crm_names():
    return tuple(_registry())


def crm_choices():
    return [(crm.name, crm.label) for crm in _registry().values()]


def verbose_crm_name(name):
    crm = _registry().get(name)
    return crm.label if crm else name


def backend_classes():
    """Every known CRM's backend class; this imports each backend module."""
    return tuple(crm.backend_class for crm in _registry().values())


def enabled_backend_classes():
    return tuple(cls for cls in backend_classes() if cls.is_enabled())


def mirroring_crms():
    """Names of the configured CRMs that mirror local deletes (<CRM>_MIRROR_DELETES)."""
    return [cls.name for cls in enabled_backend_classes() if cls.mirrors_deletes()]


def get_backend_class(name):
    try:
        crm = _registry()[name]
    except KeyError:
        raise UnknownCRM(name, crm_names()) from None
    return crm.backend_class


def get_enabled_backend_class(name):
    """The backend class for `name`, or CRMConfigurationError naming what is missing."""
    cls = get_backend_class(name)
    if not cls.required_settings:
        raise CRMConfigurationError("%s is not available yet in this version." % cls.verbose_name)
    missing = cls.missing_settings()
    if missing:
        raise CRMConfigurationError(
            "%s is not configured: set %s in the environment or .env." % (cls.verbose_name, " and ".join(missing))
        )
    return cls


def validate_crm_names(names):
    """Return `names` de-duplicated in registry order, or raise UnknownCRM."""
    wanted = set(names)
    for name in wanted:
        if name not in _registry():
            raise UnknownCRM(name, crm_names())
    return [name for name in _registry() if name in wanted]


def validate_crm_name(value):
    """Model field validator: the CRM must be one the project knows."""
    if value not in _registry():
        raise ValidationError(
            "%(value)s is not a known CRM. Known CRMs: %(known)s.",
            code="unknown_crm",
            params={"value": value, "known": ", ".join(crm_names())},
        )
