import pytest
import requests

from integrations.sandbox.server import SandboxOptions, SandboxServer


@pytest.fixture(scope="module")
def server():
    with SandboxServer(options=SandboxOptions(seed=3)) as running:
        yield running


@pytest.fixture
def sandbox(server):
    """The running sandbox, emptied, with its real limits back."""
    requests.post(server.url + "/_sandbox/reset", timeout=5).raise_for_status()
    return server
