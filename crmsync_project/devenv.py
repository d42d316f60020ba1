"""The `.env` file: which one settings read, and the development one `make run` leaves.

`make run` (bin/run-dev) writes a development `.env` into the project folder when there
is none, so that every manage.py command run from another terminal there sees the
settings the server runs with. A `.env` that already exists is never rewritten: only
the sandbox URL of a file `make run` wrote itself follows `SANDBOX_PORT`. Standard
library only: bin/run-dev runs it before anything else is known to work.

    python -m crmsync_project.devenv PATH [--sandbox-port N]

prints, for bin/run-dev to `eval`, the settings this run must export (those a user's
own `.env` lacks) and `SANDBOX_PORT=N` when a local sandbox must be started (empty
when the sandbox URL in effect is empty or points elsewhere).
"""

import argparse
import os
import re
import shlex
import sys
from pathlib import Path

GENERATED_MARK = "# Written by `make run` for development"
DEFAULT_SANDBOX_PORT = 8025
SANDBOX_URL = "CRMSYNC_SANDBOX_URL"
LOCAL_URL = re.compile(r"^http://(?:127\.0\.0\.1|localhost):(\d+)/?$")
CRMS = ("BREVO", "HUBSPOT", "MAUTIC", "N8N")
# Only meaningful against the sandbox: a one-minute tick for the demo, and an erasure
# key so the demo can erase contacts. Never exported when the sandbox is off.
SANDBOX_ONLY = {
    "CRMSYNC_SUPPRESSION_KEY": "development-suppression-key-not-for-production",
    **{f"{crm}_SYNC_SCHEDULER_INTERVAL_MINUTES": "1" for crm in CRMS},
}


def env_file(environ, base_dir):
    """The file settings read: `ENV_FILE` when set, else `.env` in the project folder.

    Under pytest (which sets PYTEST_VERSION for the whole run, before any plugin or
    settings load) no file is read unless ENV_FILE names one: a developer's `.env`, such
    as the one `make run` leaves, must not change what `make test` and CI see.
    """
    if "ENV_FILE" in environ:
        return environ["ENV_FILE"]
    if "PYTEST_VERSION" in environ:
        return os.devnull
    return Path(base_dir) / ".env"


def development_settings(sandbox_port):
    return {"DEBUG": "true", SANDBOX_URL: f"http://127.0.0.1:{sandbox_port}", **SANDBOX_ONLY}


def development_env_text(sandbox_port):
    lines = [
        GENERATED_MARK + ": the settings the server runs with, for every",
        "# manage.py command run from this folder. Git-ignored; `make test`, CI and the",
        "# Docker build never read it. Edit freely: `make run` only writes it when it is",
        "# missing, and afterwards only moves the sandbox URL to SANDBOX_PORT.",
        "# To use real CRMs, empty CRMSYNC_SANDBOX_URL and add their keys (see README).",
    ]
    lines += ["%s=%s" % item for item in development_settings(sandbox_port).items()]
    return "\n".join(lines) + "\n"


def read_values(path):
    """KEY=VALUE lines of a `.env`, as django-environ reads them (quotes stripped)."""
    values = {}
    for line in Path(path).read_text().splitlines():
        match = re.match(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$", line)
        if match:
            values[match[1]] = re.sub(r"^(['\"])(.*)\1$", r"\2", match[2])
    return values


def write_development_env(path, sandbox_port):
    """Write the development `.env` if missing; return what was done, for the terminal."""
    path = Path(path)
    if not path.exists():
        path.write_text(development_env_text(sandbox_port))
        return f"Wrote {path.name} with development settings (sandbox on port {sandbox_port})."
    text = path.read_text()
    url = read_values(path).get(SANDBOX_URL, "")
    local = LOCAL_URL.match(url)
    if text.startswith(GENERATED_MARK) and local and int(local[1]) != sandbox_port:
        new_url = f"http://127.0.0.1:{sandbox_port}"
        path.write_text(re.sub(rf"(?m)^{SANDBOX_URL}=.*$", f"{SANDBOX_URL}={new_url}", text))
        return f"{path.name}: the sandbox URL is now {new_url}."
    missing = [key for key in development_settings(sandbox_port) if key not in read_values(path)]
    if missing and not text.startswith(GENERATED_MARK):
        return (
            f"{path.name} is yours and left as it is. It lacks {', '.join(missing)}: this run uses "
            "development values for them, commands in another terminal will not."
        )
    return ""


def run_exports(environ, path, sandbox_port):
    """What bin/run-dev exports for this run: the environment wins, then the `.env`."""
    in_file = read_values(path) if Path(path).exists() else {}

    def in_effect(key):
        return environ[key] if key in environ else in_file.get(key)

    exports = {}
    url = in_effect(SANDBOX_URL)
    if url is None:
        url = exports[SANDBOX_URL] = f"http://127.0.0.1:{sandbox_port}"
    local = LOCAL_URL.match(url)
    wanted = {"DEBUG": "true", **(SANDBOX_ONLY if url else {})}
    exports.update({key: value for key, value in wanted.items() if in_effect(key) is None})
    exports["SANDBOX_PORT"] = local[1] if local else ""
    return exports


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--sandbox-port", type=int, default=DEFAULT_SANDBOX_PORT)
    options = parser.parse_args(argv)
    note = write_development_env(options.path, options.sandbox_port)
    if note:
        print(note, file=sys.stderr)
    for key, value in run_exports(os.environ, options.path, options.sandbox_port).items():
        print(f"export {key}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
