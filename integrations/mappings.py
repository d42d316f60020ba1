"""Staff mappings: what each CRM field receives, edited in the admin
(integrations.mapping_admin) and stored as FieldMapping rows.

A backend never reads the database, so whatever builds payloads (the engine, the
change-driven re-sync, sync_crm --dry-run, the admin's preview) takes its backend
through use_mapping(), which puts the CRM's mapping on it. A CRM without one keeps
its default field map and <CRM>_FIELD_MAP from the environment.
"""

import datetime
import re

from .backends.base import CONTACT_FIELDS, FROM_ATTRIBUTE, FROM_CONSTANT, FROM_FIELD, TRANSFORMS, MappedField
from .exceptions import InvalidContact
from .models import FieldMapping

# The kinds of value a CRM field holds, from the type names the CRMs give
# (HubSpot property types, Brevo attribute types, Mautic field types); any other
# type takes text.
KIND_OF_TYPE = {
    "number": "number",
    "float": "number",
    "integer": "number",
    "bool": "boolean",
    "boolean": "boolean",
    "date": "date",
    "datetime": "datetime",
}
BOOLEAN_TEXTS = ("true", "false")
TARGET_MAX_LENGTH = 100
# A field name any CRM and a JSON object take: printable, no surrounding space.
FIELD_NAME = re.compile(r"^\S(?:[^\x00-\x1f\x7f]*\S)?$")


def mapping_for(crm):
    """The CRM's staff mapping as a MappedField list, or None when staff set none."""
    rows = FieldMapping.objects.filter(crm=crm).order_by("position", "id")
    fields = [MappedField(row.target, row.source, row.source_kind, row.transform) for row in rows]
    return fields or None


def use_mapping(backend):
    """Put the staff mapping of the backend's CRM on it (None: the environment's
    field maps apply); returns the backend."""
    backend.mapping = mapping_for(backend.name)
    return backend


def field_kind(crm_type):
    """ "number", "boolean", "date", "datetime" or "text" for a CRM's type name."""
    return KIND_OF_TYPE.get(str(crm_type or "").lower(), "text")


def payload_or_why(backend, contact):
    """The payload the backend builds for the contact, or {"invalid": why}."""
    try:
        return backend.build_payload(contact)
    except InvalidContact as exc:
        return {"invalid": exc.message}


def field_problem(backend, field, crm_fields):
    """Why `field` (a MappedField) cannot go to the backend's CRM, or "". `crm_fields`
    is what backend.crm_fields() answered: None for a CRM that takes any field."""
    problem = _form_problem(backend, field)
    if problem or crm_fields is None:
        return problem
    key = backend.custom_field_key(field.target)
    if key not in crm_fields:
        return "%s has no contact field %r." % (backend.verbose_name, field.target)
    return _type_problem(backend, field, field_kind(crm_fields[key]))


def _form_problem(backend, field):
    if not FIELD_NAME.match(field.target) or len(field.target) > TARGET_MAX_LENGTH:
        return "%r is not a field name: printable characters, no surrounding spaces, at most %d." % (
            field.target,
            TARGET_MAX_LENGTH,
        )
    if field.target.lower() == "email":
        return "The email is always sent from the contact's email; it cannot be mapped."
    if backend.is_consent_field(field.target):
        return "%s holds a person's consent; a mapping never writes it, so no sync can undo an opt-out." % field.target
    if field.transform not in TRANSFORMS:
        return "Unknown transform %r." % field.transform
    if field.kind == FROM_FIELD and field.source not in CONTACT_FIELDS:
        return "%r is not a contact field; choose one of %s." % (field.source, ", ".join(CONTACT_FIELDS))
    if field.kind not in (FROM_FIELD, FROM_ATTRIBUTE, FROM_CONSTANT) or not field.source:
        return "Say where the value comes from."
    return ""


def _type_problem(backend, field, kind):
    if kind == "text" or field.kind == FROM_ATTRIBUTE:
        # An attributes key may hold a number, a boolean or a date: only a CRM can tell.
        return ""
    if field.kind == FROM_CONSTANT:
        value = TRANSFORMS[field.transform](field.source)
        if _fits(value, kind):
            return ""
        return "%s is a %s field in %s; %r is not a %s." % (field.target, kind, backend.verbose_name, value, kind)
    if kind == "number" and field.transform == "digits_only":
        return ""
    return "%s is a %s field in %s; the contact's %s is text (use digits only for a number, or a constant)." % (
        field.target,
        kind,
        backend.verbose_name,
        field.source,
    )


def _fits(value, kind):
    try:
        if kind == "number":
            float(value)
        elif kind == "boolean":
            return value.lower() in BOOLEAN_TEXTS
        elif kind == "date":
            datetime.date.fromisoformat(value)
        else:
            datetime.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True
