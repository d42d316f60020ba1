"""A faithful local emulator of each CRM's API, for tests, benchmarks and the demo.

Production code never imports this package: while CRMSYNC_SANDBOX_URL is set, the
app registers with integrations.conf the settings that point each emulated CRM at
the sandbox (apps.py). Adding a CRM's emulator means adding its class to
EMULATOR_CLASSES and its module's crm_settings to CRM_SETTINGS.
"""

from .brevo import BrevoEmulator
from .brevo import crm_settings as brevo_settings
from .hubspot import HubSpotEmulator
from .hubspot import crm_settings as hubspot_settings
from .mautic import MauticEmulator
from .mautic import crm_settings as mautic_settings
from .n8n import N8nEmulator
from .n8n import crm_settings as n8n_settings

EMULATOR_CLASSES = (BrevoEmulator, HubSpotEmulator, MauticEmulator, N8nEmulator)

# For each emulated CRM, a function of the sandbox's URL returning that CRM's
# settings (its API root and the placeholder credentials the emulator accepts).
CRM_SETTINGS = {
    BrevoEmulator.name: brevo_settings,
    HubSpotEmulator.name: hubspot_settings,
    MauticEmulator.name: mautic_settings,
    N8nEmulator.name: n8n_settings,
}
