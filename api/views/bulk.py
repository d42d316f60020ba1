"""bulk endpoints (being written)."""

urlpatterns = []
