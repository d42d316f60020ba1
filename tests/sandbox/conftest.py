import pytest
import requests

from crm_sandbox.brevo import API_KEY
from crm_sandbox.hubspot import ACCESS_TOKEN
from crm_sandbox.server import SandboxOptions, SandboxServer


@pytest.fixture
def sandbox():
    """A sandbox of its own for the test, on a free port, with the real rate limits."""
    with SandboxServer(port=0, options=SandboxOptions(seed=3)) as server:
        yield server


def api_client(base_url, headers):
    """call(method, path, **requests kwargs) against one CRM's API root, over one keep-alive session."""
    session = requests.Session()
    session.headers.update(headers)

    def call(method, path, **kwargs):
        kwargs.setdefault("timeout", 5)
        return session.request(method, base_url + path, **kwargs)

    return call


@pytest.fixture
def brevo(sandbox):
    return api_client(sandbox.url + "/brevo/v3", {"api-key": API_KEY})


@pytest.fixture
def hubspot(sandbox):
    return api_client(sandbox.url + "/hubspot", {"Authorization": "Bearer " + ACCESS_TOKEN})


@pytest.fixture
def control(sandbox):
    """call(method, "/brevo/faults", json=...) on the /_sandbox endpoints."""
    return api_client(sandbox.url + "/_sandbox", {})
