import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")
application = get_wsgi_application()

from django.conf import settings  # noqa: E402  (settings exist once the application is built)

if settings.PRODUCTION:
    from governance.checks import log_deployment_warnings

    log_deployment_warnings()
