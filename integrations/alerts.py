"""Alerts: staff are told when a CRM needs a person.

By mail to ADMINS (Django's mail_admins, configured by EMAIL_URL) and, when
CRMSYNC_ALERT_WEBHOOK_URL is set, by a Slack-compatible webhook ({"text": ...}).
The cases, each an AlertKind:

- PAUSED: the CRM refused the work for a reason only a person can fix (bad
  credentials, configuration); over once the CRM accepts contacts again.
- BREAKER: the circuit breaker opened; over when it closes.
- ERROR_RATE: more than CRMSYNC_ALERT_ERROR_RATE of the contacts tried on the CRM
  in the last 15 minutes failed (ended in Error), once at least MIN_TRIED were
  tried; judged at the end of each engine run, over when the share is back at or
  below the rate.
- STALE_SCHEDULE: the CRM's sync schedule has stopped running; noticed by /healthz
  in the web process, since a dead scheduler cannot report itself.

One alert per incident, however many workers or web processes notice it: an
incident is an AlertIncident row, at most one open per CRM and kind (a partial
unique index). The process whose INSERT wins sends the alert; the one whose
UPDATE ... WHERE resolved_at IS NULL changes the row sends the recovery notice.
Both are sent after the surrounding transaction commits, so a rolled-back
incident is never announced. Nothing here raises into the engine or /healthz: a
failure is logged, and a failed send is not retried (the incident stays in the
admin for staff to see).

No alert holds contact data or a secret: the texts are counts, times and CRM
names, and a CRM's own words (a pause reason) lose every email address and every
configured secret first.
"""

import functools
import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

import requests
from django.conf import settings
from django.core.mail import mail_admins
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from contacts.erasure import scrub as without_emails
from contacts.models import AttemptOutcome

from .conf import alert_error_rate, alert_webhook_url
from .exceptions import CRMConfigurationError
from .models import AlertIncident, AlertKind, AttemptCount, CRMState
from .registry import verbose_crm_name
from .rollups import SLOT_SECONDS

logger = logging.getLogger(__name__)

# The error rate's window is the rollup's quarter hour (AttemptCount), and fewer
# contacts tried than this say too little to alert on.
WINDOW = timedelta(seconds=SLOT_SECONDS)
MIN_TRIED = 50
# A slow webhook holds the worker that sends (once per incident), never a claim.
WEBHOOK_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class Alert:
    subject: str
    body: str

    @property
    def text(self):
        return "%s\n%s" % (self.subject, self.body)


def webhook_body(alert):
    """The JSON a Slack-compatible incoming webhook takes: its `text` is shown."""
    return {"text": "%s%s" % (settings.EMAIL_SUBJECT_PREFIX, alert.text)}


