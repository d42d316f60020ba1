"""contacts endpoints (being written)."""

urlpatterns = []
