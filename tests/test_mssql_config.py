"""What a table config may ask of an archive on SQL Server, refused when it is saved."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import connections

from governance.models import TableConfig

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_a_batch_size_the_procedures_refuse_is_refused_by_the_config(demo, monkeypatch):
    config = TableConfig.objects.get(table_name="PriceHistory")
    config.batch_size = 5000
    config.full_clean()  # an archive on SQLite takes it

    monkeypatch.setattr(connections["archive"], "vendor", "microsoft")  # the archive on SQL Server
    with pytest.raises(ValidationError) as caught:
        config.full_clean()
    assert caught.value.message_dict["batch_size"] == ["At most 4,000 rows per batch on this archive database."]

    config.batch_size = 4000
    config.full_clean()
