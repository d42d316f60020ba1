"""`make run` (bin/run-dev) runs Django's system checks once, not once per process."""

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from django.core.management import get_commands, load_command_class

PROJECT_DIR = Path(__file__).resolve().parent.parent
RUN_DEV = PROJECT_DIR / "bin" / "run-dev"


def manage_invocations():
    """(command name, its arguments) for every `$PY manage.py ...` line of bin/run-dev."""
    for line in RUN_DEV.read_text().splitlines():
        match = re.match(r"^\s*\$PY manage\.py (.*?)(?:\s*&|\s*\|\|.*)?$", line)
        if match:
            name, *args = shlex.split(match[1])
            yield name, args


def runs_system_checks(name, args):
    if name == "check":
        return True
    if "--skip-checks" in args:
        return False
    # migrate runs the checks itself even though its requires_system_checks is empty.
    return name == "migrate" or bool(load_command_class(get_commands()[name], name).requires_system_checks)


def test_run_dev_runs_the_system_checks_once():
    invocations = list(manage_invocations())
    names = [name for name, _ in invocations]
    assert {"check", "crm_sandbox", "crm_setup", "crm_schedules", "runserver", "qcluster"} <= set(names)
    assert [name for name, args in invocations if runs_system_checks(name, args)] == ["check"]
    # ... and it comes before anything starts.
    assert names[0] == "check"


def test_every_command_run_dev_passes_skip_checks_to_accepts_it():
    for name, args in manage_invocations():
        if "--skip-checks" in args:
            parser = load_command_class(get_commands()[name], name).create_parser("manage.py", name)
            assert "--skip-checks" in parser._option_string_actions, name


def test_the_sandbox_command_does_not_repeat_the_sandbox_warning():
    environment = {**os.environ, "DEBUG": "true", "CRMSYNC_SANDBOX_URL": "http://127.0.0.1:8025"}
    checked = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=PROJECT_DIR, env=environment, capture_output=True, text=True
    )
    assert "integrations.W003" in checked.stderr  # the environment is sandbox mode

    process = subprocess.Popen(
        [sys.executable, "manage.py", "crm_sandbox", "--port", "0"],
        cwd=PROJECT_DIR,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().startswith("CRM sandbox listening on")
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert "W003" not in err
