import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from contacts.models import ContactSync, ProcessingStatus, SyncAttempt, SyncStatus
from integrations.backends.base import Outcome

from .doubles import ScriptedBackend

pytestmark = pytest.mark.django_db


def sync_crm(*args):
    out, err = StringIO(), StringIO()
    call_command("sync_crm", *args, stdout=out, stderr=err)
    return out.getvalue()


def summary_row(output, crm):
    line = next(line for line in output.splitlines() if line.startswith(crm + " "))
    return line.split()


def test_syncs_every_configured_crm_and_prints_a_summary_table(queued):
    queued(120)
    out = sync_crm()
    assert "CRM" in out and "retry scheduled" in out and "contacts/s" in out
    _crm, claimed, accepted, retry, failed = summary_row(out, "scripted")[:5]
    assert (claimed, accepted, retry, failed) == ("120", "120", "0", "0")
    assert "scripted: 50 claimed" not in out, "off a terminal the engine logs batches; the summary says it once"
    assert ContactSync.objects.filter(processing_status=ProcessingStatus.COMPLETE).count() == 120


def test_limit_and_batch_size(queued):
    queued(30)
    out = sync_crm("--crm", "scripted", "--limit", "12", "--batch-size", "5")
    assert summary_row(out, "scripted")[1:3] == ["12", "12"]
    assert ContactSync.objects.filter(processing_status=ProcessingStatus.QUEUED).count() == 18


@pytest.mark.django_db(transaction=True)
def test_workers_share_the_queue(on_postgres, queued):
    queued(90)
    out = sync_crm("--crm", "scripted", "--workers", "3", "--batch-size", "10")
    assert summary_row(out, "scripted")[1:3] == ["90", "90"]
    assert SyncAttempt.objects.count() == 90


def test_dry_run_prints_payloads_and_changes_nothing(queued):
    queued(3)
    out = sync_crm("--crm", "scripted", "--dry-run")
    payloads = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [p["payload"]["email"] for p in payloads] == ["c0@example.com", "c1@example.com", "c2@example.com"]
    assert "Dry run: 3 Scripted CRM payloads shown, nothing sent or changed." in out
    assert set(ContactSync.objects.values_list("processing_status", "attempts")) == {(ProcessingStatus.QUEUED, 0)}
    assert not SyncAttempt.objects.exists()


def test_until_empty_waits_out_retries(queued, settings, monkeypatch):
    settings.SCRIPTED_SYNC_RETRY_DELAY_MINUTES = 0
    queued(10)
    seen = set()

    def fail_first_time(self, items):
        outcomes = []
        for item in items:
            outcomes.append(Outcome.accepted(item) if item.key in seen else Outcome.retry(item, "503 from CRM"))
            seen.add(item.key)
        return outcomes

    monkeypatch.setattr(ScriptedBackend, "push", fail_first_time)
    out = sync_crm("--crm", "scripted", "--until-empty")
    assert summary_row(out, "scripted")[1:4] == ["20", "10", "10"]
    assert set(ContactSync.objects.values_list("sync_status", "attempts")) == {(SyncStatus.COMPLETE, 2)}


def test_until_empty_sleeps_through_a_pause_instead_of_spinning(queued, monkeypatch):
    from integrations import engine
    from integrations.exceptions import RateLimited

    queued(6)
    limited_once = []

    def limited_the_first_time(self, items):
        if not limited_once:
            limited_once.append(True)
            raise RateLimited("Scripted CRM: too many requests", retry_after=1)
        return self.accept_all(items)

    runs = []
    real_run = engine.SyncEngine.run

    def counted_run(self, **options):
        runs.append(1)
        return real_run(self, **options)

    monkeypatch.setattr(ScriptedBackend, "push", limited_the_first_time)
    monkeypatch.setattr(engine.SyncEngine, "run", counted_run)

    sync_crm("--crm", "scripted", "--batch-size", "2", "--until-empty")

    # Four rows stayed due through the pause: the loop waited for its end, then
    # one run synced all six (it does not come back for rows nobody queued).
    assert len(runs) <= 3
    assert ContactSync.objects.filter(sync_status=SyncStatus.COMPLETE).count() == 6


def test_reports_a_paused_crm(queued, monkeypatch):
    from integrations.exceptions import RateLimited

    queued(5)

    def limited(self, items):
        raise RateLimited("Scripted CRM: too many requests", retry_after=600)

    monkeypatch.setattr(ScriptedBackend, "push", limited)
    out = sync_crm("--crm", "scripted")
    assert "scripted is paused until" in out and "too many requests" in out
    assert summary_row(out, "scripted")[1:6] == ["5", "0", "0", "0", "5"], "the released rows are in the summary"


def test_unknown_crm_exits_non_zero(scripted_crm):
    with pytest.raises(CommandError, match="Unknown CRM 'salesforce'") as excinfo:
        sync_crm("--crm", "salesforce")
    assert excinfo.value.returncode == 2


def test_unconfigured_crm_names_the_missing_setting(scripted_crm, settings):
    del settings.SCRIPTED_API_KEY
    with pytest.raises(CommandError, match="Scripted CRM is not configured: set SCRIPTED_API_KEY") as excinfo:
        sync_crm("--crm", "scripted")
    assert excinfo.value.returncode == 3


def test_no_configured_crm_at_all_is_an_error(db):
    with pytest.raises(CommandError, match="No CRM is configured"):
        sync_crm()


def test_invalid_numbers_stop_the_command_with_the_setting_named(scripted_crm, settings):
    settings.SCRIPTED_SYNC_MAX_RETRIES = "many"
    with pytest.raises(CommandError, match="SCRIPTED_SYNC_MAX_RETRIES must be a whole number"):
        sync_crm("--crm", "scripted")
