"""The engine drives SQL Server through the stored procedures, with their exact parameters.

No SQL Server runs here, so the connection is a recording stand-in: it keeps
the batch text and parameters the engine sends and answers the final SELECT
of OUTPUT parameters the way SQL Server would. The procedures' own signatures
are checked against sql/07_procedures.sql by tests/test_mssql_sql.py.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from archival.engine import mssql_path
from tests.mssql_fixtures import backend_answering


def spec_for(backend):
    config = SimpleNamespace(pk=7, source_db="SourceDB1", schema_name="dbo", table_name="Position", effective_years=10)
    return SimpleNamespace(
        mode="same_server",
        archive=backend,
        config=config,
        threshold=dt.date(2024, 11, 25),
        label="SourceDB1.dbo.Position",
        children=[SimpleNamespace(table="PositionLeg", threshold=dt.date(2024, 10, 25))],
    )


def test_a_batch_is_one_exec_of_usp_archive_batch_with_outputs_read_back():
    backend, cursor = backend_answering((4000, 2, '["12","7","2024-01-31"]'))
    spec = spec_for(backend)

    outcome = mssql_path.move_batch(spec, run_id=3, batch_no=5, low=[12, 6, "2024-01-31"], size=4000)

    ((sql, params),) = cursor.sent
    assert "EXEC archival.usp_archive_batch @run_id = %s, @config_id = %s" in sql
    assert "@rows_moved = @o1 OUTPUT, @rows_skipped = @o2 OUTPUT, @key_high = @o3 OUTPUT" in sql
    assert params[:9] == [3, 7, "SourceDB1", "dbo", "Position", dt.date(2024, 11, 25), 10, 4000, 5]
    assert outcome.moved == 4002 and outcome.skipped_identical == 2
    assert outcome.high == ["12", "7", "2024-01-31"]


def test_an_empty_batch_ends_the_table():
    backend, _ = backend_answering((0, 0, None))
    outcome = mssql_path.move_batch(spec_for(backend), run_id=3, batch_no=9, low=None, size=4000)
    assert outcome.high is None and outcome.moved == 0


def test_mark_calls_usp_mark_table_and_reads_counts_and_bounds():
    backend, cursor = backend_answering((1234, 5, '["1"]', '["99"]'))
    eligible, nulls, low, high = mssql_path.mark_counts(spec_for(backend))
    ((sql, params),) = cursor.sent
    assert "EXEC archival.usp_mark_table" in sql
    # The lock wait bound, and each child's threshold so a parent counts as
    # the rows its children will leave behind (sql/07's @child_thresholds).
    assert params == ["SourceDB1", "dbo", "Position", dt.date(2024, 11, 25), 5000, '{"PositionLeg": "2024-10-25"}']
    assert (eligible, nulls, low, high) == (1234, 5, ["1"], ["99"])


def test_a_batch_over_the_procedures_limit_fails_the_table_not_the_run():
    from archival.engine.errors import TableError

    backend, cursor = backend_answering()
    with pytest.raises(TableError, match=r"batch_size must be 1\.\.4000"):
        mssql_path.move_batch(spec_for(backend), run_id=1, batch_no=1, low=None, size=5000)
    assert cursor.sent == []  # nothing reached SQL Server


def test_a_procedure_call_leaves_the_session_as_it_found_it():
    backend, cursor = backend_answering((0, 0, None), nocount=False)
    mssql_path.move_batch(spec_for(backend), run_id=3, batch_no=9, low=None, size=4000)
    assert cursor.nocount is False


@pytest.mark.parametrize("nocount", [True, False], ids=["NOCOUNT ON", "NOCOUNT OFF"])
def test_a_row_count_is_read_whatever_the_session_nocount(nocount):
    """@@ROWCOUNT is not affected by NOCOUNT; cursor.rowcount is -1 under it.

    https://learn.microsoft.com/sql/t-sql/functions/rowcount-transact-sql
    """
    backend, cursor = backend_answering(lambda cur: (cur.changed,), nocount=nocount, changed=1)
    with backend.connection.cursor() as cur:
        changed = backend.execute_counted(cur, "UPDATE [t] SET [a] = %s WHERE [id] = %s", [1, 2])
    assert changed == 1
    assert cursor.nocount is nocount


def test_the_procedures_get_the_source_alias_not_its_database_name(monkeypatch):
    """The docs' example: alias SourceDB1 on database Sales; the registry is keyed by the alias."""
    from django.conf import settings

    monkeypatch.setitem(
        settings.DATABASES, "SourceDB1", {**settings.DATABASES["SourceDB1"], "ENGINE": "mssql", "NAME": "Sales"}
    )
    backend, cursor = backend_answering((1, 0, None, None), (0, 0, None))
    spec = spec_for(backend)

    mssql_path.mark_counts(spec)
    mssql_path.move_batch(spec, run_id=3, batch_no=1, low=None, size=4000)

    (_, mark_params), (_, move_params) = cursor.sent
    assert mark_params[0] == "SourceDB1" and move_params[2] == "SourceDB1"
    assert "Sales" not in mark_params + move_params


def test_the_provisioning_call_names_both_the_alias_and_the_database():
    from archival.backends.mssql import templates

    table = templates.ProcedureTable(
        "SourceDB1", "Sales", "dbo", "Position", "archive_sourcedb1", "DATE_BASED", ["id"],
        [templates.KeyColumn("id", "int")], "businessDate",
    )  # fmt: skip
    call = templates.provision_call(table)
    assert "@source_alias = N'SourceDB1', @source_database = N'Sales'" in call
    assert templates.tokens_for(table)["SOURCE"] == "[Sales].[dbo].[Position]"
