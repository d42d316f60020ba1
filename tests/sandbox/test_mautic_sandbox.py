import pytest
import requests

from crm_sandbox.mautic import CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME


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
    # An absolute path below the instance's base path (the sandbox's Mautic sits at /mautic).
    assert created.status_code == 201 and created.headers["Location"] == "/mautic/api/contacts/1"
    assert created.headers["Mautic-Version"]
    matched = mautic("POST", "/api/contacts/new", json={"email": "ann@example.com", "lastname": "Lee", "firstname": ""})
    assert matched.status_code == 200
    fields = matched.json()["contact"]["fields"]["all"]
    assert (fields["id"], fields["firstname"], fields["lastname"]) == (1, "Ann", "Lee"), "a blank does not overwrite"


def test_batch_new_answers_201_with_a_status_per_item_and_errors_by_index(mautic):
    mautic("POST", "/api/contacts/new", json={"email": "old@example.com"})
    body = mautic(
        "POST",
        "/api/contacts/batch/new",
        json=[{"email": "new@example.com"}, {"email": "not-an-email"}, {"email": "OLD@example.com", "firstname": "O"}],
    ).json()
    assert body["statusCodes"] == [201, 400, 200]
    assert body["errors"] == {
        "1": {
            "code": 400,
            "message": "email: not-an-email is invalid.",
            "details": {"email": ["not-an-email is invalid."]},
            "type": None,
        }
    }
    assert sorted(body["contacts"]) == ["0", "2"], "failed items leave a sparse object"
    assert body["contacts"]["2"]["id"] == 1


def test_batch_new_keys_are_a_list_when_they_run_from_0_as_phps_json_encode_writes_them(mautic):
    all_fine = mautic(
        "POST", "/api/contacts/batch/new", json=[{"email": "a@example.com"}, {"email": "b@example.com"}]
    ).json()
    assert "errors" not in all_fine, "the key is there only when an item failed"
    assert [c["id"] for c in all_fine["contacts"]] == [1, 2]
    first_fails = mautic("POST", "/api/contacts/batch/new", json=[{"email": "bad@"}, {"email": "c@example.com"}]).json()
    assert first_fails["errors"] == [
        {"code": 400, "message": "email: bad@ is invalid.", "details": {"email": ["bad@ is invalid."]}, "type": None}
    ]
    assert list(first_fails["contacts"]) == ["1"]
    last_fails = mautic("POST", "/api/contacts/batch/new", json=[{"email": "d@example.com"}, {"email": "bad@"}]).json()
    assert isinstance(last_fails["contacts"], list) and list(last_fails["errors"]) == ["1"]


def test_an_invalid_email_is_refused_in_mautics_words(mautic):
    response = mautic("POST", "/api/contacts/new", json={"email": "not-an-email", "firstname": "N"})
    assert response.status_code == 400
    assert response.json() == {
        "errors": [
            {
                "code": 400,
                "message": "email: not-an-email is invalid.",
                "details": {"email": ["not-an-email is invalid."]},
                "type": None,
            }
        ]
    }
    odd = mautic("POST", "/api/contacts/new", json={"email": "a&b@example.com"}).json()["errors"][0]
    assert odd["message"] == "email: a&b@example.com has characters not allowed in email addresses."


def test_a_contact_without_email_is_created_each_time_as_the_email_field_is_not_required(mautic):
    assert mautic("POST", "/api/contacts/new", json={"firstname": "NoMail"}).status_code == 201
    assert mautic("POST", "/api/contacts/new", json={"firstname": "NoMail", "email": ""}).status_code == 201
    body = mautic("POST", "/api/contacts/batch/new", json=[{"firstname": "A"}, {"email": "b@example.com"}]).json()
    assert body["statusCodes"] == [201, 201] and "errors" not in body
    assert len(mautic("GET", "/api/contacts").json()["contacts"]) == 4, "nothing to match on: each is new"


def test_batch_over_200_is_a_500(mautic):
    response = mautic("POST", "/api/contacts/batch/new", json=[{"email": "p%d@example.com" % i} for i in range(201)])
    assert response.status_code == 500
    assert response.json()["errors"][0]["message"] == "A max of 200 entities are supported at a time."


def test_put_blanks_what_it_leaves_out_and_patch_does_not(mautic):
    mautic("POST", "/api/contacts/new", json={"email": "a@example.com", "firstname": "A", "company": "Acme"})
    assert (
        mautic("PATCH", "/api/contacts/1/edit", json={"firstname": "Anna"}).json()["contact"]["fields"]["all"][
            "company"
        ]
        == "Acme"
    )
    assert (
        mautic("PUT", "/api/contacts/1/edit", json={"email": "a@example.com"}).json()["contact"]["fields"]["all"][
            "company"
        ]
        is None
    )
    assert mautic("PATCH", "/api/contacts/99/edit", json={}).status_code == 404


