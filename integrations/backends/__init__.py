"""CRM backends: one module per CRM, each a CRMBackend subclass that does HTTP only.

The list of CRMs, their labels and the lookup of a backend class by name live in
integrations.registry, so that importing a backend module pulls in neither the
registry nor any model.
"""
