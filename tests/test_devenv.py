"""The development `.env` `make run` leaves, and which `.env` the settings read."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from crmsync_project import devenv

PROJECT_DIR = Path(__file__).resolve().parent.parent
# What a new terminal has: none of the settings bin/run-dev exports for its processes.
RUN_DEV_SETTINGS = {"DEBUG", "SECRET_KEY", "ENV_FILE", "DATABASE_URL", "SANDBOX_PORT", "PORT"}


def new_terminal_environment(**extra):
    clean = {
        name: value
        for name, value in os.environ.items()
        if name not in RUN_DEV_SETTINGS and not name.startswith(("CRMSYNC_", "BREVO_", "HUBSPOT_", "MAUTIC_", "N8N_"))
    }
    return {**clean, **extra}


def run_manage(*args, cwd, **env):
    return subprocess.run(
        [sys.executable, str(PROJECT_DIR / "manage.py"), *args],
        cwd=cwd,
        env=new_terminal_environment(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_written_development_env_lets_commands_run_from_another_terminal(tmp_path):
    env_path = tmp_path / ".env"
    devenv.write_development_env(env_path, sandbox_port=8125)

    # Without the file: the error a second terminal used to show.
    bare = run_manage("check", cwd=tmp_path, ENV_FILE=os.devnull)
    assert bare.returncode != 0 and "SECRET_KEY is not set" in bare.stderr

    checked = run_manage("check", cwd=tmp_path, ENV_FILE=str(env_path), DATABASE_URL="sqlite:///:memory:")
    assert checked.returncode == 0, checked.stderr
    # Sandbox mode comes from the file: the sandbox warning names its URL.
    assert "integrations.W003" in checked.stderr + checked.stdout
    assert "http://127.0.0.1:8125" in checked.stderr + checked.stdout

    helped = run_manage("sync_crm", "--help", cwd=tmp_path, ENV_FILE=str(env_path))
    assert helped.returncode == 0, helped.stderr


def test_the_development_env_holds_the_development_settings(tmp_path):
    env_path = tmp_path / ".env"
    note = devenv.write_development_env(env_path, sandbox_port=8025)
    values = devenv.read_values(env_path)
    assert "Wrote .env" in note
    assert values["DEBUG"] == "true"
    assert values["CRMSYNC_SANDBOX_URL"] == "http://127.0.0.1:8025"
    assert values["CRMSYNC_SUPPRESSION_KEY"]
    assert values["HUBSPOT_SYNC_SCHEDULER_INTERVAL_MINUTES"] == "1"


def test_a_users_own_env_is_never_rewritten_and_the_run_says_what_it_lacks(tmp_path):
    env_path = tmp_path / ".env"
    env_path.write_text("CRMSYNC_SANDBOX_URL=\nBREVO_API_KEY=xkeysib-real\n")
    note = devenv.write_development_env(env_path, sandbox_port=9000)
    assert env_path.read_text() == "CRMSYNC_SANDBOX_URL=\nBREVO_API_KEY=xkeysib-real\n"
    assert "left as it is" in note and "DEBUG" in note

    # Real CRMs: no sandbox to start, and no demo tick or development erasure key.
    exports = devenv.run_exports({}, env_path, 9000)
    assert exports == {"DEBUG": "true", "SANDBOX_PORT": ""}


def test_a_users_env_without_a_sandbox_url_still_runs_in_sandbox_mode(tmp_path):
    env_path = tmp_path / ".env"
    env_path.write_text("DEBUG=true\nBREVO_SYNC_SCHEDULER_INTERVAL_MINUTES=5\n")
    exports = devenv.run_exports({}, env_path, 8026)
    assert exports["CRMSYNC_SANDBOX_URL"] == "http://127.0.0.1:8026"
    assert exports["SANDBOX_PORT"] == "8026"
    assert "BREVO_SYNC_SCHEDULER_INTERVAL_MINUTES" not in exports
    assert exports["HUBSPOT_SYNC_SCHEDULER_INTERVAL_MINUTES"] == "1"
    assert "DEBUG" not in exports


def test_sandbox_port_moves_the_url_of_a_generated_env_only(tmp_path):
    env_path = tmp_path / ".env"
    devenv.write_development_env(env_path, sandbox_port=8025)
    devenv.write_development_env(env_path, sandbox_port=8030)
    assert devenv.read_values(env_path)["CRMSYNC_SANDBOX_URL"] == "http://127.0.0.1:8030"
    assert devenv.run_exports({}, env_path, 8030) == {"SANDBOX_PORT": "8030"}
    # The environment wins over the file: a sandbox elsewhere is not started here.
    assert devenv.run_exports({"CRMSYNC_SANDBOX_URL": "http://sandbox:8025"}, env_path, 8030)["SANDBOX_PORT"] == ""


def test_the_script_bin_run_dev_evals_writes_the_file_and_prints_exports(tmp_path):
    env_path = tmp_path / ".env"
    result = subprocess.run(
        [sys.executable, "-m", "crmsync_project.devenv", str(env_path), "--sandbox-port", "8040"],
        cwd=PROJECT_DIR,
        env=new_terminal_environment(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "export SANDBOX_PORT=8040"
    assert devenv.read_values(env_path)["CRMSYNC_SANDBOX_URL"] == "http://127.0.0.1:8040"


def test_env_file_choice():
    base = Path("/project")
    assert devenv.env_file({}, base) == base / ".env"
    assert devenv.env_file({"PYTEST_VERSION": "9.0"}, base) == os.devnull
    assert devenv.env_file({"PYTEST_VERSION": "9.0", "ENV_FILE": "/x/.env"}, base) == "/x/.env"


def test_tests_ignore_a_env_in_the_project_folder(tmp_path):
    # A copy of the settings package, so that its project folder (BASE_DIR) is tmp_path
    # and a .env can be put there without touching the developer's own.
    shutil.copytree(PROJECT_DIR / "crmsync_project", tmp_path / "crmsync_project")
    (tmp_path / ".env").write_text("TIME_ZONE=Europe/Paris\n")
    print_time_zone = "import crmsync_project.settings as s; print(s.TIME_ZONE)"

    def time_zone(**env):
        environment = new_terminal_environment(DEBUG="true", PYTHONPATH=str(tmp_path), **env)
        environment.pop("PYTEST_VERSION", None)
        environment.update(env)
        result = subprocess.run(
            [sys.executable, "-c", print_time_zone], cwd=tmp_path, env=environment, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert time_zone() == "Europe/Paris"  # a command in the project folder reads it
    assert time_zone(PYTEST_VERSION="9.0") == "UTC"  # a test run does not
