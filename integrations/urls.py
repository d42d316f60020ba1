from django.urls import path

from .webhooks import crm, n8n

app_name = "integrations"
urlpatterns = [
    path("n8n/enrichment/", n8n.enrichment_callback, name="n8n-enrichment"),
    path("<str:crm>/webhook/", crm.crm_webhook, name="crm-webhook"),
]
