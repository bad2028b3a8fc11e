"""Watched replicas: the Archival administrator names them; batches pause while they lag."""

from __future__ import annotations

from django.contrib import admin

from governance.models import ReplicaWatch


@admin.register(ReplicaWatch)
class ReplicaWatchAdmin(admin.ModelAdmin):
    list_display = ("name", "source_db", "measured_on", "connection_kind", "connection", "max_lag_seconds", "is_active")
    list_filter = ("source_db", "measured_on", "is_active")
    search_fields = ("name", "source_db")
    fieldsets = (
        (None, {"fields": ("source_db", "name", "measured_on", "is_active")}),
        (
            "Connection (never a connection string: an alias or a variable name)",
            {"fields": ("connection_kind", "connection")},
        ),
        ("Bounds", {"fields": ("max_lag_seconds", "max_queue_kb")}),
    )

    # A watch is switched off (``is_active``), not deleted: the change history stays.
    def has_delete_permission(self, request, obj=None):
        return False
