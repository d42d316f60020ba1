"""The CRM registry: names and labels without importing backends, lazy backend
classes, validation, and CRMSYNC_EXTRA_BACKENDS."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.utils.module_loading import import_string

from integrations import registry
from integrations.exceptions import CRMConfigurationError
from integrations.registry import UnknownCRM

from .conftest import DOUBLES
from .doubles import OtherBackend, ScriptedBackend

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("crm", registry.BUILTIN_CRMS, ids=lambda crm: crm.name)
def test_a_built_in_crm_is_written_as_its_backend_class_names_itself(crm):
    backend_class = import_string(crm.backend_path)
    assert (crm.name, crm.label) == (backend_class.name, backend_class.verbose_name)
    assert registry.get_backend_class(crm.name) is backend_class


def test_names_and_labels_of_built_in_crms_import_no_backend_no_model_and_no_http():
    script = (
        "import sys, django.conf\n"
        "from integrations import registry\n"
        "print(registry.crm_choices(), registry.verbose_crm_name('hubspot'))\n"
        "registry.validate_crm_names(['n8n', 'brevo'])\n"
        "loaded = [m for m in sys.modules if m.startswith(('integrations.', 'contacts', 'requests'))]\n"
        "print(sorted(loaded))\n"
    )
    env = {"DJANGO_SETTINGS_MODULE": "crmsync_project.settings", "DEBUG": "true", "PATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    choices, loaded = result.stdout.splitlines()
    assert choices == ("[('brevo', 'Brevo'), ('hubspot', 'HubSpot'), ('mautic', 'Mautic'), ('n8n', 'n8n')] HubSpot")
    assert loaded == "['integrations.exceptions', 'integrations.registry']"


def test_contacts_imports_nothing_of_integrations_but_the_registry():
    imported = set()
    for path in (ROOT / "contacts").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert {name for name in imported if name.split(".")[0] == "integrations"} == {"integrations.registry"}


def test_names_are_validated_and_returned_in_registry_order():
    assert registry.validate_crm_names(["n8n", "brevo", "n8n"]) == ["brevo", "n8n"]
    with pytest.raises(UnknownCRM) as raised:
        registry.validate_crm_names(["brevo", "salesforce"])
    assert raised.value.name == "salesforce"
    assert raised.value.known == ("brevo", "hubspot", "mautic", "n8n")
    with pytest.raises(UnknownCRM):
        registry.get_backend_class("salesforce")


def test_the_field_validator_names_the_known_crms():
    registry.validate_crm_name("mautic")
    with pytest.raises(ValidationError) as raised:
        registry.validate_crm_name("salesforce")
    assert raised.value.code == "unknown_crm"
    assert raised.value.messages == ["salesforce is not a known CRM. Known CRMs: brevo, hubspot, mautic, n8n."]


def test_an_unknown_name_is_shown_as_it_is():
    assert registry.verbose_crm_name("salesforce") == "salesforce"


def test_extra_backends_follow_the_built_in_ones_until_the_setting_goes(settings):
    settings.CRMSYNC_EXTRA_BACKENDS = DOUBLES
    assert registry.crm_names() == ("brevo", "hubspot", "mautic", "n8n", "scripted", "other")
    assert registry.crm_choices()[-2:] == [("scripted", "Scripted CRM"), ("other", "Other CRM")]
    assert registry.get_backend_class("other") is OtherBackend
    assert registry.backend_classes()[-2:] == (ScriptedBackend, OtherBackend)
    settings.CRMSYNC_EXTRA_BACKENDS = []
    assert "scripted" not in registry.crm_names()


def test_an_extra_backend_that_cannot_be_imported_is_a_configuration_error(settings):
    settings.CRMSYNC_EXTRA_BACKENDS = ["tests.integrations.nowhere.Backend"]
    with pytest.raises(CRMConfigurationError, match=re.escape("'tests.integrations.nowhere.Backend'")):
        registry.crm_names()
