from django.contrib.admin.apps import AdminConfig


class CRMSyncAdminConfig(AdminConfig):
    default_site = "crmsync_project.admin.CRMSyncAdminSite"
