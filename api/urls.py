from django.http import JsonResponse
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

app_name = "api"


def not_found(request, rest=""):
    """An address under /api/ that names no endpoint: JSON, like every other answer here."""
    return JsonResponse({"detail": "Not found. The endpoints are listed at /api/schema/ui/."}, status=404)


urlpatterns = [
    path("v3/", include("api.v3_urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("schema/ui/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="schema-ui"),
    # [\s\S], not ".": an address may hold a newline (%0A), which "." does not match.
    re_path(r"^(?P<rest>[\s\S]*)$", not_found),
]
