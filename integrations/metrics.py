"""GET /metrics in the Prometheus text format, for scraping; off (404) unless
CRMSYNC_METRICS_TOKEN is set, and then only with that bearer token (401 without).

Every value is read from the database when scraped, in four queries whatever the
number of CRMs or rows, so that any web process on any machine reports the same
numbers whichever process did the work. Labels hold CRM names and outcomes only.
"""

import logging

from django.db import DatabaseError
from django.http import Http404, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from contacts.models import AttemptOutcome, ContactSync

from .attempt_totals import attempt_totals
from .backends.inbound import same_secret
from .conf import metrics_token
from .models import PAUSE_FIELDS, CRMState
from .push_histogram import cumulative
from .registry import enabled_backend_classes

logger = logging.getLogger(__name__)

STATE_FIELDS = (
    *PAUSE_FIELDS,
    "last_run_at",
    "last_success_at",
    "requests_sent",
    "rate_limited_responses",
    "push_durations",
)


class CRMSyncCollector(Collector):
    """Yields the metric families of every enabled CRM, read at scrape time."""

    def collect(self):
        names = [cls.name for cls in enabled_backend_classes()]
        now = timezone.now()
        queues = ContactSync.objects.queue_stats(names, now)
        states = {state.crm: state for state in CRMState.objects.filter(crm__in=names).only(*STATE_FIELDS)}
        states.update((name, CRMState(crm=name)) for name in names if name not in states)
        totals = attempt_totals(names)
        yield from _queue_families(queues, now)
        yield _attempt_family(names, totals)
        yield from _state_families(names, states, now)
        yield _request_family(
            "crmsync_requests", "Requests sent to the CRM by every worker (database).", states, "requests_sent"
        )
        yield _request_family(
            "crmsync_rate_limited_responses",
            "Answers of HTTP 429 the CRM gave every worker (database).",
            states,
            "rate_limited_responses",
        )
        yield _histogram_family(states)


def _queue_families(queues, now):
    depth = GaugeMetricFamily(
        "crmsync_queue_depth", "Contacts queued for the CRM or being pushed now (database).", labels=["crm"]
    )
    due = GaugeMetricFamily(
        "crmsync_queue_due", "Queued contacts whose time to be pushed has come (database).", labels=["crm"]
    )
    oldest = GaugeMetricFamily(
        "crmsync_oldest_due_age_seconds",
        "Seconds since the longest-waiting due contact fell due, 0 when none is due (database).",
        labels=["crm"],
    )
    for crm, queue in queues.items():
        depth.add_metric([crm], queue["queued"] + queue["in_flight"])
        due.add_metric([crm], queue["due"])
        since = queue["oldest_due_at"]
        oldest.add_metric([crm], max(0.0, (now - since).total_seconds()) if since else 0.0)
    return depth, due, oldest


def _attempt_family(names, totals):
    family = CounterMetricFamily(
        "crmsync_attempts",
        "Contacts pushed to the CRM by outcome: accepted, retry (scheduled again), waited "
        "(rate limit or CRM down, no attempt used), failed; every worker, never lowered by "
        "the history's pruning (database).",
        labels=["crm", "outcome"],
    )
    for crm in names:
        for outcome in AttemptOutcome.values:
            family.add_metric([crm, outcome], totals[crm][outcome])
    return family


def _state_families(names, states, now):
    paused = GaugeMetricFamily(
        "crmsync_paused",
        "1 while the CRM is paused, by staff (until resumed) or by the CRM itself (a rate limit, "
        "bad credentials) (database).",
        labels=["crm", "by"],
    )
    breaker = GaugeMetricFamily(
        "crmsync_breaker_open", "1 while the CRM's circuit breaker is open (database).", labels=["crm"]
    )
    last_success = GaugeMetricFamily(
        "crmsync_last_success_timestamp_seconds",
        "When a run last synced a contact, Unix time; absent before the first (database).",
        labels=["crm"],
    )
    last_run = GaugeMetricFamily(
        "crmsync_last_run_timestamp_seconds", "When a run last ended, Unix time (database).", labels=["crm"]
    )
    for crm in names:
        state = states[crm]
        paused.add_metric([crm, "staff"], int(state.staff_pause() is not None))
        paused.add_metric([crm, "crm"], int(state.crm_pause(now) is not None))
        breaker.add_metric([crm], int(state.open_breaker() is not None))
        if state.last_success_at:
            last_success.add_metric([crm], state.last_success_at.timestamp())
        if state.last_run_at:
            last_run.add_metric([crm], state.last_run_at.timestamp())
    return paused, breaker, last_success, last_run


def _request_family(name, documentation, states, field):
    family = CounterMetricFamily(name, documentation, labels=["crm"])
    for crm, state in states.items():
        family.add_metric([crm], getattr(state, field))
    return family


def _histogram_family(states):
    family = HistogramMetricFamily(
        "crmsync_push_duration_seconds",
        "Time to push one batch to the CRM, every worker; added when each run ends (database).",
        labels=["crm"],
    )
    for crm, state in states.items():
        buckets, total = cumulative(state.push_durations)
        family.add_metric([crm], buckets, total)
    return family


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(CRMSyncCollector())


@never_cache
@require_safe
def metrics(request):
    token = metrics_token()
    if not token:
        raise Http404("Metrics are off: CRMSYNC_METRICS_TOKEN is not set.")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not same_secret(given.strip(), token):
        response = HttpResponse("A bearer token is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="crmsync metrics"'
        return response
    try:
        body = generate_latest(REGISTRY)
    except DatabaseError as exc:
        # The exception text may name hosts and users: it goes to the log only.
        logger.warning("metrics: database unreachable: %s", exc)
        return HttpResponse("The database is unreachable.\n", status=503, content_type="text/plain")
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
