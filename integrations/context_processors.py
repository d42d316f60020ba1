from .conf import sandbox_url
from .models import CRMState


def crm_status(request):
    """What every admin page says about the CRMs: sandbox mode, and paused CRMs."""
    if not request.path.startswith("/admin/") or not getattr(request.user, "is_staff", False):
        return {}
    return {
        "crmsync_sandbox_url": sandbox_url(),
        # Lazy: evaluated only by templates that show it, one small query.
        "crmsync_paused_crms": CRMState.objects.stopped().order_by("crm"),
    }
