"""Brevo in bulk: many new contacts in one POST /contacts/import.

The import is asynchronous and answers with a processId only (docs/crm-api.md,
section 1, "Bulk import"). So each import's id is handed to the engine at once
(`backend.import_ledger`, which writes it on the batch's rows), the process is
followed with sparse polls, and each contact's outcome is then established: the
process's report files name the rows Brevo refused, one read of GET /contacts per
1,000 contacts (modifiedSince the import) gives the ids of the others, and any
contact still without an outcome goes through the single-contact path.
"""

import csv
import io
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from ..exceptions import RateLimited, RetryableError
from .base import Outcome
from .http import json_or_empty

logger = logging.getLogger(__name__)

IMPORT_PATH = "/contacts/import"
# GET /contacts takes at most 1,000 per page (brevo-python, ContactsApi.get_contacts).
READ_BACK_PAGE = 1000
RUNNING, COMPLETED = ("queued", "in_process", "processing"), "completed"
# Polls of /processes wait longer each time, up to this; they count against the
# endpoint's own hourly cap (100 on the General tier), not only the 10/s.
POLL_GROWTH, MAX_POLL_SECONDS = 1.5, 60.0
# When the hourly cap's headers say fewer polls than this are left, the rest are
# spread over the time until it resets.
POLL_RESERVE = 10
# What each report of a completed import (GetProcess info.import) holds, in words.
REPORTS = {
    "invalid_emails": "an invalid email address",
    "duplicate_email_id": "an email that appears twice",
    "duplicate_contact_id": "a contact id that appears twice",
    "duplicate_ext_id": "an ext_id another Brevo contact has",
    "duplicate_phone_id": "an SMS number another Brevo contact has",
    "duplicate_whatsapp_id": "a WhatsApp number another Brevo contact has",
    "duplicate_landline_number_id": "a landline number another Brevo contact has",
}


class ImportLost(Exception):
    """This worker lost the batch while following its import: stop, send nothing more."""


@dataclass
class Process:
    """One import in flight: Brevo's id, its contacts, and since when to read them back."""

    process_id: str
    items: list
    since: datetime = None
    outcomes: list = field(default_factory=list)
    # Contacts whose outcome the import did not establish: the single path takes them.
    unsettled: list = field(default_factory=list)


