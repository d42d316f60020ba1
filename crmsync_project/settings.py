"""Django settings for crmsync. Every value comes from the environment or `.env`."""

import os
from email.utils import getaddresses
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from crmsync_project.devenv import env_file

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Values already in the environment win over the file. ENV_FILE names another file;
# under pytest none is read unless ENV_FILE says so (see devenv.env_file).
ENV_FILE = env_file(os.environ, BASE_DIR)
environ.Env.read_env(ENV_FILE)

DEBUG = env.bool("DEBUG", default=False)

# Only good enough for a developer's machine; the check below keeps it out of production.
DEVELOPMENT_SECRET_KEY = "django-insecure-crmsync-development-key-do-not-deploy"
SECRET_KEY = env.str("SECRET_KEY", default=DEVELOPMENT_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEVELOPMENT_SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY is not set. Set SECRET_KEY in the environment or .env to a long "
        "random value, or set DEBUG=true on a development machine."
    )

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "crmsync_project.apps.CRMSyncAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.humanize",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_q",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "contacts",
    "integrations",
    "api",
    "crm_sandbox",
]

MIDDLEWARE = [
    "crmsync_project.middleware.RefuseMalformedAddressMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "crmsync_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "integrations.context_processors.crm_status",
            ],
        },
    },
]

WSGI_APPLICATION = "crmsync_project.wsgi.application"

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, qcluster, commands) share one file: wait for the
    # write lock instead of failing at once, and let readers run beside a writer.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "utc": {
            "()": "crmsync_project.logging.UTCFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
    },
    "filters": {
        "scrub_secrets": {"()": "crmsync_project.logging.ScrubSecrets"},
    },
    "handlers": {
        "stdout": {
            # Writes above sync_crm's progress bar, never onto it.
            "class": "crmsync_project.logging.ProgressAwareStreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "utc",
            "filters": ["scrub_secrets"],
        },
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "django_q": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
    },
}

# django-q2. A sync tick must never run twice at once or be replayed: `retry` is
# longer than `timeout` so a running task is not re-delivered, a failed task is
# acknowledged rather than retried, and missed schedule slots are not caught up.
Q_CLUSTER_TIMEOUT = env.int("Q_CLUSTER_TIMEOUT", default=600)
Q_CLUSTER = {
    "name": "crmsync",
    "workers": env.int("Q_CLUSTER_WORKERS", default=2),
    "timeout": Q_CLUSTER_TIMEOUT,
    "retry": Q_CLUSTER_TIMEOUT + 60,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
    "label": "Task queue",
}
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# One cache every process shares (the API's throttle counts): Redis when there is
# one, else a table in the database (created by the api app's first migration).
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "crmsync_cache"}}

# The HTTP API (api/, README "The HTTP API"). Token first, so that a request
# without credentials is answered 401 (with WWW-Authenticate), not 403.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON only; the parser answers 400 for a NUL or a lone surrogate in any string.
    "DEFAULT_PARSER_CLASSES": ["api.parsers.StrictJSONParser"],
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.UserRateThrottle"],
    # Requests per user (one token each), counted in CACHES["default"].
    "DEFAULT_THROTTLE_RATES": {"user": env.str("CRMSYNC_API_RATE", default="600/min")},
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "crmsync API",
    "DESCRIPTION": "Select contacts for CRMs, upsert contacts in bulk, and read where each contact stands.",
    "VERSION": "3",
    "SERVE_INCLUDE_SCHEMA": False,
    # The UI's scripts served from this app (drf-spectacular-sidecar), not a CDN:
    # the browsable schema works offline and behind a strict proxy.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Every operation also answers 429 (throttled) and 400 (a malformed request).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.errors.document_shared_errors",
    ],
}

# Error reporting to Sentry: on when SENTRY_DSN is set and sentry-sdk is installed
# (the system check integrations.W005 warns when only the DSN is).
SENTRY_DSN = env.str("SENTRY_DSN", default="")
if SENTRY_DSN:
    from crmsync_project.sentry import init_sentry

    init_sentry(
        SENTRY_DSN,
        environment=env.str("SENTRY_ENVIRONMENT", default="production"),
        # Empty: sentry-sdk finds one itself (the git commit, or a CI variable).
        release=env.str("SENTRY_RELEASE", default="") or None,
        traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0),
    )

# The key of the keyed hash (HMAC-SHA256) that erasure proofs and the suppression
# list hold instead of an email. Its own secret, not SECRET_KEY: rotating either
# must not break the other. Erasure refuses to start without it (contacts.W001).
CRMSYNC_SUPPRESSION_KEY = env.str("CRMSYNC_SUPPRESSION_KEY", default="")
# A worker claims its next batch on a second connection while the current one
# records (or, with a CRM slower to answer than a record, is pushed), and with
# such a CRM records a batch on a third while the next is pushed
# (integrations/overlap.py); off, one after the other.
CRMSYNC_CLAIM_AHEAD = env.bool("CRMSYNC_CLAIM_AHEAD", default=True)
CRMSYNC_RECORD_BEHIND = env.bool("CRMSYNC_RECORD_BEHIND", default=True)

# Mail, for the alerts to ADMINS (integrations.alerts). EMAIL_URL as django-environ
# reads it, e.g. smtp+tls://user:password@smtp.example.com:587; the default prints
# each mail on standard output (tests use Django's in-memory outbox).
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
# "Name <address>, Name <address>": who receives the alerts; nobody when empty.
ADMINS = getaddresses([env.str("ADMINS", default="")])
SERVER_EMAIL = env.str("SERVER_EMAIL", default="crmsync@localhost")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default=SERVER_EMAIL)
EMAIL_SUBJECT_PREFIX = env.str("EMAIL_SUBJECT_PREFIX", default="[crmsync] ")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
