import pytest
import requests

from integrations.sandbox.mautic import CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME


@pytest.fixture
def mautic(sandbox):
    session = requests.Session()
    session.auth = (USERNAME, PASSWORD)

    def call(method, path, **kwargs):
        return session.request(method, sandbox.url + "/mautic" + path, timeout=5, **kwargs)

    return call


def settings(sandbox, **values):
    requests.post(sandbox.url + "/_sandbox/mautic/settings", json=values, timeout=5).raise_for_status()


def test_new_upserts_by_email_and_says_which(mautic):
    created = mautic("POST", "/api/contacts/new", json={"email": "Ann@Example.com", "firstname": "Ann"})
    assert created.status_code == 201 and created.headers["Location"] == "/api/contacts/1"
    assert created.headers["Mautic-Version"]
    matched = mautic("POST", "/api/contacts/new", json={"email": "ann@example.com", "lastname": "Lee", "firstname": ""})
    assert matched.status_code == 200
    fields = matched.json()["contact"]["fields"]["all"]
    assert (fields["id"], fields["firstname"], fields["lastname"]) == (1, "Ann", "Lee"), "a blank does not overwrite"


def test_batch_new_answers_201_with_a_status_per_item_and_errors_by_index(mautic):
    mautic("POST", "/api/contacts/new", json={"email": "old@example.com"})
    body = mautic("POST", "/api/contacts/batch/new", json=[
        {"email": "new@example.com"}, {"email": "not-an-email"}, {"email": "OLD@example.com", "firstname": "O"}]).json()
    assert body["statusCodes"] == [201, 400, 200]
    assert body["errors"]["1"]["details"] == {"email": ["A valid email is required."]}
    assert sorted(body["contacts"]) == ["0", "2"], "failed items leave a sparse object"
    assert body["contacts"]["2"]["id"] == 1


def test_batch_over_200_is_a_500(mautic):
    response = mautic("POST", "/api/contacts/batch/new", json=[{"email": "p%d@example.com" % i} for i in range(201)])
    assert response.status_code == 500
    assert response.json()["errors"][0]["message"] == "A max of 200 entities are supported at a time."


def test_put_blanks_what_it_leaves_out_and_patch_does_not(mautic):
    mautic("POST", "/api/contacts/new", json={"email": "a@example.com", "firstname": "A", "company": "Acme"})
    assert mautic("PATCH", "/api/contacts/1/edit", json={"firstname": "Anna"}).json()["contact"]["fields"]["all"]["company"] == "Acme"
    assert mautic("PUT", "/api/contacts/1/edit", json={"email": "a@example.com"}).json()["contact"]["fields"]["all"]["company"] is None
    assert mautic("PATCH", "/api/contacts/99/edit", json={}).status_code == 404


def test_search_by_email_keys_contacts_by_id(mautic):
    mautic("POST", "/api/contacts/new", json={"email": "s@example.com"})
    body = mautic("GET", "/api/contacts", params={"search": "email:s@example.com"}).json()
    assert body["total"] == 1 and list(body["contacts"]) == ["1"]


def test_segments(mautic):
    mautic("POST", "/api/contacts/new", json={"email": "a@example.com"})
    segment = mautic("POST", "/api/segments/new", json={"name": "Leads"}).json()["list"]["id"]
    body = mautic("POST", "/api/segments/%d/contacts/add" % segment, json={"ids": [1, 5]}).json()
    assert body == {"success": 1, "details": {"1": {"success": True}, "5": {"success": False}}}
    assert mautic("POST", "/api/segments/99/contacts/add", json={"ids": [1]}).status_code == 404


def test_basic_auth_errors(sandbox):
    url = sandbox.url + "/mautic/api/contacts/new"
    wrong = requests.post(url, json={"email": "a@example.com"}, auth=(USERNAME, "wrong"))
    assert (wrong.status_code, wrong.json()["errors"][0]["message"]) == (401, "Authorization denied, invalid credentials.")
    settings(sandbox, basic_auth_enabled=False)
    off = requests.post(url, json={"email": "a@example.com"}, auth=(USERNAME, PASSWORD))
    assert (off.status_code, off.json()["errors"][0]["type"]) == (403, "access_denied")
    settings(sandbox, api_enabled=False)
    disabled = requests.post(url, json={"email": "a@example.com"}, auth=(USERNAME, PASSWORD))
    assert (disabled.status_code, disabled.json()["errors"][0]["type"]) == (403, "api_disabled")


def test_oauth2_client_credentials(sandbox):
    token_url = sandbox.url + "/mautic/oauth/v2/token"
    bad = requests.post(token_url, data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": "no"})
    assert (bad.status_code, bad.json()["errors"][0]["type"]) == (400, "invalid_client")
    token = requests.post(token_url, data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}).json()
    assert (token["token_type"], token["expires_in"]) == ("bearer", 3600)
    url = sandbox.url + "/mautic/api/contacts/new"
    ok = requests.post(url, json={"email": "a@example.com"}, headers={"Authorization": "Bearer " + token["access_token"]})
    assert ok.status_code == 201
    stale = requests.post(url, json={"email": "a@example.com"}, headers={"Authorization": "Bearer stale"})
    assert (stale.status_code, stale.json()["errors"][0]["type"]) == (401, "invalid_grant")


def test_non_atomic_uniqueness_lets_concurrent_creates_duplicate(sandbox):
    import threading

    settings(sandbox, non_atomic_uniqueness=True)
    threads = [threading.Thread(target=requests.post, args=(sandbox.url + "/mautic/api/contacts/new",),
                                kwargs={"json": {"email": "race@example.com"}, "auth": (USERNAME, PASSWORD)}) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(requests.get(sandbox.url + "/_sandbox/mautic/contacts").json()) > 1
