from .base import CRMBackend


class HubSpotBackend(CRMBackend):
    name = "hubspot"
    verbose_name = "HubSpot"
