# The archival governance app: web (gunicorn), qcluster workers and the
# archival command all run this image. No secret is baked in: every setting
# comes from the environment (docker-compose or Kubernetes Secrets).
FROM python:3.11-slim-bookworm

# mssql-python bundles the SQL Server driver but needs the ODBC driver
# manager (libodbc2), libltdl7 and the Kerberos libraries; sqlcmd for the
# install scripts comes from the separate sql-init service, not this image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libodbc2 libltdl7 libkrb5-3 libgssapi-krb5-2 \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    ARCHIVAL_DATA_DIR=/var/lib/archival STATIC_ROOT=/app/staticfiles
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt gunicorn==23.0.0
COPY . .
RUN useradd --system --uid 10001 archival && mkdir -p /var/lib/archival /app/staticfiles \
    && SECRET_KEY=collectstatic-only-not-a-secret-0123456789 python manage.py collectstatic --noinput \
    && chown -R archival /var/lib/archival
USER archival
EXPOSE 8000
CMD ["gunicorn", "governance.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "60"]
