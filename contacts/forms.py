from django import forms
from django.utils.translation import gettext_lazy as _

from integrations.registry import crm_choices


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
