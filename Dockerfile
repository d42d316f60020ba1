# Production image: gunicorn serves the admin, WhiteNoise the static files.
# The same image runs the django-q2 worker (`python manage.py qcluster`) and the
# local CRM sandbox (`python manage.py crm_sandbox`, the crm_sandbox app).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system app && useradd --system --gid app --home-dir /app --shell /usr/sbin/nologin app

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY --chown=app:app . .
# collectstatic needs settings to load; these throwaway values never reach run time.
RUN SECRET_KEY=collectstatic-only DATABASE_URL=sqlite:////tmp/build.sqlite3 \
    python manage.py collectstatic --no-input --verbosity 0

USER app
EXPOSE 8000
CMD ["gunicorn", "crmsync_project.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
