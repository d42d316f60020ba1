"""The sync dashboard: per CRM, where the work stands, how fast it moves and what
fails, with pause and resume.

The counts by status, the contact total and the hourly chart come from rollups the
database keeps as rows are written (integrations.rollups); the queue and the top
errors from partial indexes. The page costs the same few queries with a million
rows as with ten, at any traffic.
"""

from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.humanize.templatetags.humanize import intcomma
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Min, Q
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.timesince import timesince, timeuntil
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods, require_POST

from contacts import audit
from contacts.models import AttemptOutcome, ContactSync, ProcessingStatus, SyncStatus

from . import rollups
from .conf import SyncPolicy
from .exceptions import CRMConfigurationError
from .models import CRMState
from .registry import enabled_backend_classes

VIEW_PERMISSION = "contacts.view_contactsync"
PAUSE_PERMISSION = "integrations.pause_crm"
# The field the pause confirmation page posts; without it a POST pauses nothing.
CONFIRM = "confirm"
HOURS = 24
TOP_ERRORS = 5
# How often the open page asks for fresh numbers (dashboard_numbers).
REFRESH_SECONDS = 5
# The 24-hour chart: bars BAR_STEP pixels apart, CHART_HEIGHT high at the scale's top.
BAR_STEP = 12
CHART_HEIGHT = 48

# The bar's segments, in the order they are drawn. "queued" is exactly the rows in
# the queue (processing status Queued), the rows the queue facts below count.
# "selected" is a row staff selected that nothing is queued for (an erasure
# cancelled over it). "new" counts contacts nobody has decided anything about for
# the CRM, with or without a row.
# Each with what it counts, shown as the legend's tooltip.
SEGMENTS = (
    ("complete", "Complete now", "Contacts whose current state is Complete, whenever they were synced."),
    ("queued", "Queued", "Rows in the queue, due now or later (a retry or a rate limit waits)."),
    ("selected", "Selected, nothing queued", "Selected by staff, but nothing is queued for them."),
    ("processing", "Processing", "Being pushed by a worker now."),
    ("error", "Error", "Given up after their attempts; staff can retry them."),
    ("not_in_crm", "Not in the CRM", "The CRM has no record for them and crmsync creates none without staff."),
    ("removed", "Removed from the CRM", "The CRM confirmed their removal or erasure."),
    ("skipped", "Skipped", "Staff chose not to sync them to this CRM."),
    ("new", "New", "Nobody has decided anything about them for this CRM."),
)


@dataclass
class Segment:
    key: str
    label: str
    count: int
    percent: float
    help: str = ""


@dataclass
class HourBar:
    start: object
    count: int
    x: int = 0
    y: int = 0
    height: int = 0


@dataclass
class Queue:
    """The CRM's queue: how many rows wait, how many of them are due now, since when
    the oldest due one waits, and when the next one not yet due falls due."""

    queued: int = 0
    due: int = 0
    oldest_due_at: object = None
    next_due_at: object = None

    def describe(self):
        """ "5 queued, next due at 14:32": the queued count and why it is not all due."""
        if not self.queued:
            return _("nothing queued")
        queued = ngettext("%(count)s queued", "%(count)s queued", self.queued) % {"count": intcomma(self.queued)}
        if self.due == self.queued:
            return _("%s, all due now") % queued
        later = _at(self.next_due_at)
        if not self.due:
            return _("%(queued)s, next due at %(at)s") % {"queued": queued, "at": later}
        return _("%(queued)s: %(due)s due now, the next of the others at %(at)s") % {
            "queued": queued,
            "due": intcomma(self.due),
            "at": later,
        }

    def describe_oldest_due(self, now):
        """ "waiting 2 hours", or why nothing waits: "none waiting, next in 3 minutes"."""
        if self.oldest_due_at:
            return _("waiting %s") % timesince(self.oldest_due_at, now)
        if self.next_due_at:
            return _("none waiting, next in %s") % timeuntil(self.next_due_at, now)
        return _("none waiting")


def _at(moment):
    """A time of day, with the date when it is not today."""
    if moment is None:
        return _("no set time")
    local = timezone.localtime(moment)
    same_day = local.date() == timezone.localdate()
    return date_format(local, "H:i" if same_day else "Y-m-d H:i")


