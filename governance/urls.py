from django.contrib import admin
from django.shortcuts import redirect
from django.urls import include, path, reverse
from django.views.decorators.http import require_safe


@require_safe
def home(request):
    """``/``: staff to the admin dashboard, everyone else (readers, anonymous) to the search."""
    if request.user.is_authenticated and request.user.is_staff:
        return redirect(reverse("admin:index"))
    return redirect(reverse("search:index"))


urlpatterns = [
    path("", home, name="home"),
    path("admin/", admin.site.urls),
    path("", include("archival.health")),  # /healthz: no login, no data
    path("", include("archival.urls")),
]
