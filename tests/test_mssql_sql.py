"""The SQL Server install scripts, checked without a server (issue 8).

A DBA reviews sql/ and runs it with sqlcmd; we cannot run it here, so every
script must at least parse as T-SQL, carry its header, and agree with what
the Python side calls and fills in.
"""

from __future__ import annotations

import re

import pytest

from archival.backends.mssql import procedures, sqltypes, templates
from tests.mssql_fixtures import SQL_DIR, parse_errors, procedure_signatures, sql_files

SCRIPTS = sql_files()


def test_the_install_scripts_are_numbered_and_present():
    names = [p.name for p in SCRIPTS]
    assert names == sorted(names)
    assert all(re.match(r"^\d\d_[a-z_]+\.sql$", n) for n in names), names
    for needed in (
        "databases",
        "archive_schemas",
        "roles",
        "helper_functions",
        "templates",
        "provisioning",
        "procedures",
    ):
        assert any(needed in n for n in names), f"no script for {needed}"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_every_script_parses_as_tsql(path):
    assert parse_errors(path.read_text()) == []


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_every_script_starts_with_purpose_parameters_and_safety_notes(path):
    header = path.read_text().split("*/", 1)[0]
    assert header.startswith("/*")
    for section in ("Purpose", "Parameters", "Safety notes"):
        assert re.search(rf"^{section}\b", header, re.MULTILINE), f"{path.name} lacks {section}"


def test_the_parse_check_catches_broken_tsql():
    # The checker itself must be able to fail (a missing END, a stray keyword).
    assert parse_errors("CREATE OR ALTER PROCEDURE archival.x AS BEGIN SELECT 1 FROM WHERE;\nGO\n")
    assert parse_errors("SELECT 1;\nGO\nDELETE TOP FROM;\nGO\n")


def test_scripts_are_rerunnable():
    # Idempotence by construction: CREATE only behind an existence check,
    # code objects as CREATE OR ALTER, never a DROP of data.
    for path in SCRIPTS:
        text = path.read_text()
        assert not re.search(r"^\s*DROP\s+(TABLE|DATABASE|SCHEMA)", text, re.MULTILINE | re.IGNORECASE), path.name
        for m in re.finditer(r"^\s*CREATE\s+(PROCEDURE|FUNCTION|TRIGGER|VIEW)\b", text, re.MULTILINE | re.IGNORECASE):
            pytest.fail(f"{path.name}: use CREATE OR ALTER ({m.group(0).strip()})")


def test_archive_batch_moves_with_an_ordered_cte_and_explicit_output_columns():
    body = templates.load_templates()["archive_batch"]
    assert "WITH eligible AS (" in body and "SELECT TOP (@batch_size)" in body
    assert "ORDER BY {KEY_COLUMNS_S}" in body
    assert "OUTPUT {COLUMNS_DELETED}" in body and "deleted.*" not in body
    assert "DELETE TOP" not in body


def test_the_procedures_are_atomic_and_capped_below_lock_escalation():
    procs = (SQL_DIR / "07_procedures.sql").read_text()
    for name in ("usp_archive_batch", "usp_dispose_batch"):
        body = procs.split(f"PROCEDURE archival.{name}", 1)[1].split("\nGO\n", 1)[0]
        assert "SET XACT_ABORT ON;" in body and "BEGIN TRY" in body and "BEGIN CATCH" in body
        assert "@batch_size > 4000" in body
        assert "ROLLBACK TRANSACTION" in body
    dispose = procs.split("PROCEDURE archival.usp_dispose_batch", 1)[1]
    # The hold lock is taken inside the disposal transaction, before the re-check.
    assert (
        dispose.index("BEGIN TRANSACTION")
        < dispose.index("EXEC archival.usp_lock_holds")
        < dispose.index("sp_executesql")
    )


