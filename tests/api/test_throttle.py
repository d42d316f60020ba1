"""Throttling per token (REST_FRAMEWORK's UserRateThrottle at CRMSYNC_API_RATE),
counted in CACHES["default"], the cache every process shares."""

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.throttling import UserRateThrottle

from tests.api.conftest import CHANGE_CONTACTS
from tests.api.probe import PROBE_URL

pytestmark = pytest.mark.urls("tests.api.probe")

RATE = 3


@pytest.fixture
def low_rate(monkeypatch):
    # DRF copies DEFAULT_THROTTLE_RATES onto the class when it is imported.
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"user": "%d/min" % RATE})


def test_the_request_over_the_rate_is_a_429_with_retry_after(low_rate, client_with):
    client = client_with(CHANGE_CONTACTS)
    assert [client.get(PROBE_URL).status_code for _ in range(RATE)] == [200] * RATE
    response = client.get(PROBE_URL)
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 60


def test_each_token_has_its_own_count(low_rate, client_with):
    busy, other = client_with(CHANGE_CONTACTS), client_with(CHANGE_CONTACTS)
    for _ in range(RATE + 1):
        busy.get(PROBE_URL)
    assert busy.get(PROBE_URL).status_code == 429
    assert other.get(PROBE_URL).status_code == 200


def test_the_count_lives_in_the_shared_cache(low_rate, client_with):
    client = client_with(CHANGE_CONTACTS)
    for _ in range(RATE):
        client.get(PROBE_URL)
    authorization = client._credentials["HTTP_AUTHORIZATION"]
    assert len(throttle_history(authorization)) == RATE
    # Another client (another process, for all it knows) with the same token is
    # already over the rate.
    again = APIClient()
    again.credentials(HTTP_AUTHORIZATION=authorization)
    assert again.get(PROBE_URL).status_code == 429


def throttle_history(authorization):
    """The request times the throttle keeps for this token's user, read from the cache."""
    user_pk = Token.objects.get(key=authorization.split()[1]).user_id
    return cache.get(UserRateThrottle.cache_format % {"scope": "user", "ident": user_pk})


@pytest.mark.skipif(
    settings.CACHES["default"]["BACKEND"] != "django.core.cache.backends.db.DatabaseCache", reason="Redis configured"
)
def test_without_redis_the_count_is_a_row_of_the_database_cache_table(low_rate, client_with):
    client_with(CHANGE_CONTACTS).get(PROBE_URL)
    with connection.cursor() as cursor:
        cursor.execute("SELECT cache_key FROM %s" % connection.ops.quote_name(settings.CACHES["default"]["LOCATION"]))
        keys = [row[0] for row in cursor.fetchall()]
    assert any("throttle_user_" in key for key in keys)


def test_the_shared_cache_is_the_database_or_redis():
    backend = settings.CACHES["default"]["BACKEND"]
    assert backend in (
        "django.core.cache.backends.db.DatabaseCache",
        "django.core.cache.backends.redis.RedisCache",
    )
    assert UserRateThrottle.cache is cache


@pytest.mark.slow
def test_the_rate_comes_from_crmsync_api_rate():
    environment = dict(os.environ, CRMSYNC_API_RATE="7/min", DJANGO_SETTINGS_MODULE="crmsync_project.settings")
    script = (
        "import django; django.setup(); from rest_framework.throttling import UserRateThrottle as T; print(T().rate)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "7/min"