def _never_raises(function):
    """An alert that cannot be recorded or sent must not stop a sync or /healthz."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            # A database error's text can name hosts and users: the type only.
            detail = str(exc) if isinstance(exc, CRMConfigurationError) else type(exc).__name__
            logger.error("alerts: %s failed (%s)", function.__name__, detail)
            return None

    return wrapper


# Incidents: opened once, resolved once


def open_incident(crm, kind, alert, *, now=None, background=False):
    """Open the CRM's incident of `kind` and send `alert` once the transaction
    commits, unless one is open already. Returns whether this call opened it."""
    try:
        # A savepoint: losing to a concurrent INSERT leaves the caller's transaction usable.
        with transaction.atomic():
            AlertIncident.objects.create(crm=crm, kind=kind, opened_at=now or timezone.now(), summary=alert.text)
    except IntegrityError:
        return False  # open already: whoever opened it sent the alert
    _send_on_commit(alert, background)
    return True


def resolve_incident(crm, kind, recovery, *, now=None, background=False):
    """Close the CRM's open incident of `kind` and send `recovery(incident, now)`
    once the transaction commits. Returns whether this call closed it."""
    now = now or timezone.now()
    with transaction.atomic():
        incident = AlertIncident.objects.filter(crm=crm, kind=kind, resolved_at__isnull=True).first()
        # Of several processes closing it at once, the row count says who sends.
        closed = incident and AlertIncident.objects.filter(pk=incident.pk, resolved_at__isnull=True).update(
            resolved_at=now
        )
    if not closed:
        return False
    _send_on_commit(recovery(incident, now), background)
    return True


def open_kinds(crm):
    return set(AlertIncident.objects.filter(crm=crm, resolved_at__isnull=True).values_list("kind", flat=True))


# Sending


def _send_on_commit(alert, background):
    # DEBUG: what the alert is about (a pause, the breaker) was logged where it happened,
    # and the incident is a row staff see in the admin; saying it again at a higher level
    # would say a pause twice in sync_crm's output. A failed send is an ERROR.
    logger.debug("alert to staff: %s", alert.subject)
    transaction.on_commit(functools.partial(_start_send if background else send, alert), robust=True)


def send(alert):
    """Mail ADMINS and post to the webhook; a failure of either is logged, never raised."""
    try:
        mail_admins(alert.subject, alert.body)
    except Exception as exc:
        logger.error("alert %r: the mail to ADMINS failed (%s)", alert.subject, type(exc).__name__)
    url = alert_webhook_url()
    if not url:
        return
    try:
        response = requests.post(url, json=webhook_body(alert), timeout=WEBHOOK_TIMEOUT_SECONDS)
    except Exception as exc:
        # The URL holds the webhook's token, and requests quotes it in its errors: the type only.
        logger.error("alert %r: the webhook could not be reached (%s)", alert.subject, type(exc).__name__)
        return
    if not response.ok:
        logger.error("alert %r: the webhook answered HTTP %d", alert.subject, response.status_code)


_background = []
_background_lock = threading.Lock()


def _start_send(alert):
    """Send from a thread of its own: /healthz answers load balancers within their
    own timeout of a few seconds, and a slow mail server or webhook must not make
    a healthy web process look dead. Not a django-q2 task: the stale-schedule
    alert is about the task cluster having stopped."""
    thread = threading.Thread(target=send, args=(alert,), name="crmsync-alert", daemon=True)
    with _background_lock:
        _background[:] = [t for t in _background if t.is_alive()] + [thread]
    thread.start()


def wait_for_background_sends(timeout=30):
    """Wait for the alerts sent from threads (tests; a graceful shutdown)."""
    with _background_lock:
        threads = list(_background)
    for thread in threads:
        thread.join(timeout)


# The cases


def _clean(text):
    """A CRM's own words, without any email address or configured secret."""
    from crmsync_project.secrets import configured_secrets, scrub

    secrets = configured_secrets()
    url = alert_webhook_url()
    return without_emails(scrub(text or "", secrets + ([url] if url else [])))


def _at(moment):
    if moment is None:
        return "?"
    return moment.astimezone(timezone.get_current_timezone()).strftime("%Y-%m-%d %H:%M %Z")


def _lasted(incident, now):
    minutes = max(0, (now - incident.opened_at).total_seconds() / 60)
    if minutes >= 90:
        return "%.1f hours" % (minutes / 60)
    return "%d minutes" % round(minutes)


@_never_raises
def crm_paused(crm, reason, now):
    """The engine paused the CRM after it refused the work (CRMUnavailable,
    CRMConfigurationError): nothing syncs to it until a person acts."""
    label = verbose_crm_name(crm)
    alert = Alert(
        "%s paused: credentials or configuration" % label,
        "Every worker stopped sending to %s at %s: %s\nA notice follows once it accepts contacts again."
        % (label, _at(now), _clean(reason)),
    )
    return open_incident(crm, AlertKind.PAUSED, alert, now=now)


def _pause_over(incident, now):
    label = verbose_crm_name(incident.crm)
    return Alert(
        "%s syncs again" % label,
        "%s accepted contacts again at %s, after %s paused for credentials or configuration. Contacts that "
        'ended in Error meanwhile can be queued again with "Retry failed syncs".'
        % (label, _at(now), _lasted(incident, now)),
    )


@_never_raises
def breaker_opened(crm, failed_batches, failing_since, next_probe_at, now):
    label = verbose_crm_name(crm)
    alert = Alert(
        "%s circuit breaker open" % label,
        "%d batches in a row failed on %s's side since %s (server errors, timeouts or refused connections). "
        "Workers stopped pushing to it and one probes it now and then, next at %s; contacts wait without "
        "using their attempts. A notice follows when it answers again."
        % (failed_batches, label, _at(failing_since), _at(next_probe_at)),
    )
    return open_incident(crm, AlertKind.BREAKER, alert, now=now)


@_never_raises
def breaker_closed(crm, drained, now):
    def recovery(incident, now):
        label = verbose_crm_name(crm)
        return Alert(
            "%s circuit breaker closed" % label,
            "%s answers again at %s, after %s with the breaker open; %d delayed contacts are due now."
            % (label, _at(now), _lasted(incident, now), drained),
        )

    return resolve_incident(crm, AlertKind.BREAKER, recovery, now=now)


