from .base import CRMBackend


class MauticBackend(CRMBackend):
    name = "mautic"
    verbose_name = "Mautic"