@dataclass
class CRMCard:
    crm: str
    verbose_name: str
    segments: list
    total: int
    hours: list
    queue: Queue
    now: object
    state: object
    interval_minutes: object
    top_errors: list = field(default_factory=list)

    @property
    def oldest_due_at(self):
        return self.queue.oldest_due_at

    @property
    def queue_text(self):
        return self.queue.describe()

    @property
    def oldest_due_text(self):
        return self.queue.describe_oldest_due(self.now)

    @property
    def synced_last_24h(self):
        return sum(bar.count for bar in self.hours)

    @property
    def scale(self):
        """The chart's labelled gridlines, top first: (value, y) for top, half and 0."""
        top = scale_top(max(bar.count for bar in self.hours))
        return [(top, 0), (top // 2, CHART_HEIGHT // 2), (0, CHART_HEIGHT)]

    @property
    def staff_pause(self):
        pause = self.state and self.state.staff_pause()
        return pause.reason if pause else ""

    @property
    def breaker(self):
        """ "Failing since ..., next probe at ..." while the circuit breaker is open."""
        pause = self.state and self.state.open_breaker(label=self.verbose_name)
        return pause.reason if pause else ""

    @property
    def crm_pause_until(self):
        """When the CRM's own pause (a rate limit, bad credentials) ends, if it is on."""
        pause = self.state and self.state.crm_pause(timezone.now())
        return pause.until if pause else None

    @property
    def state_text(self):
        """Why the CRM is paused, staff's pause first, or "running"."""
        if self.staff_pause or self.breaker:
            return self.staff_pause or self.breaker
        if self.crm_pause_until:
            return _("Paused by the CRM until %(until)s: %(reason)s") % {
                "until": _stamp(self.crm_pause_until),
                "reason": self.state.pause_reason,
            }
        return _("running")

    @property
    def last_success_text(self):
        moment = self.state and self.state.last_success_at
        if not moment:
            return _("never")
        return _("%(at)s (%(age)s ago)") % {"at": _stamp(moment), "age": timesince(moment, self.now)}

    @property
    def last_run_text(self):
        moment = self.state and self.state.last_run_at
        return _stamp(moment) if moment else _("never")


def _stamp(moment):
    return date_format(timezone.localtime(moment), "Y-m-d H:i:s e")


def card_numbers(card):
    """What the live dashboard updates in place, for one card: every count, and the
    texts written from them, as the page writes them."""
    return {
        "crm": card.crm,
        "segments": [
            {"key": s.key, "count": s.count, "text": intcomma(s.count), "percent": round(s.percent, 3)}
            for s in card.segments
        ],
        "synced_last_24h": card.synced_last_24h,
        "synced_last_24h_text": intcomma(card.synced_last_24h),
        "scale": [{"value": value, "text": intcomma(value), "y": y} for value, y in card.scale],
        "hours": [_bar_numbers(bar) for bar in card.hours],
        "queue": {
            "queued": card.queue.queued,
            "due": card.queue.due,
            "oldest_due_at": card.queue.oldest_due_at,
            "next_due_at": card.queue.next_due_at,
            "text": card.queue_text,
        },
        "oldest_due_text": card.oldest_due_text,
        "state": {
            "text": card.state_text,
            "paused": bool(card.staff_pause or card.breaker or card.crm_pause_until),
            "paused_by_staff": bool(card.staff_pause),
        },
        "last_success_text": card.last_success_text,
        "last_run_text": card.last_run_text,
    }


def _bar_numbers(bar):
    title = "%s: %s" % (date_format(timezone.localtime(bar.start), "H:i"), intcomma(bar.count))
    return {"start": bar.start, "count": bar.count, "y": bar.y, "height": bar.height, "title": title}


def dashboard(request):
    if not request.user.has_perm(VIEW_PERMISSION):
        raise PermissionDenied
    now = timezone.now()
    context = {
        **admin.site.each_context(request),
        "title": _("Sync dashboard"),
        "now": now,
        "cards": crm_cards(now),
        "can_pause": request.user.has_perm(PAUSE_PERMISSION),
        "chart_width": HOURS * BAR_STEP,
        "refresh_seconds": REFRESH_SECONDS,
    }
    return TemplateResponse(request, "admin/crmsync/dashboard.html", context)


def dashboard_numbers(request):
    """The dashboard's numbers as JSON, for the page to refresh itself in place
    (integrations/static/integrations/dashboard.js); the same permission and the
    same queries as the page."""
    if not request.user.has_perm(VIEW_PERMISSION):
        raise PermissionDenied
    now = timezone.now()
    cards = [card_numbers(card) for card in crm_cards(now)]
    # admin_view marks the response never_cache: no cache answers for the server.
    as_of = date_format(timezone.localtime(now), "H:i:s")
    return JsonResponse({"generated_at": now, "generated_at_text": as_of, "cards": cards})


@require_http_methods(["GET", "POST"])
def pause(request, crm):
    """Staff confirm a pause first, as Django's delete confirmation does: a GET, or
    a POST without confirm=yes, shows what the pause does and changes nothing."""
    backend_class = _backend_class_to_change(request, crm)
    if request.method == "POST" and request.POST.get(CONFIRM) == "yes":
        return _change_pause(
            request,
            backend_class,
            CRMState.objects.pause_by_staff,
            _("%s is paused: it claims nothing until it is resumed."),
            verb="Paused",
        )
    context = {
        **admin.site.each_context(request),
        "title": _("Pause %s?") % backend_class.verbose_name,
        "crm": crm,
        "verbose_name": backend_class.verbose_name,
        "queued": ContactSync.objects.for_crm(crm).queued().count(),
        "confirm": CONFIRM,
    }
    return TemplateResponse(request, "admin/crmsync/pause_confirmation.html", context)


@require_POST
def resume(request, crm):
    """Resuming only lets the CRM work again: no confirmation."""
    backend_class = _backend_class_to_change(request, crm)
    return _change_pause(request, backend_class, CRMState.objects.resume, _("%s is resumed."), verb="Resumed")


def _backend_class_to_change(request, crm):
    if not request.user.has_perm(PAUSE_PERMISSION):
        raise PermissionDenied
    backend_class = _enabled_backend_classes().get(crm)
    if backend_class is None:
        raise Http404(_("No configured CRM is named %r.") % crm)
    return backend_class


def _change_pause(request, backend_class, change, message, *, verb):
    crm = backend_class.name
    if change(crm, request.user.get_username()):
        messages.success(request, message % backend_class.verbose_name)
        # Only a change is staff's action: pausing a paused CRM does nothing.
        audit.record(request.user, verb, count=None, crms=[crm], model=CRMState)
    return HttpResponseRedirect(reverse("admin:crmsync_dashboard"))


def _enabled_backend_classes():
    return {backend_class.name: backend_class for backend_class in enabled_backend_classes()}


def crm_cards(now):
    backend_classes = _enabled_backend_classes()
    crms = list(backend_classes)
    counts, detached = _status_counts(crms)
    contacts = rollups.contact_count()
    hours = _accepted_by_hour(crms, now)
    queues = _queues(crms, now, counts)
    states = {state.crm: state for state in CRMState.objects.filter(crm__in=crms)}
    cards = []
    for crm, backend_class in backend_classes.items():
        cards.append(
            CRMCard(
                crm=crm,
                verbose_name=backend_class.verbose_name,
                segments=_segments(counts[crm], contacts, detached[crm]),
                total=contacts + detached[crm],
                hours=hours[crm],
                queue=queues[crm],
                now=now,
                state=states.get(crm),
                interval_minutes=_interval_minutes(backend_class),
                top_errors=_top_errors(crm, now),
            )
        )
    return cards


def _status_counts(crms):
    """({crm: {segment key: rows}}, {crm: rows whose contact is deleted locally})
    from the rollup the database keeps (integrations.rollups): as fast with a
    million rows as with ten. A detached row is a removal or an erasure still to
    deliver (see contacts.selection.detach_removals). Rows of CRMs no longer
    configured are left out."""
    counts = {crm: {} for crm in crms}
    detached = dict.fromkeys(crms, 0)
    for (crm, sync_status, processing_status, is_detached), number in rollups.status_counts().items():
        if crm in counts:
            key = _segment_key(sync_status, processing_status)
            counts[crm][key] = counts[crm].get(key, 0) + number
            if is_detached:
                detached[crm] += number
    return counts, detached


def _segment_key(sync_status, processing_status):
    # Where the work stands comes first: a Selected row may be queued or in flight.
    # Only a row whose processing status is Queued is queued: a Selected row with
    # nothing queued is not in the queue the facts below describe.
    if processing_status in (
        ProcessingStatus.QUEUED,
        ProcessingStatus.PROCESSING,
        ProcessingStatus.NOT_IN_CRM,
        ProcessingStatus.REMOVED,
    ):
        return processing_status
    if sync_status == SyncStatus.SELECTED:
        return "selected"
    return sync_status


def _segments(counts, contacts, detached):
    """The bar's segments. A row whose contact is gone is counted where its work
    stands (queued, mostly), but is no contact's decision: it does not make a
    contact less New, and the bar's whole is the contacts and those rows."""
    decided = sum(number for key, number in counts.items() if key != "new") - detached
    counts = {**counts, "new": max(0, contacts - decided)}
    whole = contacts + detached
    return [
        Segment(key, _(label), counts.get(key, 0), _percent(counts.get(key, 0), whole), _(explanation))
        for key, label, explanation in SEGMENTS
    ]


def _percent(count, whole):
    return 100.0 * count / whole if whole else 0.0


def _accepted_by_hour(crms, now):
    """{crm: [HourBar] * 24}, oldest first, the last one the current hour, from
    the attempts' rollup: the quarter hours of the last 24 hours, whatever the
    traffic. Every time zone's hours start on a quarter hour, so each quarter
    falls in one local hour."""
    current = timezone.localtime(now).replace(minute=0, second=0, microsecond=0)
    starts = [current - timedelta(hours=HOURS - 1 - i) for i in range(HOURS)]
    accepted = {}
    for crm, period_start, number in rollups.attempts_since(starts[0], AttemptOutcome.ACCEPTED):
        hour = timezone.localtime(period_start).replace(minute=0, second=0, microsecond=0)
        accepted[crm, hour] = accepted.get((crm, hour), 0) + number
    return {crm: _bars([accepted.get((crm, start), 0) for start in starts], starts) for crm in crms}


def scale_top(busiest):
    """The chart's top: the first of 2, 4, 6, 8, 10, 20, 40 ... at or above the
    busiest hour, so that it and its half are round numbers to label."""
    if busiest <= 2:
        return 2
    magnitude = 10 ** (len(str(busiest)) - 1)
    return next(magnitude * factor for factor in (1, 2, 4, 6, 8, 10) if magnitude * factor >= busiest)


def _bars(numbers, starts, height=CHART_HEIGHT, step=BAR_STEP):
    """Bars on the chart's scale; an empty hour is a one-pixel line on the axis."""
    top = scale_top(max(numbers))
    bars = []
    for i, (start, number) in enumerate(zip(starts, numbers)):
        bar_height = max(1, round(height * number / top))
        bars.append(HourBar(start, number, x=i * step, y=height - bar_height, height=bar_height))
    return bars


def _queues(crms, now, counts):
    """{crm: Queue}: the queued count from the rollup (the Queued segment), and
    from the claim's partial index (contactsync_due_queued) alone, the due rows
    and the moments either side of now."""
    due = Q(next_attempt_at__lte=now)
    rows = (
        ContactSync.objects.queued()
        .filter(due, crm__in=crms)
        .values_list("crm")
        # COUNT(*) and the indexed column: an index-only scan of the due rows.
        .annotate(due=Count("*"), oldest_due_at=Min("next_attempt_at"))
        .order_by()
    )
    facts = {crm: (number, oldest) for crm, number, oldest in rows}
    queues = {}
    for crm in crms:
        queued = counts[crm].get(ProcessingStatus.QUEUED, 0)
        number, oldest = facts.get(crm, (0, None))
        # The two are read a moment apart: a row queued in between is not yet counted.
        number = min(number, queued)
        queues[crm] = Queue(queued, number, oldest, _next_due_at(crm, now) if queued > number else None)
    return queues


def _next_due_at(crm, now):
    """When the first queued row not yet due falls due: one step into the index."""
    later = ContactSync.objects.for_crm(crm).queued().filter(next_attempt_at__gt=now).order_by("next_attempt_at")
    return later.values_list("next_attempt_at", flat=True).first()


def _top_errors(crm, now):
    """The commonest errors that contacts carry now and got in the last 24 hours,
    each with the link to those contacts."""
    rows = (
        ContactSync.objects.for_crm(crm)
        .filter(updated_at__gte=now - timedelta(hours=HOURS))
        .exclude(last_error="")
        .values_list("last_error")
        .annotate(rows=Count("pk"))
        .order_by("-rows", "last_error")[:TOP_ERRORS]
    )
    changelist = reverse("admin:contacts_contact_changelist")
    return [
        {
            "message": message,
            "count": number,
            "url": "%s?%s" % (changelist, urlencode({"crm": crm, "sync_error": message})),
        }
        for message, number in rows
    ]


def _interval_minutes(backend_class):
    try:
        return SyncPolicy.for_backend(backend_class).interval_minutes
    except CRMConfigurationError:
        return None