@_never_raises
def after_run(crm, accepted, now):
    """At the end of an engine run: a CRM that accepted contacts is no longer
    paused for its configuration, and the error rate is judged (two queries)."""
    kinds = open_kinds(crm)
    if accepted and AlertKind.PAUSED in kinds:
        resolve_incident(crm, AlertKind.PAUSED, _pause_over, now=now)
    _judge_error_rate(crm, AlertKind.ERROR_RATE in kinds, now)


def failure_counts(crm, now):
    """(tried, failed): the CRM's contacts tried in the WINDOW before `now`, and
    those among them that failed (ended in Error), in one query of the attempt
    rollup. Contacts that waited (a rate limit, an open breaker) were not tried.

    The rollup counts by quarter hour, so the window is the current quarter hour
    plus the share of the previous one still inside it, taking that one's attempts
    as spread evenly over it (a sliding-window estimate)."""
    current = _quarter_start(now)
    previous = current - WINDOW
    weight = 1 - (now - current) / WINDOW
    rows = (
        AttemptCount.objects.filter(crm=crm, period_start__gte=previous)
        .values_list("period_start", "outcome")
        .annotate(number=Sum("number"))
        .order_by()
    )
    tried = failed = 0.0
    for start, outcome, number in rows:
        if outcome == AttemptOutcome.WAITED:
            continue
        share = number * (weight if start < current else 1)
        tried += share
        failed += share if outcome == AttemptOutcome.FAILED else 0
    return round(tried), round(failed)


def _quarter_start(moment):
    seconds = moment.timestamp()
    return moment - timedelta(seconds=seconds % SLOT_SECONDS)


def _judge_error_rate(crm, is_open, now):
    tried, failed = failure_counts(crm, now)
    limit = alert_error_rate()
    rate = failed / tried if tried else 0.0
    label = verbose_crm_name(crm)
    if not is_open and tried >= MIN_TRIED and rate > limit:
        alert = Alert(
            "%s: %s of contacts failed" % (label, _percent(rate)),
            "%d of the %d contacts tried on %s in the last %d minutes failed (%s; the alert is above %s, "
            "CRMSYNC_ALERT_ERROR_RATE). Why is on each of them: Contact syncs, filtered by sync status Error."
            % (failed, tried, label, WINDOW.seconds // 60, _percent(rate), _percent(limit)),
        )
        open_incident(crm, AlertKind.ERROR_RATE, alert, now=now)
    elif is_open and rate <= limit:

        def recovery(incident, now):
            return Alert(
                "%s: failed contacts back to %s" % (label, _percent(rate)),
                "%d of the %d contacts tried on %s in the last %d minutes failed (the alert is above %s); "
                "the alert lasted %s."
                % (failed, tried, label, WINDOW.seconds // 60, _percent(limit), _lasted(incident, now)),
            )

        resolve_incident(crm, AlertKind.ERROR_RATE, recovery, now=now)


def _percent(rate):
    return "%.0f%%" % (rate * 100)


@_never_raises
def schedules_seen(stale, recovered, now, *, intervals):
    """From /healthz: `stale` maps each CRM whose schedule has not run for
    `intervals` of its intervals (and has no open alert) to its last run or None;
    the CRMs in `recovered` run again. Sent from a thread (see _start_send)."""
    for crm, last_run_at in stale.items():
        # The flag /healthz reads lives on the CRM's state row: make sure there is one.
        CRMState.objects.ensure(crm)
        alert = _stale_alert(crm, last_run_at, intervals)
        open_incident(crm, AlertKind.STALE_SCHEDULE, alert, now=now, background=True)
    for crm in recovered:
        resolve_incident(crm, AlertKind.STALE_SCHEDULE, _schedule_back, now=now, background=True)


def _stale_alert(crm, last_run_at, intervals):
    label = verbose_crm_name(crm)
    return Alert(
        "%s sync schedule stopped" % label,
        "The %s sync schedule has not run for %d of its intervals (last run: %s). Check that the task cluster "
        "(manage.py qcluster) and its broker are running; nothing syncs to %s until they do. A notice follows "
        "when it runs again." % (label, intervals, _at(last_run_at) if last_run_at else "never", label),
    )


def _schedule_back(incident, now):
    label = verbose_crm_name(incident.crm)
    return Alert(
        "%s sync schedule runs again" % label,
        "The %s sync schedule runs again (seen at %s, after %s stopped)." % (label, _at(now), _lasted(incident, now)),
    )
