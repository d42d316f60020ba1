"""A stand-in endpoint for the cross-cutting tests (errors, auth, throttling, logs):
it behaves as the real ones do (a permission from api/permissions.py, a serializer
validating the body), so those tests do not depend on any one endpoint's rules.
Tests use it with `@pytest.mark.urls("tests.api.probe")`."""

from django.urls import include, path
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from api.permissions import CanChangeContacts

PROBE_URL = "/api/probe/"


class ProbeSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    email = serializers.EmailField()


class ProbeView(APIView):
    permission_classes = [CanChangeContacts]
    applied = []  # what the view accepted; the tests read and empty it

    def get(self, request):
        return Response({"applied": len(self.applied)})

    def post(self, request):
        serializer = ProbeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self.applied.append(serializer.validated_data)
        return Response({"name": serializer.validated_data["name"]})


urlpatterns = [
    path(PROBE_URL.strip("/") + "/", ProbeView.as_view()),
    path("", include("crmsync_project.urls")),
]
