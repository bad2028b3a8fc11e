"""Disposition review policy: approvals needed per table type (fails closed)."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from governance.models import TableType

MAX_APPROVALS = 5


def review_policy() -> dict[str, int]:
    """settings.ARCHIVAL_DISPOSAL_POLICY, validated: every table type present, 0..5."""
    policy = getattr(settings, "ARCHIVAL_DISPOSAL_POLICY", None)
    if not isinstance(policy, dict):
        raise ImproperlyConfigured("ARCHIVAL_DISPOSAL_POLICY must be a dict of table type -> approvals needed")

    out = {}
    for table_type in TableType.values:
        value = policy.get(table_type)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_APPROVALS:
            raise ImproperlyConfigured(
                f"ARCHIVAL_DISPOSAL_POLICY[{table_type!r}] must be an integer from 0 to {MAX_APPROVALS}, not {value!r}"
            )
        out[table_type] = value
    unknown = set(policy) - set(TableType.values)
    if unknown:
        raise ImproperlyConfigured(f"ARCHIVAL_DISPOSAL_POLICY names unknown table types {sorted(unknown)}")
    return out


def required_approvals(table_type: str) -> int:
    return review_policy()[table_type]
