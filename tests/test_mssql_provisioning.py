"""On SQL Server a DBA provisions archive tables; the runtime login creates none.

Mark on the procedure path meets a table that was never provisioned: that
table fails with the provisioning call to run, and no DDL is sent.
"""

from __future__ import annotations

from datetime import date

import pytest

from archival.engine import phases
from archival.engine.errors import TableError
from archival.engine.spec import build_spec
from governance.models import TableConfig
from tests.mssql_fixtures import backend_answering

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_mark_of_an_unprovisioned_table_names_the_provisioning_call_and_creates_nothing(demo):
    config = TableConfig.objects.get(table_name="PriceHistory")
    spec = build_spec(config, date(2026, 11, 25))
    # The archive is SQL Server: its catalog has no such table (describe reads no column).
    spec.archive, cursor = backend_answering([])
    spec.mode = "same_server"

    with pytest.raises(TableError) as caught:
        phases.mark(spec, None, "host:1:a")

    message = str(caught.value)
    assert "provisioned by a DBA" in message
    assert "EXEC archival_admin.usp_provision_table @source_alias = N'SourceDB3'" in message
    assert f"@table_name = N'{config.table_name}'" in message
    assert not [sql for sql, _ in cursor.sent if sql.lstrip().upper().startswith(("CREATE", "ALTER"))]
