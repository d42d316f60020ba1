"""A faithful local emulator of each CRM's API, for tests, benchmarks and the demo.

Adding a CRM's emulator means adding its class to EMULATOR_CLASSES.
"""

from .brevo import BrevoEmulator
from .hubspot import HubSpotEmulator
from .mautic import MauticEmulator
from .n8n import N8nEmulator

EMULATOR_CLASSES = (BrevoEmulator, HubSpotEmulator, MauticEmulator, N8nEmulator)
