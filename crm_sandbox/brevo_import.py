"""Brevo's asynchronous contact import and its processes (docs/crm-api.md section 1,
"Bulk import"), for the Brevo emulator.

POST /v3/contacts/import answers 202 {processId} at once; the process is queued,
then in_process, and completed after import_delay_seconds plus
import_delay_per_1000_rows for each 1,000 rows (sandbox settings). Unknown
attributes are ignored; rows Brevo would refuse are left out and listed in report
files (CSV, ";"), whose URLs the completed process gives under info.import, as
Brevo's storage serves them: without the api-key.
"""

import csv
import io
import threading
from datetime import UTC, datetime

from .base import json_response, route, text_response

MAX_IMPORT_BYTES = 10 * 1024 * 1024
REPORT_NAMES = (
    "invalid_emails",
    "duplicate_contact_id",
    "duplicate_ext_id",
    "duplicate_email_id",
    "duplicate_phone_id",
    "duplicate_whatsapp_id",
    "duplicate_landline_number_id",
)
IMPORT_SETTINGS = {"import_delay_seconds": 2.0, "import_delay_per_1000_rows": 1.0}


def now():
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def error(status, code, message):
    return json_response(status, {"code": code, "message": message})


class BrevoImports:
    """Mixed into BrevoEmulator: its import routes, processes and report files. It
    uses the emulator's lock, records and checks (_check_lists, valid_email, ...)."""

    @route("POST", r"/v3/contacts/import")
    def import_contacts(self, request):
        if len(request.body) > MAX_IMPORT_BYTES:
            return error(400, "out_of_range", "The request body exceeds the maximum size of 10MB")
        body = request.json_object()
        rows, problem = import_rows(body)
        if problem:
            return problem
        with self.lock:
            list_ids, problem = self._import_lists(body)
            if problem:
                return problem
            process_id = self._new_process(request.header("host"))
            settings, generation = self.settings, self.generation
            delay = (
                float(settings["import_delay_seconds"])
                + float(settings["import_delay_per_1000_rows"]) * len(rows) / 1000
            )
        options = {**body, "listIds": list_ids}
        later(delay / 2, self._set_process_status, process_id, generation, "in_process")
        later(delay, self._run_import, process_id, generation, rows, options)
        return json_response(202, {"processId": process_id})

    @route("GET", r"/v3/processes/(\d+)")
    def process(self, request, process_id):
        with self.lock:
            process = self.processes.get(int(process_id))
            if process is None:
                return error(404, "document_not_found", "Process does not exist")
            return json_response(200, {key: value for key, value in process.items() if not key.startswith("_")})

    @route("GET", r"/reports/(\d+)/(\w+)\.csv")
    def report(self, request, process_id, name):
        with self.lock:
            process = self.processes.get(int(process_id))
            rows = (process or {}).get("_reports", {}).get(name)
        if rows is None:
            return text_response(404, "NoSuchKey")
        out = io.StringIO()
        writer = csv.writer(out, delimiter=";", lineterminator="\n")
        writer.writerow(["EMAIL", "ERROR"])
        writer.writerows(rows)
        return text_response(200, out.getvalue(), {"Content-Type": "text/csv; charset=utf-8"})

    # Processes

    def _new_process(self, host):
        process_id = self.next_process_id
        self.next_process_id += 1
        self.processes[process_id] = {
            "id": process_id,
            "name": "IMPORTUSER",
            "status": "queued",
            "created_at": now(),
            "_host": host,
        }
        return process_id

    def _set_process_status(self, process_id, generation, status):
        with self.lock:
            if generation == self.generation and self.processes[process_id]["status"] != "completed":
                self.processes[process_id]["status"] = status

    def _run_import(self, process_id, generation, rows, options):
        with self.lock:
            if generation != self.generation:
                return
            refused = {}
            for row in rows:
                problem = self._import_row(row, options)
                if problem:
                    name, email, message = problem
                    refused.setdefault(name, []).append((email, message))
            process = self.processes[process_id]
            base = "http://%s/brevo/reports/%d/" % (process.pop("_host") or "127.0.0.1", process_id)
            reports = {name: base + name + ".csv" if name in refused else None for name in REPORT_NAMES}
            process["info"] = {"import": reports}
            process.update(status="completed", completed_at=now(), _reports=refused)

    def _import_lists(self, body):
        """(list ids every imported contact joins, None) or (None, the error)."""
        if body.get("newList"):
            new_list = body["newList"]
            if not isinstance(new_list, dict) or not new_list.get("listName"):
                return None, error(400, "missing_parameter", "newList.listName is missing")
            return [self._new_list(str(new_list["listName"]), new_list.get("folderId"))["id"]], None
        if not body.get("listIds"):
            return None, error(400, "missing_parameter", "listIds or newList is missing")
        problem = self._check_lists(body["listIds"])
        return (None, problem) if problem else (list(body["listIds"]), None)

    def _import_row(self, row, options):
        """Apply one row; None, or (report name, email, why) for a row left out."""
        email = str(row.get("email") or "").strip().lower()
        raw = {str(k).upper(): v for k, v in (row.get("attributes") or {}).items()}
        if not options.get("emptyContactsAttributes"):
            raw = {k: v for k, v in raw.items() if v not in (None, "")}
        # Import ignores unknown attributes, whatever unknown_attributes says.
        known = {k: v for k, v in raw.items() if k in self.attributes or k in self.IDENTIFIER_ATTRIBUTES}
        if "SMS" in known and known["SMS"] not in (None, ""):
            known["SMS"] = self.normalised_sms(known["SMS"])
            if known["SMS"] is None:
                return None  # left out without a report naming it: the single path says why
        email = email or str(known.pop("EMAIL", "") or "").strip().lower()
        known.pop("EMAIL", None)
        if (email and not self.valid_email(email)) or not (email or known.get("SMS")):
            return "invalid_emails", email, "Invalid email address"
        existing, _ = self._existing(email, known)
        clash = self._identifier_clash(known, existing)
        if clash:
            name = "duplicate_phone_id" if clash == "SMS" else "duplicate_ext_id"
            return name, email, "%s is already associated with another Contact" % clash
        self._apply_import(existing, email, known, options)
        return None

    def _apply_import(self, existing, email, attributes, options):
        flags = {"listIds": options["listIds"]}
        for flag, option in (("emailBlacklisted", "emailBlacklist"), ("smsBlacklisted", "smsBlacklist")):
            if options.get(option):
                flags[flag] = True
        if existing is None:
            self._new_contact(email, attributes, flags)
        elif options.get("updateExistingContacts", True):
            self._apply(existing, attributes, flags)


