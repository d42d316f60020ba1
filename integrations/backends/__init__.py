"""The registry of CRM backends.

Adding a CRM to crmsync means adding its class to BACKEND_CLASSES. A deployment can
add its own with CRMSYNC_EXTRA_BACKENDS, a list of dotted paths to CRMBackend
subclasses.
"""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from ..exceptions import CRMConfigurationError, UnknownCRM
from .brevo import BrevoBackend
from .hubspot import HubSpotBackend
from .mautic import MauticBackend
from .n8n import N8nBackend

BACKEND_CLASSES = (BrevoBackend, HubSpotBackend, MauticBackend, N8nBackend)

_by_name = None


def _registry():
    global _by_name
    if _by_name is None:
        classes = list(BACKEND_CLASSES)
        for path in getattr(settings, "CRMSYNC_EXTRA_BACKENDS", ()):
            try:
                classes.append(import_string(path))
            except ImportError as exc:
                raise CRMConfigurationError(
                    "CRMSYNC_EXTRA_BACKENDS names %r, which cannot be imported: %s" % (path, exc)
                )
        _by_name = {cls.name: cls for cls in classes}
    return _by_name


@receiver(setting_changed)
def _forget_registry(setting, **kwargs):
    global _by_name
    if setting == "CRMSYNC_EXTRA_BACKENDS":
        _by_name = None


def backend_classes():
    return tuple(_registry().values())


def crm_names():
    return tuple(_registry())


def crm_choices():
    return [(cls.name, cls.verbose_name) for cls in backend_classes()]


def enabled_backend_classes():
    return tuple(cls for cls in backend_classes() if cls.is_enabled())


def get_backend_class(name):
    try:
        return _registry()[name]
    except KeyError:
        raise UnknownCRM(name, crm_names()) from None


def get_enabled_backend_class(name):
    """The backend class for `name`, or CRMConfigurationError naming what is missing."""
    cls = get_backend_class(name)
    if not cls.required_settings:
        raise CRMConfigurationError("%s is not available yet in this version." % cls.verbose_name)
    missing = cls.missing_settings()
    if missing:
        raise CRMConfigurationError(
            "%s is not configured: set %s in the environment or .env."
            % (cls.verbose_name, " and ".join(missing))
        )
    return cls


def verbose_crm_name(name):
    cls = _registry().get(name)
    return cls.verbose_name if cls else name


def validate_crm_names(names):
    """Return `names` de-duplicated in registry order, or raise UnknownCRM."""
    wanted = set(names)
    for name in wanted:
        get_backend_class(name)
    return [name for name in _registry() if name in wanted]


def validate_crm_name(value):
    """Model field validator: the CRM must be one the project knows."""
    if value not in _registry():
        raise ValidationError(
            "%(value)s is not a known CRM. Known CRMs: %(known)s.",
            code="unknown_crm",
            params={"value": value, "known": ", ".join(crm_names())},
        )
