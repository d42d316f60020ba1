"""The CRM's ids of asynchronous bulk imports, kept on the rows they carry.

A backend that sends a batch as an asynchronous import (Brevo's /contacts/import)
is lent a ledger for the batch in flight, as `backend.import_ledger`: `known`
maps each row whose import a worker started (and then died) to that import's id,
so the backend follows it instead of importing again; `record(process_id, keys)`
writes a new id on the rows the moment the CRM gives it, fenced by the batch's
claim token. The batch's record clears the ids (engine._write_claimed).
"""

from contextlib import contextmanager

from contacts.models import ContactSync


class ImportLedger:
    def __init__(self, batch):
        self.token = batch.token
        self.known = {row.pk: row.crm_process_id for row in batch.rows if row.crm_process_id}

    def record(self, process_id, keys):
        """Write `process_id` on the rows `keys` still held by this batch, at once
        (no transaction is open during a push); return how many took it."""
        return ContactSync.objects.filter(pk__in=list(keys)).held_by(self.token).update(crm_process_id=str(process_id))


@contextmanager
def lend_import_ledger(backend, batch):
    """`backend.import_ledger` for the batch while it is pushed and recorded."""
    backend.import_ledger = ImportLedger(batch)
    try:
        yield backend.import_ledger
    finally:
        backend.import_ledger = None