class BrevoImport:
    """The bulk path of one BrevoBackend push (see BrevoBackend.push)."""

    def __init__(self, backend):
        self.backend = backend
        self.ledger = getattr(backend, "import_ledger", None)

    def push(self, items):
        """One Outcome per item: imports for what they suit, the single path for the rest."""
        known = self.ledger.known if self.ledger else {}
        followed = follow_known(items, known)
        following = {item.key for process in followed for item in process.items}
        fresh = [item for item in items if item.key not in following]
        importable = [item for item in fresh if suits_import(item)]
        if not self.backend.import_batch_size() or len(importable) < self.backend.import_threshold():
            importable = []
        chosen = {item.key for item in importable}
        single = [item for item in fresh if item.key not in chosen]
        outcomes = []
        processes = list(followed)
        for chunk in self.chunks(importable):
            started, answered, refused = self.start(chunk)
            processes += [started] if started else []
            outcomes += answered
            single += refused
        try:
            for process in processes:
                self.follow(process)
        except ImportLost as lost:
            return outcomes + lost_outcomes(items, outcomes, str(lost))
        for process in processes:
            outcomes += process.outcomes
            single += process.unsettled
        single_keys = {item.key for item in single}
        return outcomes + (self.backend.push_one_by_one([item for item in items if item.key in single_keys]))

    # Starting imports

    def chunks(self, items):
        """`items` in runs whose import body stays within the size cap."""
        cap, chunks, size = self.backend.import_max_bytes() - len(self.body([])), [], 0
        for item in items:
            row = len(json.dumps(import_row(item), separators=(",", ":")).encode()) + 1
            if not chunks or size + row > cap:
                chunks.append([])
                size = 0
            chunks[-1].append(item)
            size += row
        return chunks

    def body(self, items):
        return json.dumps(
            {
                "jsonBody": [import_row(item) for item in items],
                "listIds": self.backend.list_ids(),
                "updateExistingContacts": True,
                "emptyContactsAttributes": False,
                "disableNotification": True,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()

    def start(self, items):
        """(process, outcomes, refused): the Process once Brevo took the import and
        its id is recorded; else the contacts' outcomes (waiting, retrying) or, when
        Brevo refused the import itself, the contacts, for the single path to give
        each Brevo's own answer. An answer about the account raises (CRMUnavailable)."""
        self.backend.pacer.wait()
        try:
            response = self.backend.request(
                "POST", IMPORT_PATH, data=self.body(items), headers={"Content-Type": "application/json"}
            )
            rejection = self.backend.classify(response)
        except RateLimited as exc:
            return None, [Outcome.wait(item, exc.message, retry_after=exc.retry_after) for item in items], []
        except RetryableError as exc:
            return None, [Outcome.retry(item, str(exc), retry_after=exc.retry_after) for item in items], []
        process_id = json_or_empty(response).get("processId")
        if rejection is None and process_id:
            process_id = str(process_id)
            # Before anything else: a worker that takes these rows after this one
            # died follows this import instead of sending it again.
            if self.ledger is not None:
                self.ledger.record(process_id, [item.key for item in items])
            logger.info("crm=brevo import %s started with %d contacts", process_id, len(items))
            return Process(process_id, items, since=answer_time(response)), [], []
        if isinstance(rejection, RetryableError):
            retries = [Outcome.retry(item, rejection.message, http_status=rejection.status_code) for item in items]
            return None, retries, []
        logger.warning("crm=brevo refused an import (HTTP %d); its contacts go one by one", response.status_code)
        return None, [], list(items)

    # Following a process

    def follow(self, process):
        """Poll until the import ends, then settle each of its contacts."""
        answer = self.wait_for_end(process)
        if answer is None or answer.get("status") != COMPLETED:
            process.unsettled = list(process.items)
            return
        if process.since is None:
            process.since = parse_time(answer.get("created_at"))
        refused = self.refused_rows(answer)
        found = self.read_back(process) if process.since else {}
        for item in process.items:
            email = item.payload["email"].lower()
            if email in refused:
                process.outcomes.append(Outcome.permanent(item, refused[email] % process.process_id))
            elif email in found:
                note = self.backend.phone_left_out(item)
                process.outcomes.append(Outcome.accepted(item, found[email], http_status=202, message=note))
            else:
                process.unsettled.append(item)

    def wait_for_end(self, process):
        """The process's last answer once it is no longer running; None when Brevo
        does not know it or it ran longer than BREVO_IMPORT_MAX_WAIT_SECONDS."""
        give_up_at = time.monotonic() + self.backend.import_max_wait_seconds()
        delay = self.backend.import_poll_seconds()
        while time.monotonic() < give_up_at:
            self.pause(delay)
            response = self.get("/processes/%s" % process.process_id)
            if response is None or response.status_code == 429:
                delay = hourly_cap_wait(response) if response is not None else delay
                continue
            if response.status_code == 404:
                return None
            answer = json_or_empty(response)
            if answer.get("status") not in RUNNING:
                return answer
            delay = next_poll_delay(delay, response)
        logger.warning("crm=brevo import %s still running after the longest wait", process.process_id)
        return None

    def pause(self, seconds):
        """Sleep, unless the worker loses the batch meanwhile (the lease keeper says so)."""
        if self.backend.stop_sending.wait(seconds):
            raise ImportLost("Brevo's import was left to another worker: this one lost its hold on the batch.")

    def get(self, path, **kwargs):
        """A paced GET; None when it failed on the way (it is tried again)."""
        self.backend.pacer.wait()
        try:
            return self.backend.request("GET", path, **kwargs)
        except RetryableError:
            if self.backend.stop_sending.is_set():
                raise ImportLost("Brevo's import was left to another worker.") from None
            return None

    # Outcomes

    def refused_rows(self, answer):
        """{email: message with a %s for the process id} from the report files
        a completed import names (info.import: URLs, or counts without a file)."""
        reports = (answer.get("info") or {}).get("import") or {}
        refused = {}
        for name, link in reports.items():
            if isinstance(link, str) and link.startswith(("http://", "https://")):
                refused.update(self.report_rows(name, link))
        return refused

    def report_rows(self, name, link):
        try:
            # A report is a file on Brevo's storage, not the API: no api-key goes with it.
            response = self.backend.request("GET", link, headers={"api-key": None, "Accept": "text/csv, */*"})
        except RetryableError:
            return {}
        if response.status_code != 200:
            return {}
        return report_messages(name, response.text)

    def read_back(self, process):
        """{email: Brevo id} of the process's contacts, read page by page from the
        contacts modified since the import began."""
        wanted = {item.payload["email"].lower() for item in process.items}
        found, offset, count = {}, 0, None
        while count is None or offset < count:
            since = brevo_time(process.since)
            params = {"limit": READ_BACK_PAGE, "offset": offset, "sort": "asc", "modifiedSince": since}
            response = self.get("/contacts", params=params)
            if response is not None and response.status_code == 429:
                self.pause(hourly_cap_wait(response))
                continue
            if response is None or response.status_code != 200:
                break  # the contacts not found go one by one
            page = json_or_empty(response)
            contacts = page.get("contacts") or []
            for contact in contacts:
                email = str(contact.get("email") or "").lower()
                if email in wanted:
                    found[email] = str(contact.get("id", ""))
            offset, count = offset + len(contacts), int(page.get("count") or 0)
            if len(contacts) < READ_BACK_PAGE or len(found) == len(wanted):
                break
        return found


def follow_known(items, known):
    """A Process for each import a dead worker started, with its contacts here."""
    by_process = {}
    for item in items:
        # A row turned into a removal meanwhile is removed, not imported.
        if item.key in known and not item.is_removal:
            by_process.setdefault(known[item.key], []).append(item)
    return [Process(process_id, grouped) for process_id, grouped in by_process.items()]


def suits_import(item):
    """Import creates or updates by email. A contact Brevo already gave an id is
    updated by that id (PUT): an import could create anew a contact deleted in
    Brevo, and would not follow an email change."""
    return not item.is_removal and not item.external_id and not item.previous_email and bool(item.payload)


def import_row(item):
    """A jsonBody row: the same email and attributes (mapping, SMS form) as the single path."""
    return {"email": item.payload["email"], "attributes": item.payload.get("attributes") or {}}


def lost_outcomes(items, outcomes, message):
    """Retries for every contact without an outcome yet: they are not recorded
    (the lease is another worker's), and say why if they were."""
    done = {outcome.key for outcome in outcomes}
    return [Outcome.retry(item, message) for item in items if item.key not in done]


def report_messages(name, text):
    """{email: message} from one report file: CSV with a header line, ";" or ","
    between fields; the email column, and the reason when the file gives one."""
    sample = text[:2000]
    reader = csv.reader(io.StringIO(text), delimiter=";" if sample.count(";") >= sample.count(",") else ",")
    header = [column.strip().lower() for column in next(reader, [])]
    email_at = next((i for i, column in enumerate(header) if "email" in column), 0)
    reason_at = next((i for i, column in enumerate(header) if column in ("error", "reason", "message")), None)
    what = REPORTS.get(name, name.replace("_", " "))
    messages = {}
    for row in reader:
        if len(row) <= email_at or "@" not in row[email_at]:
            continue
        reason = row[reason_at].strip() if reason_at is not None and len(row) > reason_at else ""
        detail = ": %s" % reason if reason else ""
        messages[row[email_at].strip().lower()] = "Brevo's import %%s left it out, as %s (its %s report)%s." % (
            what,
            name,
            detail,
        )
    return messages


def next_poll_delay(delay, response):
    """Each poll waits longer than the last; when the hourly cap's headers say
    few polls are left, the rest are spread until it resets."""
    longer = min(delay * POLL_GROWTH, MAX_POLL_SECONDS)
    try:
        remaining = int(response.headers.get("x-sib-ratelimit-remaining", ""))
        reset = float(response.headers.get("x-sib-ratelimit-reset", ""))
    except ValueError:
        return longer
    if remaining >= POLL_RESERVE:
        return longer
    return max(longer, reset / max(remaining, 1))


def hourly_cap_wait(response):
    """Seconds a 429 on a poll asks to wait (x-sib-ratelimit-reset), at least a poll's pace."""
    try:
        return max(MAX_POLL_SECONDS / 10, float(response.headers.get("x-sib-ratelimit-reset", "")))
    except ValueError:
        return MAX_POLL_SECONDS


def answer_time(response):
    """When Brevo answered (its Date header, to the second, so one second earlier),
    else now: the contacts it imports are modified after it."""
    try:
        return parsedate_to_datetime(response.headers["Date"]) - timedelta(seconds=1)
    except (KeyError, TypeError, ValueError, IndexError):
        return datetime.now(UTC) - timedelta(seconds=60)


def parse_time(value):
    try:
        moment = datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)) - timedelta(seconds=1)


def brevo_time(moment):
    """A UTC time as GET /contacts takes modifiedSince: YYYY-MM-DDTHH:mm:ss.SSSZ."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)
