from .base import CRMBackend


class BrevoBackend(CRMBackend):
    name = "brevo"
    verbose_name = "Brevo"
