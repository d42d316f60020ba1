"""/api/v3/: each group of endpoints in its own module under api/views/."""

from .views import bulk, contacts, crms, erasure, selection

urlpatterns = [
    *selection.urlpatterns,
    *bulk.urlpatterns,
    *erasure.urlpatterns,
    *contacts.urlpatterns,
    *crms.urlpatterns,
]