def test_search_by_email_keys_contacts_by_id(mautic):
    mautic("POST", "/api/contacts/new", json={"email": "s@example.com"})
    body = mautic("GET", "/api/contacts", params={"search": "email:s@example.com"}).json()
    assert body["total"] == "1" and list(body["contacts"]) == ["1"]


def test_segments(mautic):
    mautic("POST", "/api/contacts/new", json={"email": "a@example.com"})
    segment = mautic("POST", "/api/segments/new", json={"name": "Leads"}).json()["list"]["id"]
    body = mautic("POST", "/api/segments/%d/contacts/add" % segment, json={"ids": [1, 5]}).json()
    assert body == {"success": 1, "details": {"1": {"success": True}, "5": {"success": False}}}
    assert mautic("POST", "/api/segments/99/contacts/add", json={"ids": [1]}).status_code == 404


def test_a_segment_add_of_no_ids_succeeds_and_only_a_missing_ids_is_refused(mautic):
    segment = mautic("POST", "/api/segments/new", json={"name": "Leads"}).json()["list"]["id"]
    empty = mautic("POST", "/api/segments/%d/contacts/add" % segment, json={"ids": []})
    assert (empty.status_code, empty.json()) == (200, {"success": 1, "details": []})
    missing = mautic("POST", "/api/segments/%d/contacts/add" % segment, json={})
    assert missing.status_code == 400
    assert missing.json()["errors"] == [{"code": 400, "message": "This is a bad request.", "details": [], "type": None}]


def test_basic_auth_errors_carry_a_type_and_no_details(sandbox):
    url = sandbox.url + "/mautic/api/contacts/new"
    wrong = requests.post(url, json={"email": "a@example.com"}, auth=(USERNAME, "wrong"))
    assert (wrong.status_code, wrong.json()) == (
        401,
        {"errors": [{"message": "Authorization denied, invalid credentials.", "code": 401, "type": "access_denied"}]},
    )
    none = requests.post(url, json={"email": "a@example.com"})
    assert (none.status_code, none.json()["errors"]) == (
        401,
        [{"message": "API authorization denied.", "code": 401, "type": "access_denied"}],
    )
    settings(sandbox, basic_auth_enabled=False)
    off = requests.post(url, json={"email": "a@example.com"}, auth=(USERNAME, PASSWORD))
    assert (off.status_code, off.json()) == (
        403,
        {
            "errors": [
                {
                    "message": "Basic Auth disabled. You need to enable HTTP basic auth "
                    "in the API settings of Mautic's Configuration.",
                    "code": 403,
                    "type": "access_denied",
                }
            ]
        },
    )
    settings(sandbox, api_enabled=False)
    disabled = requests.post(url, json={"email": "a@example.com"}, auth=(USERNAME, PASSWORD))
    assert (disabled.status_code, disabled.json()) == (
        403,
        {
            "errors": [
                {
                    "message": "API disabled. You need to enable the API "
                    "in the API settings of Mautic's Configuration.",
                    "code": 403,
                    "type": "api_disabled",
                }
            ]
        },
    )


def test_the_token_endpoint_is_refused_too_while_the_api_is_disabled(sandbox):
    settings(sandbox, api_enabled=False)
    answer = requests.post(
        sandbox.url + "/mautic/oauth/v2/token",
        timeout=5,
        data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
    )
    assert answer.status_code == 403
    assert answer.json()["errors"][0]["type"] == "api_disabled"


def test_oauth2_client_credentials(sandbox):
    token_url = sandbox.url + "/mautic/oauth/v2/token"
    bad = requests.post(
        token_url, data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": "no"}
    )
    assert (bad.status_code, bad.json()["errors"]) == (
        400,
        [{"message": "The client credentials are invalid", "code": 400, "type": "invalid_client"}],
    )
    token = requests.post(
        token_url, data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    ).json()
    assert (token["token_type"], token["expires_in"]) == ("bearer", 3600)
    url = sandbox.url + "/mautic/api/contacts/new"
    ok = requests.post(
        url, json={"email": "a@example.com"}, headers={"Authorization": "Bearer " + token["access_token"]}
    )
    assert ok.status_code == 201
    stale = requests.post(url, json={"email": "a@example.com"}, headers={"Authorization": "Bearer stale"})
    assert (stale.status_code, stale.json()["errors"]) == (
        401,
        [{"message": "The access token provided is invalid.", "code": 401, "type": "invalid_grant"}],
    )


def test_non_atomic_uniqueness_lets_concurrent_creates_duplicate(sandbox):
    import threading

    settings(sandbox, non_atomic_uniqueness=True)
    threads = [
        threading.Thread(
            target=requests.post,
            args=(sandbox.url + "/mautic/api/contacts/new",),
            kwargs={"json": {"email": "race@example.com"}, "auth": (USERNAME, PASSWORD)},
        )
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(requests.get(sandbox.url + "/_sandbox/mautic/contacts").json()) > 1
