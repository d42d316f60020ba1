from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The HTTP API (/api/v3/): a second door onto the rules of contacts.selection,
    the importer and the engine, never a copy of them."""

    name = "api"
    verbose_name = "HTTP API"
