"""The base of the admin pages staff only read: rows the engine writes (sync
attempts, CRM states, alert incidents) and rows kept as proof (erasures,
suppressions). Django's permissions still decide who may view them."""

from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
