"""The registry of CRM backends. Adding a CRM means adding its class to BACKEND_CLASSES."""

from django.core.exceptions import ValidationError

from ..exceptions import UnknownCRM
from .brevo import BrevoBackend
from .hubspot import HubSpotBackend
from .mautic import MauticBackend
from .n8n import N8nBackend

BACKEND_CLASSES = (BrevoBackend, HubSpotBackend, MauticBackend, N8nBackend)

_BY_NAME = {cls.name: cls for cls in BACKEND_CLASSES}


def crm_names():
    return tuple(_BY_NAME)


def crm_choices():
    return [(cls.name, cls.verbose_name) for cls in BACKEND_CLASSES]


def get_backend_class(name):
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownCRM(name, crm_names()) from None


def verbose_crm_name(name):
    cls = _BY_NAME.get(name)
    return cls.verbose_name if cls else name


def validate_crm_names(names):
    """Return `names` de-duplicated in registry order, or raise UnknownCRM."""
    for name in names:
        get_backend_class(name)
    return [name for name in _BY_NAME if name in set(names)]


def validate_crm_name(value):
    """Model field validator: the CRM must be one the project knows."""
    if value not in _BY_NAME:
        raise ValidationError(
            "%(value)s is not a known CRM. Known CRMs: %(known)s.",
            code="unknown_crm",
            params={"value": value, "known": ", ".join(crm_names())},
        )
