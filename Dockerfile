# Production image: gunicorn serves the admin, WhiteNoise the static files.
# The same image runs the django-q2 worker (`python manage.py qcluster`) and the
# local CRM sandbox (`python manage.py crm_sandbox`, the crm_sandbox app).
#
# In stages, so that the image holds only what runs: `deps` installs the requirements
# into a virtual environment, `static` collects the static files with it, `venv` is that
# environment without the packages' own copies of their static files, and the last
# stage copies the environment, the code and the collected files. pip, its caches and
# anything a build needed stay behind. The dependency stages are cached until
# requirements.txt changes.

FROM python:3.11-slim AS deps

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
# pip compiles what it installs (the image runs without writing bytecode), then
# removes itself: nothing installs packages at run time. The translations go too
# (about 20 MB, most of Django's size): crmsync has no LocaleMiddleware, so every page
# is in LANGUAGE_CODE, English, whose messages are the source strings. The
# translation sources (.po) are never read at run time.
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt \
 && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools \
 && find /opt/venv -path '*/locale/*' \( -name '*.po' -o -name '*.mo' \) -not -path '*/locale/en/*' -delete \
 && find /opt/venv -path '*/locale/*' -name '*.po' -delete


FROM deps AS static

WORKDIR /app
COPY . .
# collectstatic needs settings to load; these throwaway values never reach run time.
RUN SECRET_KEY=collectstatic-only DATABASE_URL=sqlite:////tmp/build.sqlite3 \
    /opt/venv/bin/python manage.py collectstatic --no-input --verbosity 0


FROM deps AS venv

# WhiteNoise serves the collected copies (STATIC_ROOT); with DEBUG off nothing reads the
# packages' own (about 13 MB: the API schema UI's bundles, the admin's, DRF's).
RUN find /opt/venv -type d -name static -prune -exec rm -rf {} +


FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    WEB_CONCURRENCY=3

# The user the processes run as has a home of its own: gunicorn puts its control
# socket in ~/.gunicorn, which it could not create while home was the root-owned /app.
RUN groupadd --system app \
 && useradd --system --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app

COPY --from=venv /opt/venv /opt/venv
WORKDIR /app
# The code belongs to root: the processes read it and cannot rewrite it. It is
# compiled here because they cannot write bytecode next to it either.
COPY . .
COPY --from=static /app/staticfiles /app/staticfiles
RUN python -m compileall -q -j 0 /app

USER app
EXPOSE 8000
# Workers: WEB_CONCURRENCY (gunicorn reads it), 3 by default.
CMD ["gunicorn", "crmsync_project.wsgi:application", "--bind", "0.0.0.0:8000", "--access-logfile", "-"]
