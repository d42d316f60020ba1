"""What the admin shows of a per-CRM row's life beyond the sync itself: the last
event its CRM reported (an opt-out, a deletion, a merge) and the states where the
CRM holds no record (Not in the CRM, Removed from the CRM), with their reason.

Each function reads only the row's own fields, so a list of rows costs no query
per row.
"""

from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.translation import gettext as _

from .models import GONE_EVENTS, OPT_OUT_EVENTS, CRMEvent, Operation, ProcessingStatus

# Where a state's badge says why, the list shows this much of the reason.
REASON_SHOWN = 120
# Processing states in which the CRM has no record for the row, and last_error says why.
RECORD_GONE_STATES = (ProcessingStatus.NOT_IN_CRM, ProcessingStatus.REMOVED)


def when(moment):
    """A moment as the admin shows dates, in the site's time zone; empty for None."""
    if moment is None:
        return ""
    return formats.date_format(timezone.localtime(moment), "SHORT_DATETIME_FORMAT")


def event_kind(event):
    """The badge's class: opted-out, gone or merged."""
    if event in OPT_OUT_EVENTS:
        return "opted-out"
    if event in GONE_EVENTS:
        return "gone"
    return "merged"


def crm_event_badge(sync):
    """The CRM's last event for the row with its time, or "" when it reported none;
    an opt-out also says since when the person has opted out."""
    if not sync.crm_event:
        return ""
    label = CRMEvent(sync.crm_event).label
    tooltip = _("%(crm)s reported: %(event)s") % {"crm": sync.crm_label, "event": label}
    if sync.opted_out_at:
        tooltip += "\n" + _("Opted out since %s") % when(sync.opted_out_at)
    return format_html(
        '<span class="crm-event crm-event--{}" title="{}">{}</span> <span class="crm-event-at">{}</span>',
        event_kind(sync.crm_event),
        tooltip,
        label,
        when(sync.crm_event_at),
    )


def processing_state(sync):
    """The row's processing status, with the operation when it is not an upsert; Not
    in the CRM and Removed from the CRM as a badge followed by their reason."""
    label = ProcessingStatus(sync.processing_status).label if sync.processing_status else "-"
    if sync.operation:
        label = "%s (%s)" % (label, Operation(sync.operation).label)
    if sync.processing_status not in RECORD_GONE_STATES:
        return label
    return format_html(
        '<span class="crm-state crm-state--{}" title="{}">{}</span> <span class="crm-reason">{}</span>',
        sync.processing_status,
        sync.last_error,
        label,
        Truncator(sync.last_error).chars(REASON_SHOWN),
    )


def warning_badge(sync):
    """What the CRM accepted the row with a reservation about (a value it could not
    take was left out), as a badge with the start of the text; "" when none."""
    if not sync.warning:
        return ""
    return format_html(
        '<span class="crm-warning" title="{}"><span class="crm-warning__label">{}</span> {}</span>',
        sync.warning,
        _("Warning"),
        Truncator(sync.warning).chars(REASON_SHOWN),
    )


def state_with_warning(sync):
    """processing_state followed, on its own line, by the warning badge if any."""
    warning = warning_badge(sync)
    if not warning:
        return processing_state(sync)
    return format_html('{}<br class="crm-warning-break">{}', processing_state(sync), warning)


def compact_when(moment):
    """A moment for a narrow list column: its date and its time, each kept whole, so
    the column wraps between them and never inside one."""
    if moment is None:
        return ""
    local = timezone.localtime(moment)
    return format_html(
        '<span class="crm-when"><span>{}</span> <span>{}</span></span>',
        formats.date_format(local, "SHORT_DATE_FORMAT"),
        formats.time_format(local, "TIME_FORMAT"),
    )
