"""Settings are read from the environment; each case runs in a fresh interpreter."""

import json
import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

PROJECT_DIR = Path(__file__).resolve().parent.parent
PRINT_SETTINGS = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'debug': s.DEBUG, 'db': s.DATABASES['default']['ENGINE'], "
    "'q': s.Q_CLUSTER, 'tz': s.TIME_ZONE, 'hosts': s.ALLOWED_HOSTS}))"
)


def load_settings(**env):
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS"}
    }
    clean.update(ENV_FILE=os.devnull, DJANGO_SETTINGS_MODULE="crmsync_project.settings", **env)
    return subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS], cwd=PROJECT_DIR, env=clean, capture_output=True, text=True
    )


def test_refuses_to_start_without_a_secret_key_when_debug_is_off():
    result = load_settings()
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_starts_with_a_secret_key_and_safe_defaults():
    result = load_settings(SECRET_KEY="x" * 50)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["debug"] is False
    assert loaded["db"] == "django.db.backends.sqlite3"
    assert loaded["tz"] == "UTC"
    assert loaded["q"]["orm"] == "default" and "redis" not in loaded["q"]


def test_redis_url_switches_the_task_broker_and_database_url_the_database():
    result = load_settings(
        DEBUG="true",
        REDIS_URL="redis://127.0.0.1:6379/3",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/crmsync",
        ALLOWED_HOSTS="crm.example.com,admin.example.com",
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["q"]["redis"] == "redis://127.0.0.1:6379/3" and "orm" not in loaded["q"]
    assert loaded["db"] == "django.db.backends.postgresql"
    assert loaded["hosts"] == ["crm.example.com", "admin.example.com"]


def test_task_queue_never_redelivers_a_running_task_nor_replays_missed_slots():
    q = settings.Q_CLUSTER
    assert q["retry"] > q["timeout"]
    assert q["max_attempts"] == 1
    assert q["ack_failures"] is True
    assert q["catch_up"] is False
