"""The sandbox points each CRM at itself through integrations.conf, and production
code never imports it (the crm_sandbox app registers its settings in ready())."""

import ast
from pathlib import Path

import pytest
import requests

from crm_sandbox import CRM_SETTINGS, EMULATOR_CLASSES
from integrations.conf import get_crm_setting, in_sandbox, sandbox_settings

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_PACKAGES = ("contacts", "integrations", "crmsync_project")


def test_every_emulated_crm_has_its_settings_registered():
    assert sorted(CRM_SETTINGS) == sorted(emulator.name for emulator in EMULATOR_CLASSES)


def test_the_sandbox_settings_replace_the_crms_own_while_the_url_is_set(settings):
    settings.CRMSYNC_SANDBOX_URL = "http://sandbox.test:8025/"
    settings.BREVO_API_KEY = "xkeysib-a-real-key"
    for crm, settings_for in CRM_SETTINGS.items():
        assert in_sandbox(crm)
        assert sandbox_settings(crm) == settings_for("http://sandbox.test:8025")
    assert get_crm_setting("brevo", "API_KEY") == CRM_SETTINGS["brevo"]("")["API_KEY"]
    assert not in_sandbox("salesforce"), "a CRM the sandbox does not emulate keeps its own settings"


def test_without_the_url_every_crm_keeps_its_own_settings(settings):
    settings.CRMSYNC_SANDBOX_URL = ""
    settings.BREVO_API_KEY = "xkeysib-a-real-key"
    assert not any(in_sandbox(crm) for crm in CRM_SETTINGS)
    assert get_crm_setting("brevo", "API_KEY") == "xkeysib-a-real-key"


def _authenticated_request(crm, values):
    """One request a backend would make with `values`, the settings the sandbox registered."""
    if crm == "brevo":
        return requests.get(values["API_BASE_URL"] + "/contacts", headers={"api-key": values["API_KEY"]}, timeout=5)
    if crm == "hubspot":
        headers = {"Authorization": "Bearer " + values["API_KEY"]}
        return requests.get(values["API_BASE_URL"] + "/crm/v3/properties/contacts", headers=headers, timeout=5)
    if crm == "mautic":
        auth = (values["USERNAME"], values["PASSWORD"])
        return requests.get(values["BASE_URL"] + "/api/contacts", auth=auth, timeout=5)
    headers = {values["WEBHOOK_AUTH_HEADER"]: "Bearer " + values["WEBHOOK_SECRET"]}
    return requests.post(values["WEBHOOK_URL"], json={"email": "a@example.com"}, headers=headers, timeout=5)


@pytest.mark.parametrize("crm", sorted(CRM_SETTINGS))
def test_the_registered_settings_reach_the_emulator_and_pass_its_auth(sandbox, settings, crm):
    settings.CRMSYNC_SANDBOX_URL = sandbox.url
    response = _authenticated_request(crm, sandbox_settings(crm))
    assert response.status_code == 200, response.text


def _sandbox_imports(path):
    """The lines of `path` that import crm_sandbox or name one of its modules."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # A dotted path handed to importlib is an import too.
            names = [node.value] if node.value.startswith("crm_sandbox.") else []
        else:
            continue
        if any(name == "crm_sandbox" or name.startswith("crm_sandbox.") for name in names):
            yield "%s:%d" % (path.relative_to(ROOT), node.lineno)


def test_production_code_never_imports_the_sandbox():
    found = [
        line
        for package in PRODUCTION_PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for line in _sandbox_imports(path)
    ]
    assert found == []
