"""The API's own pages: the schema UI works offline, and an unknown address under
/api/ is answered in JSON."""

import pytest

pytestmark = pytest.mark.django_db


def test_the_schema_ui_loads_its_scripts_from_this_server_not_a_cdn(staff_client):
    page = staff_client.get("/api/schema/ui/").content.decode()
    assert "swagger-ui-dist" in page and "cdn.jsdelivr.net" not in page
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page


@pytest.mark.parametrize(
    "address", ["/api/", "/api/v3/nothing-here", "/api/v2/contacts", "/api/v3/erasures/a%0Ab", "/api/v3/%0A"]
)
def test_an_unknown_api_address_is_a_json_404(staff_client, address):
    response = staff_client.get(address)
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert "/api/schema/ui/" in response.json()["detail"]
