from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from integrations.health import healthz
from integrations.metrics import metrics

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("integrations/", include("integrations.urls")),
    path("api/", include("api.urls")),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
]
