"""crms endpoints (being written)."""

urlpatterns = []
