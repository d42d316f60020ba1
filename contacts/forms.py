import json

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from integrations.registry import crm_choices

from .importer import RowError, clean_value, column_name
from .models import Contact


class CRMChoiceForm(forms.Form):
    """The CRMs a bulk action applies to, chosen on its confirmation page."""

    crms = forms.MultipleChoiceField(
        label=_("CRMs"),
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": _("Choose at least one CRM.")},
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["crms"].choices = crm_choices()


class AttributesField(forms.JSONField):
    """The contact's other attributes as a JSON object of names to text, the form
    imports and the API give them: laid out one per line, and refused with a reason
    when it is not valid JSON, not an object, or a value is not text."""

    default_error_messages = {"invalid": _("This is not valid JSON: check the quotes, commas and braces.")}

    def __init__(self, **kwargs):
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 6, "class": "vLargeTextField crm-attributes-editor"}))
        kwargs.setdefault(
            "help_text",
            _('A JSON object of names to text, for example {"job_title": "CTO", "source": "fair"}.'),
        )
        super().__init__(**kwargs)

    def to_python(self, value):
        # An emptied editor means no attributes; the column holds {}, never null.
        value = super().to_python(value)
        return {} if value is None else value

    def prepare_value(self, value):
        if isinstance(value, dict):
            return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
        return super().prepare_value(value)

    def validate(self, value):
        super().validate(value)
        if value in self.empty_values:
            return
        if not isinstance(value, dict):
            raise ValidationError(_("Attributes must be a JSON object ({...}) of names to text."), code="not_object")
        problems = [attribute_problem(name, text) for name, text in value.items()]
        problems = [problem for problem in problems if problem]
        if problems:
            raise ValidationError(problems, code="invalid_attribute")


def attribute_problem(name, text):
    """Why `name`: `text` is not an attribute a contact can keep, or None; the
    length and text rules are the importer's."""
    if not name.strip():
        return _("An attribute needs a name.")
    if not isinstance(text, str):
        return _("%(name)s: the value must be text in quotes.") % {"name": name}
    try:
        clean_value(column_name(name), text)
    except RowError as exc:
        return str(exc)
    return None


class ContactForm(forms.ModelForm):
    """The contact page's form: attributes edited as validated JSON."""

    class Meta:
        model = Contact
        # The admin adds the other fields from its fieldsets (with its URL scheme).
        fields = ("attributes",)
        field_classes = {"attributes": AttributesField}
