"""Permissions for pages that are not about one model's rows.

The read-only archive search reads archive tables that have no Django model,
so its permissions hang off this table-less model. Roles (governance.roles)
grant them; the search views check them.
"""

from __future__ import annotations

from django.db import models


class ArchiveSearchAccess(models.Model):
    """Carrier of the archive search permissions; it has no table and no rows."""

    class Meta:
        # No table: the model exists only so its permissions get a content type.
        managed = False
        default_permissions = ()
        permissions = [
            ("view_archive_search", "Can search archived rows"),
            ("export_archive_search", "Can export archived rows found by a search"),
        ]
        verbose_name = "archive search access"

    def __str__(self) -> str:
        return "archive search access"
