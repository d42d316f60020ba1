from django.contrib import admin
from django.urls import path


class CRMSyncAdminSite(admin.AdminSite):
    """The admin, with the sync dashboard among its own pages."""

    site_header = "crmsync"
    site_title = "crmsync"
    index_title = "Contacts and CRM sync"

    def get_urls(self):
        from integrations import dashboard

        own = [
            path("dashboard/", self.admin_view(dashboard.dashboard), name="crmsync_dashboard"),
            path("dashboard/<str:crm>/pause/", self.admin_view(dashboard.pause), name="crmsync_pause"),
            path("dashboard/<str:crm>/resume/", self.admin_view(dashboard.resume), name="crmsync_resume"),
        ]
        return own + super().get_urls()
