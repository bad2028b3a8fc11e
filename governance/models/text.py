"""Free text that people type (hold reasons, release reasons, review comments): one length limit.

``max_length`` on a TextField only reaches the admin form, so the limit is
also a field validator (``full_clean``: the engine's functions, commands,
imports) and a named CHECK constraint (any other write: a queryset update,
raw SQL). 4,000 characters is a long paragraph, and the largest
``nvarchar(n)`` before SQL Server's ``nvarchar(max)``.
"""

from __future__ import annotations

from django.core.validators import MaxLengthValidator
from django.db import models
from django.db.models.functions import Length
from django.db.models.lookups import LessThanOrEqual

FREE_TEXT_MAX_LENGTH = 4000


def free_text_field(**kwargs) -> models.TextField:
    """A TextField limited to FREE_TEXT_MAX_LENGTH in the form and in ``full_clean``."""
    return models.TextField(
        max_length=FREE_TEXT_MAX_LENGTH, validators=[MaxLengthValidator(FREE_TEXT_MAX_LENGTH)], **kwargs
    )


def free_text_limit(name: str, field: str) -> models.CheckConstraint:
    """The database's own refusal of ``field`` longer than FREE_TEXT_MAX_LENGTH."""
    return models.CheckConstraint(
        condition=LessThanOrEqual(Length(field), FREE_TEXT_MAX_LENGTH),
        name=name,
        violation_error_message=f"{field} is limited to {FREE_TEXT_MAX_LENGTH} characters.",
    )
