"""Each endpoint asks for the Django model permission of the matching admin action,
so a user may do through the API exactly what the admin lets them do."""

from rest_framework.permissions import BasePermission


class HasModelPermissions(BasePermission):
    """Authenticated, and holding every permission in `required` ("app.codename")."""

    required = ()

    def has_permission(self, request, view):
        user = request.user
        return bool(user and user.is_authenticated and user.has_perms(self.required))


class CanChangeContacts(HasModelPermissions):
    """Select, skip, retry, unselect, bulk upsert: the admin's contact actions."""

    required = ("contacts.change_contact",)


class CanViewSyncs(HasModelPermissions):
    """The reads: contacts with their per-CRM state, and the CRMs' state."""

    required = ("contacts.view_contactsync",)


class CanPauseCRMs(HasModelPermissions):
    """Pause, resume and sync now, as on the sync dashboard."""

    required = ("integrations.pause_crm",)


class CanEraseContacts(HasModelPermissions):
    """Erase people from every CRM and read the proof, as the admin's erase action."""

    required = ("contacts.erase_contact",)