def test_dynamic_sql_concatenates_identifiers_only_through_quotename():
    procs = (SQL_DIR / "07_procedures.sql").read_text()
    builder = procs.split("PROCEDURE archival.usp_build_sql", 1)[1].split("\nGO\n", 1)[0]
    identifiers = (
        r"(source_database|schema_name|table_name|archive_schema|date_column|contract_\w+|hold_contract_column)"
    )
    assert not re.search(r"\+\s*@" + identifiers + r"\b", builder)
    assert not re.search(r"@" + identifiers + r"\s*\+", builder)
    assert builder.count("QUOTENAME(") >= 15


class TestContract:
    """What archival/backends/mssql/procedures.py passes == what the procedures declare."""

    declared = procedure_signatures(SQL_DIR / "07_procedures.sql")

    @pytest.mark.parametrize("procedure", sorted(procedures.PROCEDURES))
    def test_python_passes_every_parameter_with_its_type_and_direction(self, procedure):
        python = [(p.name, p.sql_type.replace(" ", "").lower(), p.output) for p in procedures.PROCEDURES[procedure]]
        assert self.declared[procedure] == python

    def test_every_runtime_procedure_has_a_python_caller(self):
        runtime = {n for n in self.declared if n != "archival.usp_build_sql"}
        assert runtime == set(procedures.PROCEDURES)

    def test_the_call_text_uses_exec_output_and_parses(self):
        sql, params = procedures.call_sql(
            "archival.usp_archive_batch",
            {
                "run_id": 1, "config_id": 2, "source_alias": "SourceDB1", "schema_name": "dbo",
                "table_name": "Position", "threshold": "2024-01-31", "years_retention": 10,
                "batch_size": 4000, "batch_no": 1, "key_after": None,
            },
        )  # fmt: skip
        assert sql.startswith("DECLARE @o1 int; DECLARE @o2 int; DECLARE @o3 nvarchar(max); ")
        assert "@rows_moved = @o1 OUTPUT" in sql and sql.endswith("SELECT @o1, @o2, @o3;")
        assert params == [1, 2, "SourceDB1", "dbo", "Position", "2024-01-31", 10, 4000, 1, None]
        assert parse_errors(sql.replace("%s", "NULL")) == []

    def test_a_call_leaves_the_session_settings_alone_and_each_procedure_sets_nocount_itself(self):
        # A SET in the batch stays on for the connection; one made inside a
        # procedure reverts when it returns (SET NOCOUNT,
        # https://learn.microsoft.com/sql/t-sql/statements/set-nocount-transact-sql).
        for procedure in procedures.PROCEDURES:
            inputs = {p.name: None for p in procedures.PROCEDURES[procedure] if not p.output}
            assert "SET " not in procedures.call_sql(procedure, inputs)[0].upper()
        procs = (SQL_DIR / "07_procedures.sql").read_text()
        bodies = re.split(r"CREATE OR ALTER PROCEDURE ", procs)[1:]
        for body in bodies:
            name = body.split()[0]
            # Among the SET statements that open the body, before any work.
            opening = r"\bAS\s+BEGIN\s+(?:SET\s[^;]*;\s*)*?SET\s+NOCOUNT\s+ON\s*;"
            assert re.search(opening, body, re.IGNORECASE), name

    def test_a_call_with_a_missing_or_unknown_parameter_is_refused(self):
        with pytest.raises(procedures.ProcedureCallError):
            procedures.call_sql("archival.usp_dispose_batch", {"source_alias": "x"})
        with pytest.raises(procedures.ProcedureCallError):
            procedures.call_sql("archival.usp_lock_holds", {"anything": 1})

    def test_python_fills_exactly_the_tokens_the_procedure_fills(self):
        procs = (SQL_DIR / "07_procedures.sql").read_text()
        tsql_tokens = set(re.findall(r"REPLACE\(@sql, N'\{(\w+)\}'", procs))
        template_tokens = set()
        for body in templates.load_templates().values():
            template_tokens |= set(re.findall(r"\{(\w+)\}", body))
        spec = templates.ProcedureTable(
            "S", "S", "dbo", "T", "archive_s", "DATE_BASED", ["a"], [templates.KeyColumn("a", "int")], "a"
        )
        python_tokens = set(templates.tokens_for(spec))
        assert template_tokens == tsql_tokens == python_tokens
        # ... and in the same order (REPLACE of {KEY_COLUMNS} must not eat {KEY_COLUMNS_S}).
        assert re.findall(r"REPLACE\(@sql, N'\{(\w+)\}'", procs) == list(templates.tokens_for(spec))

    def test_the_hold_check_reads_the_hold_model_columns(self):
        from governance.models import Hold, HoldKey

        body = (
            templates.load_templates()["dispose_batch"]
            + templates.tokens_for(
                templates.ProcedureTable(
                    "S",
                    "S",
                    "dbo",
                    "T",
                    "a",
                    "DATE_BASED",
                    ["a", "c"],
                    [templates.KeyColumn("a", "int")],
                    "a",
                    hold_contract_column="c",
                )
            )["HOLD_CONTRACT_MATCH"]
        )
        hold_columns = {f.column for f in Hold._meta.concrete_fields}
        used = set(re.findall(r"\bh\.\[(\w+)\]", body))
        assert used <= hold_columns and {"released_at", "hold_until", "scope", "contract_value"} <= used
        assert set(re.findall(r"\bk\.\[(\w+)\]", body)) <= {f.column for f in HoldKey._meta.concrete_fields}
        assert f"[{Hold._meta.db_table}]" in body and f"[{HoldKey._meta.db_table}]" in body
        scopes = set(re.findall(r"h\.\[scope\] = N'(\w+)'", body))
        from governance.models.archive import HoldScope

        assert scopes == set(HoldScope.values)

    def test_the_ledger_insert_matches_the_batch_ledger_model(self):
        from governance.models import BatchLedger

        procs = (SQL_DIR / "07_procedures.sql").read_text()
        m = re.search(r"INSERT INTO \[dbo\]\.\[(\w+)\] \((.*?)\)", procs, re.DOTALL)
        assert m.group(1) == BatchLedger._meta.db_table
        inserted = {c.strip() for c in m.group(2).split(",")}
        required = {f.column for f in BatchLedger._meta.concrete_fields if not f.primary_key}
        assert inserted == required


