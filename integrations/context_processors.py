from django.db.models import Q
from django.utils import timezone

from .conf import sandbox_url
from .models import CRMState


def crm_status(request):
    """What every admin page says about the CRMs: sandbox mode, and paused CRMs."""
    if not request.path.startswith("/admin/") or not getattr(request.user, "is_staff", False):
        return {}
    return {
        "crmsync_sandbox_url": sandbox_url(),
        # Lazy: evaluated only by templates that show it, one small query.
        "crmsync_paused_crms": CRMState.objects.filter(
            Q(paused_until__gt=timezone.now()) | Q(paused_at__isnull=False) | Q(next_probe_at__isnull=False)
        ).order_by("crm"),
    }
