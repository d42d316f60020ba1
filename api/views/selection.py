"""selection endpoints (being written)."""

urlpatterns = []
