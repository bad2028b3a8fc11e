"""``/healthz``: a JSON liveness answer for load balancers and uptime checks.

Deliberately without login and without data: it says whether the service is
up (control database reachable and nothing CRITICAL), the state of each
component (web, control database, workers where a cluster is configured) and
how old the last finished run is. The findings themselves (table names, run ids) are
for ``manage.py archival status --check``, behind the operator's shell.
"""

from __future__ import annotations

from django.http import JsonResponse
from django.urls import path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from archival.monitoring import CRITICAL, health_check


@never_cache
@require_GET
def healthz(request):
    check = health_check()
    up = check.code < CRITICAL
    return JsonResponse(
        {
            "status": "up" if up else "down",
            "components": check.components,
            "last_run_age_seconds": check.last_run_age_seconds,
        },
        status=200 if up else 503,
    )


# Included from governance/urls.py, so the one route lives next to its view.
urlpatterns = [path("healthz", healthz, name="healthz")]
