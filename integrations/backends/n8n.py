from .base import CRMBackend


class N8nBackend(CRMBackend):
    name = "n8n"
    verbose_name = "n8n"