class TestPythonTwins:
    """The fragments archival.fn_* build, as their Python twins produce them."""

    def test_keyset_predicate_is_the_expanded_or_form(self):
        assert templates.keyset_predicate(["basketId", "positionId", "businessDate"], "s") == (
            "s.[basketId] > @k1 OR (s.[basketId] = @k1 AND (s.[positionId] > @k2 OR "
            "(s.[positionId] = @k2 AND (s.[businessDate] > @k3))))"
        )
        assert templates.keyset_predicate(["id"], "a") == "a.[id] > @k1"

    def test_quoting_doubles_closing_brackets(self):
        assert sqltypes.quote("we]ird") == "[we]]ird]"
        assert templates.column_list(["a]b", "c"], "s.") == "s.[a]]b], s.[c]"

    def test_type_text_matches_fn_type_sql(self):
        assert sqltypes.type_sql("nvarchar", 80, 0, 0) == "nvarchar(40)"
        assert sqltypes.type_sql("varchar", -1, 0, 0) == "varchar(max)"
        assert sqltypes.type_sql("decimal", 9, 18, 6) == "decimal(18,6)"
        assert sqltypes.type_sql("datetime2", 8, 27, 3) == "datetime2(3)"
        assert sqltypes.type_sql("xml", -1, 0, 0) is None

    def test_keys_travel_as_json_arrays_of_strings(self):
        import datetime as dt
        from decimal import Decimal

        assert procedures.encode_key([7, dt.date(2024, 2, 29), Decimal("1.50")]) == '["7", "2024-02-29", "1.50"]'
        assert procedures.decode_key('["7","2024-02-29"]') == ["7", "2024-02-29"]
        assert procedures.encode_key(None) is None
