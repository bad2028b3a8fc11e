from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("archival.health")),  # /healthz: no login, no data (issue 4)
    path("", include("archival.urls")),
]