def import_rows(body):
    """([{"email", "attributes"}], None) or (None, the error) from jsonBody or fileBody."""
    sources = [key for key in ("fileUrl", "fileBody", "jsonBody") if body.get(key)]
    if len(sources) != 1:
        return None, error(400, "missing_parameter", "Provide exactly one of fileUrl, fileBody or jsonBody")
    if sources == ["fileUrl"]:
        # The sandbox has no network to fetch from; fileBody or jsonBody carry the same rows.
        message = "fileUrl cannot be fetched by the sandbox; send fileBody or jsonBody"
        return None, error(400, "invalid_parameter", message)
    if sources == ["fileBody"]:
        return csv_rows(str(body["fileBody"])), None
    rows = body["jsonBody"]
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        return None, error(400, "invalid_parameter", "jsonBody should be an array of objects")
    return rows, None


def csv_rows(text):
    """fileBody rows: CSV with ";" between fields and a header line naming the attributes."""
    reader = csv.DictReader(io.StringIO(text), delimiter=";")
    rows = []
    for record in reader:
        values = {str(k).strip().upper(): (v or "").strip() for k, v in record.items() if k}
        rows.append({"email": values.pop("EMAIL", ""), "attributes": values})
    return rows


def later(seconds, function, *args):
    timer = threading.Timer(seconds, function, args)
    timer.daemon = True
    timer.start()
