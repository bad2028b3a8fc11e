"""Admin registrations for the governance app, one module per area.

Disposal review (``disposal``) and the schedule (``schedule``) are written by
their own areas; they are imported here when present.
"""

from importlib import import_module
from importlib.util import find_spec

from django.contrib import admin

from governance.admin import audit, configs, dashboard, holds, lookups, pacing, queue, runs, schedule

for _name in ("disposal", "schedule"):
    if find_spec(f"governance.admin.{_name}") is not None:
        import_module(f"governance.admin.{_name}")

# The lists need the width at 1366 px more than a second menu: the dashboard
# and the breadcrumbs lead to every model.
admin.site.enable_nav_sidebar = False
admin.site.site_header = "Archival governance"
admin.site.site_title = "Archival governance"
admin.site.index_title = "Dashboard"
# "View site" leads to the archive search, the site's other half.
admin.site.site_url = "/search/"

dashboard.install(admin.site)
queue.install(admin.site)
schedule.install(admin.site)
# Last: it wraps whatever admins the modules above registered.
lookups.install(admin.site)

__all__ = ["audit", "configs", "dashboard", "holds", "lookups", "pacing", "queue", "runs", "schedule"]
