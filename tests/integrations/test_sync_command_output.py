"""What `sync_crm` writes: logs above the progress bar on a terminal, the summary once
off a terminal, a pause said once and readably, and the exit status of a paused CRM."""

import logging
import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from contacts import selection
from contacts.models import Contact
from crmsync_project.logging import ProgressAwareStreamHandler
from integrations.exceptions import CRMUnavailable, RateLimited
from integrations.management.commands import sync_crm as sync_crm_module

from .doubles import ScriptedBackend


class FakeTerminal(StringIO):
    def isatty(self):
        return True


@pytest.fixture
def log_to():
    """Point the project's log handler (settings.LOGGING) at a stream of the test's."""
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, ProgressAwareStreamHandler))
    original = handler.stream
    yield handler.setStream
    handler.setStream(original)


def run(*args, stdout=None):
    command = sync_crm_module.Command()
    out = stdout or StringIO()
    call_command(command, *args, stdout=out, stderr=StringIO())
    return command, out.getvalue()


def screen(text):
    """The lines a terminal shows for `text`: \\r goes back to the line's start and
    ESC[K erases the rest of the line."""
    lines, line, column, i = [], [], 0, 0
    while i < len(text):
        if text.startswith("\x1b[K", i):
            del line[column:]
            i += 3
            continue
        char = text[i]
        if char == "\r":
            column = 0
        elif char == "\n":
            lines.append("".join(line))
            line, column = [], 0
        else:
            line[column : column + 1] = [char]
            column += 1
        i += 1
    return lines + (["".join(line)] if line else [])


@pytest.mark.django_db
def test_on_a_terminal_log_lines_go_above_the_progress_bar(queued, log_to):
    queued(30)
    terminal = FakeTerminal()
    log_to(terminal)
    run("--crm", "scripted", "--batch-size", "10", stdout=terminal)

    lines = screen(terminal.getvalue())
    log_lines = [line for line in lines if "INFO integrations.engine crm=scripted" in line]
    assert len(log_lines) == 3
    assert all(line.startswith("20") and "[" not in line.split(" INFO ")[0] for line in log_lines), lines
    assert not any("scripted [" in line for line in log_lines), "a log line glued onto the bar"
    bars = [line for line in lines if line.startswith("scripted [")]
    assert bars == ["scripted [%s] 30/30 accepted 30 retry 0 failed 0" % ("#" * 30)]


@pytest.mark.django_db
def test_off_a_terminal_each_summary_line_is_written_once(queued, log_to):
    queued(120)
    out = StringIO()
    log_to(out)  # the logs and the command's output in one stream, as in a cron mail
    run(stdout=out)
    lines = out.getvalue().splitlines()
    assert len([line for line in lines if line.startswith("scripted")]) == 1
    assert len([line for line in lines if "crm=scripted claimed=" in line]) == 3  # the engine, one per batch
    assert len([line for line in lines if line.startswith("CRM ")]) == 1


def raise_in_push(exc):
    def push(self, items):
        raise exc

    return push


@pytest.mark.django_db
@pytest.mark.parametrize(
    "exc",
    [
        RateLimited("Scripted CRM: too many requests", retry_after=600),
        CRMUnavailable("Scripted CRM: the key was revoked", pause_seconds=600),
    ],
)
def test_a_pause_is_said_once_readably_with_its_released_rows_and_exit_status_4(queued, log_to, monkeypatch, exc):
    queued(5)
    monkeypatch.setattr(ScriptedBackend, "push", raise_in_push(exc))
    out = StringIO()
    log_to(out)
    command, _ = run("--crm", "scripted", stdout=out)

    said = [line for line in out.getvalue().splitlines() if str(exc) in line or "paus" in line]
    assert len(said) == 1, said
    assert re.search(r"scripted is paused until \d{4}-\d\d-\d\d \d\d:\d\d UTC: ", said[0]), said
    assert "5 released contacts wait in the queue" in said[0]
    row = next(line for line in out.getvalue().splitlines() if line.startswith("scripted "))
    assert row.split()[1:6] == ["5", "0", "0", "0", "5"]
    assert command.exit_status == 4


@pytest.mark.django_db
def test_one_paused_crm_makes_the_exit_status_4_whatever_the_others_did(queued, settings, monkeypatch):
    settings.OTHER_TOKEN = "other-token"
    contacts = queued(4)
    selection.select(contacts, ["other"])

    def pause_only_scripted(self, items):
        if self.name == "scripted":
            raise RateLimited("Scripted CRM: too many requests", retry_after=600)
        return self.accept_all(items)

    monkeypatch.setattr(ScriptedBackend, "push", pause_only_scripted)
    command, out = run()
    assert command.exit_status == 4
    assert "other is paused" not in out and "scripted is paused" in out

    monkeypatch.setattr(ScriptedBackend, "push", lambda self, items: self.accept_all(items))
    Contact.objects.all().delete()
    command, _ = run("--crm", "other")
    assert command.exit_status == 0


@pytest.mark.django_db
def test_a_staff_pause_is_said_once(queued, log_to):
    from integrations.models import CRMState

    queued(3)
    CRMState.objects.pause_by_staff("scripted", "alice")
    out = StringIO()
    log_to(out)
    command, _ = run("--crm", "scripted", stdout=out)
    assert len([line for line in out.getvalue().splitlines() if "paus" in line.lower()]) == 1
    assert command.exit_status == 4


def test_the_process_exits_with_the_status(monkeypatch):
    command = sync_crm_module.Command()

    def paused_run(*args, **options):
        command.exit_status = 4

    monkeypatch.setattr(command, "execute", paused_run)
    with pytest.raises(SystemExit) as exited:
        command.run_from_argv(["manage.py", "sync_crm"])
    assert exited.value.code == 4
    assert not connection.in_atomic_block


def test_the_help_documents_the_exit_statuses():
    help_text = sync_crm_module.Command().create_parser("manage.py", "sync_crm").format_help()
    assert "4 at least one CRM ended paused" in " ".join(help_text.split())
