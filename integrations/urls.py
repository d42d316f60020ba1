from django.urls import path

from .webhooks import n8n

app_name = "integrations"
urlpatterns = [
    path("n8n/enrichment/", n8n.enrichment_callback, name="n8n-enrichment"),
]
