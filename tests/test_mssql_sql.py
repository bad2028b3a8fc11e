"""The SQL Server install scripts, checked without a server.

A DBA reviews sql/ and runs it with sqlcmd; we cannot run it here, so every
script must at least parse as T-SQL, carry its header, and agree with what
the Python side calls and fills in.
"""

from __future__ import annotations

import json
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
    for name in ("usp_archive_batch", "usp_dispose_batch", "usp_restore_batch"):
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
    # The restore selection: the names a request gives (column, key_column,
    # child_table, ref_column) enter the text only QUOTENAME'd, after the
    # registry and the catalog confirmed them; values never (JSON paths).
    selection = procs.split("PROCEDURE archival.usp_build_restore_selection", 1)[1].split("\nGO\n", 1)[0]
    names = r"(column|ref_column|child_table|table|archive_schema|source_database|schema_name|table_name)"
    assert not re.search(r"\+\s*@" + names + r"\b", selection)
    assert not re.search(r"@" + names + r"\s*\+", selection)
    assert "JSON_VALUE(@selection, N''' + @path" in selection


class TestContract:
    """What archival/backends/mssql/procedures.py passes == what the procedures declare."""

    declared = procedure_signatures(SQL_DIR / "07_procedures.sql")
    required = procedure_signatures(SQL_DIR / "07_procedures.sql", with_defaults=False)

    @pytest.mark.parametrize("procedure", sorted(procedures.PROCEDURES))
    def test_python_passes_every_parameter_with_its_type_and_direction(self, procedure):
        # Parameters with a default (@lock_timeout_ms) may be left to it.
        python = [(p.name, p.sql_type.replace(" ", "").lower(), p.output) for p in procedures.PROCEDURES[procedure]]
        assert python in (self.declared[procedure], self.required[procedure])

    def test_every_runtime_procedure_has_a_python_caller(self):
        # The builders are called by the batch procedures, not by Python.
        builders = {"archival.usp_build_sql", "archival.usp_build_restore_selection"}
        runtime = {n for n in self.declared if n not in builders}
        assert runtime == set(procedures.PROCEDURES)

    def test_the_call_text_uses_exec_output_and_parses(self):
        sql, params = procedures.call_sql(
            "archival.usp_archive_batch",
            {
                "run_id": 1, "config_id": 2, "source_alias": "SourceDB1", "schema_name": "dbo",
                "table_name": "Position", "threshold": "2024-01-31", "years_retention": 10,
                "batch_size": 4000, "batch_no": 1, "key_after": None, "lock_timeout_ms": 5000,
            },
        )  # fmt: skip
        assert sql.startswith("DECLARE @o1 int; DECLARE @o2 int; DECLARE @o3 nvarchar(max); ")
        assert "@rows_moved = @o1 OUTPUT" in sql and sql.endswith("SELECT @o1, @o2, @o3;")
        assert params == [1, 2, "SourceDB1", "dbo", "Position", "2024-01-31", 10, 4000, 1, None, 5000]
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
        # usp_restore_batch fills the selection's two tokens after usp_build_sql.
        restore_tokens = re.findall(r"REPLACE\(@statement, N'\{(\w+)\}'", _procedure("usp_restore_batch"))
        selection_tokens = templates.restore_selection(spec, {"kind": "RUN", "archive_run_id": 1})
        assert restore_tokens == list(selection_tokens) and not tsql_tokens & set(restore_tokens)
        assert template_tokens == tsql_tokens | set(restore_tokens) == python_tokens | set(selection_tokens)
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

    def test_a_binary_key_travels_as_the_hex_the_procedures_convert_back(self):
        """CONVERT(varbinary, text, 2) reads hex digits without 0x (documented style 2);
        a CAST of text to binary would take the text's own UTF-16 bytes."""
        value = b"\x00\x0a\xff\x7f"
        (sent,) = json.loads(procedures.encode_key([value]))
        assert sent == "000aff7f" and bytes.fromhex(sent) == value
        json_value = "JSON_VALUE(@j, N'$[0]')"
        binary, number = templates.KeyColumn("id", "varbinary(16)"), templates.KeyColumn("id", "int")
        assert templates.json_key_value(binary, json_value) == f"CONVERT(varbinary(16), {json_value}, 2)"
        assert templates.json_key_value(number, json_value) == f"CAST({json_value} AS int)"
        # The procedure builds the same DECLAREs (sql/07, the restore selection's key range).
        procs = _script("07_")
        for end in ("key_low", "key_high"):
            json_value = (
                f"JSON_VALUE(@selection, N''' + @path + N'.{end}[' + CONVERT(nvarchar(10), key_ordinal - 1) + N']'')"
            )
            assert (
                "+ N' = ' + CASE WHEN type_name IN (N'binary', N'varbinary')\n"
                "                        -- hex without 0x (style 2): a CAST would take the text's own bytes\n"
                "                        THEN N'CONVERT(' + archival.fn_type_sql(type_name, max_length, [precision], scale)"
                f" + N', {json_value}, 2);'\n"
                f"                        ELSE N'CAST({json_value} AS '"
            ) in procs, end


def _script(name: str) -> str:
    return next(p for p in SCRIPTS if p.name.startswith(name)).read_text()


def _procedure(name: str) -> str:
    procs = _script("07_")
    return procs.split(f"CREATE OR ALTER PROCEDURE archival.{name}\n", 1)[1].split("\nGO\n", 1)[0]


class TestSecurity:
    """sql/03 and sql/08: who may do what, in which database."""

    def test_the_app_login_reads_each_source_catalog_and_nothing_else(self):
        # Catalog views show only objects the user has some permission on:
        # https://learn.microsoft.com/en-us/sql/relational-databases/security/metadata-visibility-configuration/
        # so build_spec's sys.columns/sys.foreign_keys reads need VIEW DEFINITION
        # in each source database, and the user must exist there at all.
        roles = _script("03_")
        loop = roles.split("DECLARE sources CURSOR", 1)[1]
        assert "CREATE USER ' + @app_user + N' FOR LOGIN ' + @app_user" in loop
        assert "GRANT VIEW DEFINITION TO ' + @app_user" in loop
        assert not re.search(r"GRANT\s+(SELECT|DELETE|INSERT|UPDATE)[^;]*@app_user", loop)

    def test_signed_procedures_run_as_the_caller_without_authenticate(self):
        # Module signing adds the certificate user's rights to the caller's
        # token; AUTHENTICATE only matters for an EXECUTE AS context:
        # https://learn.microsoft.com/dotnet/framework/data/adonet/sql/signing-stored-procedures-in-sql-server
        for name in ("03_", "08_"):
            assert not re.search(r"^\s*GRANT AUTHENTICATE", _script(name), re.MULTILINE)
        assert "EXECUTE AS" not in _script("07_")

    def test_the_archive_schema_prefix_matches_its_underscore_literally(self):
        roles = _script("03_")
        assert "LIKE N'$(NamespacePrefix)%'" not in roles
        assert "N'_', N'[_]'" in roles

    def test_the_app_executes_the_procedures_and_deletes_nothing_in_the_archive(self):
        roles, grants = _script("03_"), _script("08_")
        assert "GRANT EXECUTE ON SCHEMA::[archival] TO [archival_executor];" in roles
        for text in (roles, grants):
            for m in re.finditer(r"GRANT ([A-Z, ]+) ON [^;]+ TO \[(archival_app_data|archival_executor)\]", text):
                assert "DELETE" not in m.group(1), m.group(0)
        assert "ALTER ROLE [db_datawriter] ADD MEMBER [$(AppLogin)]" not in roles.split("USE [$(ArchiveDb)];", 1)[1]
        # It reads the archive tables (their catalog for Mark, their keys for
        # disposal) and writes them only through the signed procedures.
        assert (
            "N'GRANT SELECT ON SCHEMA::' + QUOTENAME(@schema) + N' TO [archive_reader], [archival_app_data]'" in roles
        )
        assert not re.search(r"N'GRANT (INSERT|UPDATE|DELETE)[^']*SCHEMA::' \+ QUOTENAME\(@schema\)", roles)

    def test_the_reader_selects_exactly_the_archive_schemas_and_the_hold_tables_search_reads(self):
        from governance.models import Hold, HoldKey

        text = _script("03_") + _script("08_")
        grants = re.findall(r"GRANT (\w+) ON (?:OBJECT::)?([^ ;]+) TO \[archive_reader\];", text)
        objects = {obj for verb, obj in grants}
        assert {verb for verb, _ in grants} == {"SELECT"}
        assert objects == {f"[dbo].[{Hold._meta.db_table}]", f"[dbo].[{HoldKey._meta.db_table}]"}
        # ... plus SELECT on each archive schema, built in the cursor over them.
        assert "N'GRANT SELECT ON SCHEMA::' + QUOTENAME(@schema) + N' TO [archive_reader], [archival_app_data]'" in text


class TestProcedureSettings:
    """SET statements made in a procedure revert when it returns:
    https://learn.microsoft.com/en-us/previous-versions/sql/sql-server-2012/ms190356(v=sql.110)
    """

    @pytest.mark.parametrize(
        "name",
        [
            "usp_mark_table", "usp_archive_batch", "usp_dispose_batch", "usp_lock_holds", "usp_restore_batch",
            "usp_restore_compare",
        ],
    )  # fmt: skip
    def test_each_runtime_procedure_sets_its_own_session_options(self, name):
        body = _procedure(name)
        header, code = body.split("\nAS\nBEGIN\n", 1)
        assert re.search(r"@lock_timeout_ms int = \d+,?$", header, re.MULTILINE)
        assert code.index("SET NOCOUNT ON;") < code.index("SET DEADLOCK_PRIORITY LOW;")
        # SET LOCK_TIMEOUT: a blocked statement fails with 1222 instead of
        # waiting past the lease (https://learn.microsoft.com/en-us/previous-versions/SQL/SQL-server-2008/ms189470(v=sql.100)).
        assert "SET LOCK_TIMEOUT @lock_timeout_ms;" in code or "@LockTimeout = @lock_timeout_ms" in code

    def test_the_builder_sets_nocount_too(self):
        assert "SET NOCOUNT ON;" in _procedure("usp_build_sql")
        assert "SET NOCOUNT ON;" in _procedure("usp_build_restore_selection")

    def test_a_lock_timeout_rolls_the_batch_back_and_reaches_the_caller(self):
        for name in ("usp_archive_batch", "usp_dispose_batch", "usp_restore_batch"):
            catch = _procedure(name).split("BEGIN CATCH", 1)[1]
            assert "IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;" in catch and "THROW;" in catch

    def test_the_hold_lock_opens_the_callers_implicit_transaction(self):
        # Under IMPLICIT_TRANSACTIONS @@TRANCOUNT stays 0 until a statement
        # touches a table: https://learn.microsoft.com/sql/t-sql/statements/set-implicit-transactions-transact-sql
        body = _procedure("usp_lock_holds")
        opened = body.index("IF @@TRANCOUNT = 0 AND (@@OPTIONS & 2) = 2")
        assert "SELECT TOP (1) @opened = 1 FROM archival.sql_template;" in body[opened:]
        assert "SET IMPLICIT_TRANSACTIONS OFF" not in body  # this one joins the caller's transaction
        assert opened < body.index("THROW 50400") < body.index("sys.sp_getapplock")

    @pytest.mark.parametrize(
        "name", ["usp_mark_table", "usp_archive_batch", "usp_dispose_batch", "usp_restore_batch", "usp_restore_compare"]
    )
    def test_the_batch_procedures_own_their_transaction_under_implicit_transactions(self, name):
        # With IMPLICIT_TRANSACTIONS on, BEGIN TRANSACTION itself opens one
        # more (https://learn.microsoft.com/sql/t-sql/statements/set-implicit-transactions-transact-sql):
        # the commit would leave the implicit one open. Turned off for the
        # procedure's own scope (SET options revert when it returns).
        code = _procedure(name).split("\nAS\nBEGIN\n", 1)[1]
        off = code.index("SET IMPLICIT_TRANSACTIONS OFF;")
        assert off < code.index("BEGIN TRY")
        assert "BEGIN TRANSACTION;" not in code[:off]

    def test_dispose_takes_the_hold_lock_with_its_own_timeout(self):
        assert "EXEC archival.usp_lock_holds @lock_timeout_ms = @lock_timeout_ms;" in _procedure("usp_dispose_batch")


class TestDynamicSql:
    def test_the_catch_all_keyset_statements_recompile(self):
        for name, body in templates.load_templates().items():
            for statement in body.split(";"):
                if "@key_after IS NULL OR" in statement:
                    assert statement.rstrip().endswith("OPTION (RECOMPILE)"), name

    def test_temp_table_keys_and_archive_columns_keep_the_source_collation(self):
        # #temp table columns take tempdb's collation unless they say COLLATE
        # ("Collations and tempdb",
        # https://learn.microsoft.com/en-us/previous-versions/sql/sql-server-2012/ms190920(v=sql.110));
        # a mismatch in a join fails with error 468.
        for name in ("archive_batch", "dispose_batch", "restore_batch"):
            body = templates.load_templates()[name]
            temp = body.split("CREATE TABLE #", 1)[1].split(");", 1)[0]
            assert "{KEY_DEFS}" in temp and "char" not in temp
        builder = _procedure("usp_build_sql")
        assert "COALESCE(N' COLLATE ' + collation_name, N'')" in builder.split("SELECT @key_defs", 1)[1]
        provisioning = _script("06_")
        assert provisioning.count("COALESCE(N' COLLATE ' + collation_name, N'')") == 2  # CREATE and ALTER ADD
        spec = templates.ProcedureTable(
            "S", "S", "dbo", "T", "archive_s", "DATE_BASED", ["code", "d"],
            [templates.KeyColumn("code", "varchar(20)", "Latin1_General_CS_AS")], "d",
        )  # fmt: skip
        assert templates.tokens_for(spec)["KEY_DEFS"] == "[code] varchar(20) COLLATE Latin1_General_CS_AS NOT NULL"

    def test_a_null_statement_stops_instead_of_running_as_nothing(self):
        # QUOTENAME returns NULL above 128 characters, and NULL + text is NULL:
        # https://learn.microsoft.com/en-us/previous-versions/sql/sql-server-2012/ms176114(v=sql.110)
        assert "IF @sql IS NULL\n        THROW 50212" in _procedure("usp_build_sql")
        lines = _script("06_").splitlines()
        for i, line in enumerate(lines):
            if re.match(r"^\s*EXEC (sys\.sp_executesql|@exec) @sql;$", line):
                assert "IF @sql IS NULL THROW" in lines[i - 1], line
        assert "QUOTENAME(LEFT(N'pk_' + @archive_schema + N'_' + @table_name, 128))" in _script("06_")

    def test_an_archive_schema_name_that_would_be_cut_is_refused(self):
        # A sysname variable keeps only 128 characters, silently.
        schemas = _script("02_")
        assert schemas.index("IF LEN(N'$(NamespacePrefix)' + @alias) > 128") < schemas.index("SET @schema =")

    def test_foreign_key_children_guard_their_parent(self):
        builder = _procedure("usp_build_sql")
        children = builder.split("INSERT INTO @children", 1)[1]
        assert "FROM @fk_children AS f" in children and "r.archival_logic = 'CONTRACT_MATURITY'" in children
        assert "FROM sys.foreign_keys AS fk" in builder
        contract = templates.ProcedureTable(
            "SourceDB2", "Trading", "dbo", "Contract", "archive_sourcedb2", "DATE_BASED",
            ["contractId", "maturityDate"], [templates.KeyColumn("contractId", "int")], "maturityDate",
            children=(("dbo", "Trade", "contractId", "contractId"),),
        )  # fmt: skip
        body = templates.render("archive_batch", contract)
        assert (
            "AND NOT EXISTS (SELECT 1 FROM [Trading].[dbo].[Trade] AS ch1 WHERE ch1.[contractId] = s.[contractId])"
            in body
        )
        assert parse_errors(body) == []

    def test_the_hold_recheck_mirrors_the_generic_hold_match(self):
        body = templates.load_templates()["dispose_batch"]
        assert body.count("(h.[schema_name] = @schema_name OR h.[schema_name] = N'')") == 2
        assert "h.[scope] = N'DATE_RANGE' AND a.[reference_date] IS NOT NULL" in body

    def test_keys_hold_text_is_the_canonical_key_text(self):
        import datetime as dt

        from archival.rowkeys import component_text

        # CONVERT style 120 is yyyy-mm-dd hh:mi:ss, 23 is yyyy-mm-dd:
        # https://learn.microsoft.com/sql/t-sql/functions/cast-and-convert-transact-sql
        assert component_text(dt.datetime(2024, 2, 29, 10, 0, 0)) == "2024-02-29 10:00:00"
        assert component_text(dt.datetime(2024, 2, 29, 10, 0, 0, 120000)) == "2024-02-29 10:00:00.120000"
        assert component_text(True) == "true"
        text = templates.key_text(["d", "t", "b", "s"], "a", ["date", "datetime2", "bit", "varchar"])
        assert "CONVERT(nvarchar(10), a.[d], 23) COLLATE DATABASE_DEFAULT" in text
        assert "CONVERT(nvarchar(19), a.[t], 120) + CASE WHEN DATEPART(MICROSECOND, a.[t]) = 0" in text
        assert "CASE WHEN a.[b] = 1 THEN N'true' ELSE N'false' END" in text
        assert "REPLACE(REPLACE(REPLACE(CONVERT(nvarchar(4000), a.[s]), N'\\', N'\\\\')" in text
        assert parse_errors(f"SELECT {text} FROM t AS a;") == []
        helper = _script("04_")
        assert "CREATE OR ALTER FUNCTION archival.fn_key_text(@columns nvarchar(max), @types nvarchar(max)" in helper
        assert "archival.fn_key_text(@keys, @key_types, N'a')" in _procedure("usp_build_sql")


class TestTypes:
    def test_rowversion_is_archived_as_binary8_and_the_clr_types_as_themselves(self):
        helper = _script("04_")
        assert "WHEN @type_name = N'timestamp' THEN N'binary(8)'" in helper
        assert "N'sql_variant', N'hierarchyid', N'geography', N'geometry') THEN @type_name" in helper
        assert sqltypes.type_sql("timestamp", 8, 0, 0) == "binary(8)"
        for name in ("sql_variant", "hierarchyid", "geography", "geometry"):
            assert sqltypes.type_sql(name, -1, 0, 0) == name
        assert sqltypes.type_sql("xml", -1, 0, 0) is None

    def test_spatial_columns_compare_by_their_bytes(self):
        body = templates.load_templates()["archive_batch"]
        assert "WHERE NOT EXISTS (SELECT {COMPARE_S} INTERSECT SELECT {COMPARE_A});" in body
        spec = templates.ProcedureTable(
            "S", "S", "dbo", "T", "archive_s", "DATE_BASED", ["id", "g", "d"],
            [templates.KeyColumn("id", "int")], "d", spatial_columns=("g",),
        )  # fmt: skip
        assert templates.tokens_for(spec)["COMPARE_S"] == "s.[id], CONVERT(varbinary(max), s.[g]), s.[d]"

    def test_keys_of_types_json_cannot_carry_are_refused(self):
        for text in (_procedure("usp_build_sql"), _script("06_")):
            assert "type_name IN (N'binary', N'varbinary', N'timestamp', N'sql_variant'" in text


class TestGovernanceTriggers:
    """sql/10: what archival/disposal/triggers.py refuses elsewhere, on SQL Server."""

    text = ""

    @classmethod
    def setup_class(cls):
        cls.text = _script("10_")

    def _trigger(self, name: str) -> str:
        return self.text.split(f"TRIGGER [dbo].[{name}]", 1)[1].split("END');", 1)[0]

    @pytest.mark.parametrize(
        "table", ["governance_auditevent", "governance_auditchainhead", "governance_hold", "governance_holdkey"]
    )
    def test_no_row_is_ever_deleted(self, table):
        body = self._trigger(f"tr_{table}_no_delete")
        assert f"ON [dbo].[{table}]\nINSTEAD OF DELETE" in body and "THROW" in body

    def _unchanged(self, body: str) -> set[str]:
        first = body.split("INTERSECT", 1)[0].rsplit("SELECT", 1)[1]
        return set(re.findall(r"i\.\[(\w+)\]", first))

    def test_an_audit_event_only_gets_its_hash_once(self):
        from governance.models import AuditEvent

        body = self._trigger("tr_governance_auditevent_append_only")
        columns = {f.column for f in AuditEvent._meta.concrete_fields}
        assert self._unchanged(body) == columns - {"id", "entry_hash", "actor_user_id"}
        assert "d.[entry_hash] = N'''' OR d.[entry_hash] = i.[entry_hash]" in body

    def test_the_chain_head_only_moves_forward(self):
        body = self._trigger("tr_governance_auditchainhead_forward")
        assert "i.[last_event_id] <= d.[last_event_id]" in body and "i.[name] <> d.[name]" in body

    def test_a_hold_is_only_released_once_or_reviewed(self):
        from governance.models import Hold

        body = self._trigger("tr_governance_hold_release_only")
        columns = {f.column for f in Hold._meta.concrete_fields}
        release = {"released_by", "released_at", "release_reason"}
        assert self._unchanged(body) == columns - {"id", "review_by"} - release
        assert "d.[released_at] IS NOT NULL AND NOT EXISTS" in body

    def test_deny_outranks_the_runtime_logins_db_datawriter(self):
        # A DENY overrides a GRANT (db_datawriter grants DELETE on every table).
        for verb, table in (
            ("DELETE", "governance_auditevent"),
            ("DELETE", "governance_auditchainhead"),
            ("UPDATE", "governance_holdkey"),
        ):
            assert f"DENY {verb} ON OBJECT::[dbo].[{table}] TO [public];" in self.text
        grants = _script("08_")
        for table in ("governance_hold", "governance_holdkey"):
            assert f"DENY DELETE ON OBJECT::[dbo].[{table}] TO [public];" in grants

    def test_triggers_keep_their_row_counts_to_themselves(self):
        for m in re.finditer(r"CREATE OR ALTER TRIGGER .*?END'\);", self.text, re.DOTALL):
            assert "SET NOCOUNT ON;" in m.group(0)

    def test_the_install_order_puts_it_after_migrate(self):
        header = self.text.split("*/", 1)[0]
        assert "then 08, 09" in header and "manage.py migrate" in header


class TestMarkChildGuard:
    """Mark counts a parent row when every child row referencing it moves in this run."""

    contract = templates.ProcedureTable(
        "SourceDB2", "Trading", "dbo", "Contract", "archive_sourcedb2", "DATE_BASED",
        ["contractId", "maturityDate"], [templates.KeyColumn("contractId", "int")], "maturityDate",
        children=(("dbo", "Trade", "contractId", "contractId"), ("dbo", "Leg", "contractId", "contractId")),
        child_rules=(
            ("Trade", "DATE_BASED", "settlementDate", "", "", "", ""),
            ("Leg", "CONTRACT_MATURITY", "", "Contract", "contractId", "contractId", "maturityDate"),
        ),
    )  # fmt: skip

    def test_mark_uses_the_at_mark_rule_and_the_batches_the_move_rule(self):
        marks = templates.render("mark_table", self.contract)
        assert marks.count("{") == 0 and parse_errors(marks) == []
        assert (
            "AND NOT EXISTS (SELECT 1 FROM [Trading].[dbo].[Trade] AS ch2 WHERE ch2.[contractId] = s.[contractId]"
            " AND NOT (ch2.[settlementDate] IS NOT NULL AND ch2.[settlementDate] < "
            "COALESCE(CAST(JSON_VALUE(@child_thresholds, N'$.\"Trade\"') AS date), CONVERT(date, '00010101'))))"
        ) in marks
        assert (
            "AND NOT (EXISTS (SELECT 1 FROM [Trading].[dbo].[Contract] AS cc1 WHERE cc1.[contractId] = ch1.[contractId]"
            " AND cc1.[maturityDate] < COALESCE(CAST(JSON_VALUE(@child_thresholds, N'$.\"Leg\"') AS date)"
        ) in marks
        batch = templates.render("archive_batch", self.contract)
        assert "@child_thresholds" not in batch
        assert "AS ch2 WHERE ch2.[contractId] = s.[contractId])" in batch

    def test_the_procedure_builds_the_same_rule_from_the_registry(self):
        builder = _procedure("usp_build_sql")
        # STRING_AGG skips NULL pieces: a child with a NULL column is refused first.
        assert builder.index("THROW 50213") < builder.index("SELECT @mark_child_guard")
        assert "SET @sql = REPLACE(@sql, N'{MARK_CHILD_GUARD}', @mark_child_guard);" in builder
        mark = builder.split("SELECT @mark_child_guard", 1)[1].split(") AS ch;", 1)[0]
        assert "WHEN ch.archival_logic = 'DATE_BASED'" in mark
        assert "N'COALESCE(CAST(JSON_VALUE(@child_thresholds, N''$.\"'" in mark
        assert "CONVERT(date, ''00010101''))' AS threshold" in mark
        marker = _procedure("usp_mark_table")
        assert "@child_thresholds nvarchar(max) = NULL" in marker
        assert "@child_thresholds = @child_thresholds," in marker
        body = templates.load_templates()["mark_table"]
        assert body.count("{MARK_CHILD_GUARD}") == 3 and "{CHILD_GUARD}" not in body


class TestRestore:
    """archival.usp_restore_batch (sql/07), its template (sql/05) and selection builder, and their Python twins."""

    position = templates.ProcedureTable(
        "SourceDB1", "Sales", "dbo", "Position", "archive_sourcedb1", "DATE_BASED",
        ["positionId", "bookId", "businessDate", "amount", "amountEur", "rv"],
        [templates.KeyColumn("positionId", "int"), templates.KeyColumn("businessDate", "date")], "businessDate",
        hold_contract_column="bookId",
        identity_columns=("positionId",), computed_columns=("amountEur",), rowversion_columns=("rv",),
    )  # fmt: skip
    trade = templates.ProcedureTable(
        "SourceDB2", "Trading", "dbo", "Trade", "archive_sourcedb2", "CONTRACT_MATURITY",
        ["tradeId", "contractId", "bookId"], [templates.KeyColumn("tradeId", "bigint")],
        contract_table="Contract", contract_key_column="contractId", contract_reference_column="contractId",
        contract_maturity_column="maturityDate",
    )  # fmt: skip
    leg = templates.ProcedureTable(
        "SourceDB2", "Trading", "dbo", "Leg", "archive_sourcedb2", "DATE_BASED",
        ["legId", "tradeId", "d"], [templates.KeyColumn("legId", "nvarchar(20)", "Latin1_General_CS_AS")], "d",
    )  # fmt: skip
    contract = templates.ProcedureTable(
        "SourceDB2", "Trading", "dbo", "Contract", "archive_sourcedb2", "DATE_BASED",
        ["contractId", "maturityDate"], [templates.KeyColumn("contractId", "int")], "maturityDate",
    )  # fmt: skip

    SELECTIONS = {
        "key range": {"kind": "KEY_RANGE", "key_low": ["10", "2020-01-01"], "key_high": ["200", "2020-12-31"]},
        "key range open end": {"kind": "KEY_RANGE", "key_low": ["10", "2020-01-01"], "key_high": None},
        "contract": {"kind": "CONTRACT", "column": "bookId", "value": "B-7"},
        "keys": {"kind": "KEYS", "request_id": 4},
        "date range": {"kind": "DATE_RANGE", "date_from": "2020-01-01", "date_to": "2020-06-30"},
        "run": {"kind": "RUN", "archive_run_id": 12},
    }

    @pytest.mark.parametrize("name", sorted(SELECTIONS))
    def test_every_selection_kind_renders_tsql_that_parses(self, name):
        body = templates.render("restore_batch", self.position, selection=self.SELECTIONS[name])
        assert "{" not in body and parse_errors(body) == []
        assert "WHERE (" in body and "AND (@key_after IS NULL OR (a.[positionId] > @k1" in body

    def test_a_parent_selection_nests_the_childs_through_the_archived_child_rows(self):
        # Contract <- Trade (contract join) <- Leg (foreign key): the contracts
        # the selected legs' trades reference, level by level.
        selection = {
            "kind": "REFERENCED", "key_column": "contractId", "child_table": "Trade", "ref_column": "contractId",
            "child": {
                "kind": "REFERENCED", "key_column": "tradeId", "child_table": "Leg", "ref_column": "tradeId",
                "child": {"kind": "KEY_RANGE", "key_low": ["L-1"], "key_high": ["L-9"]},
            },
        }  # fmt: skip
        tokens = templates.restore_selection(self.contract, selection, {"Trade": self.trade, "Leg": self.leg})
        assert tokens["SELECTION"] == (
            "EXISTS (SELECT 1 FROM [archive_sourcedb2].[Trade] AS r1 WHERE r1.[contractId] = a.[contractId] AND ("
            "EXISTS (SELECT 1 FROM [archive_sourcedb2].[Leg] AS r2 WHERE r2.[tradeId] = r1.[tradeId] AND ("
            "(r2.[legId] >= @s2_lo1) AND (r2.[legId] <= @s2_hi1)))))"
        )
        assert tokens["SELECTION_DECLARE"] == (
            "DECLARE @s2_lo1 nvarchar(20) = CAST(JSON_VALUE(@selection, N'$.child.child.key_low[0]') AS nvarchar(20));\n"
            "DECLARE @s2_hi1 nvarchar(20) = CAST(JSON_VALUE(@selection, N'$.child.child.key_high[0]') AS nvarchar(20));\n"
        )
        body = templates.render(
            "restore_batch", self.contract, selection=selection, tables={"Trade": self.trade, "Leg": self.leg}
        )
        assert parse_errors(body) == []

    def test_an_approved_selection_takes_only_rows_archived_by_its_approval_at_every_level(self):
        selection = {
            "kind": "REFERENCED", "key_column": "contractId", "child_table": "Trade", "ref_column": "contractId",
            "archived_by": "2026-12-07T13:40:00.123456",
            "child": {"kind": "RUN", "archive_run_id": 7, "archived_by": "2026-12-07T13:40:00.123456"},
        }  # fmt: skip
        tokens = templates.restore_selection(self.contract, selection, {"Trade": self.trade})
        assert tokens["SELECTION"] == (
            "a.[archived_at] <= @s0_archived_by AND EXISTS (SELECT 1 FROM [archive_sourcedb2].[Trade] AS r1 "
            "WHERE r1.[contractId] = a.[contractId] AND (r1.[archived_at] <= @s1_archived_by AND "
            "(r1.[archive_run_id] = @s1_run)))"
        )
        assert "N'$.child.archived_by'), 126)" in tokens["SELECTION_DECLARE"]
        body = templates.render("restore_batch", self.contract, selection=selection, tables={"Trade": self.trade})
        assert parse_errors(body) == []
        with pytest.raises(templates.RestoreSelectionError, match="ISO 8601"):
            templates.restore_selection(self.contract, {**selection, "archived_by": "yesterday"}, {"Trade": self.trade})

    def test_a_binary_key_range_is_read_back_from_hex(self):
        table = templates.ProcedureTable(
            "SourceDB1", "Sales", "dbo", "Blob", "archive_sourcedb1", "DATE_BASED",
            ["blobId", "d"], [templates.KeyColumn("blobId", "varbinary(16)")], "d",
        )  # fmt: skip
        sent = json.loads(
            procedures.encode_selection({"kind": "KEY_RANGE", "key_low": [b"\n\xff"], "key_high": [b"\xff"]})
        )
        assert sent["key_low"] == ["0aff"] and sent["key_high"] == ["ff"]
        assert templates.restore_selection(table, sent)["SELECTION_DECLARE"] == (
            "DECLARE @s0_lo1 varbinary(16) = CONVERT(varbinary(16), JSON_VALUE(@selection, N'$.key_low[0]'), 2);\n"
            "DECLARE @s0_hi1 varbinary(16) = CONVERT(varbinary(16), JSON_VALUE(@selection, N'$.key_high[0]'), 2);\n"
        )
        assert parse_errors(templates.render("restore_batch", table, selection=sent)) == []

    def test_values_stay_in_the_selection_parameter(self):
        poison = "x'); DROP TABLE [dbo].[Position]; --"
        for selection in (
            {"kind": "CONTRACT", "column": "bookId", "value": poison},
            {"kind": "KEY_RANGE", "key_low": [poison, poison], "key_high": None},
        ):
            body = templates.render("restore_batch", self.position, selection=selection)
            assert poison not in body and "DROP" not in body
        with pytest.raises(templates.RestoreSelectionError):  # not a date: refused (THROW 50866 in the procedure)
            templates.render("restore_batch", self.position, selection={"kind": "DATE_RANGE", "date_from": poison})
        declare = templates.restore_selection(self.position, self.SELECTIONS["contract"])["SELECTION_DECLARE"]
        assert declare == "DECLARE @s0_contract nvarchar(4000) = JSON_VALUE(@selection, N'$.value');\n"

    def test_the_python_twin_refuses_what_the_procedure_refuses(self):
        bad = [
            {"kind": "DELETE_ALL"},
            {"kind": "KEY_RANGE", "key_low": ["1"], "key_high": None},  # two key columns
            {"kind": "KEY_RANGE", "key_low": "1", "key_high": None},
            {"kind": "CONTRACT", "column": "amount", "value": "x"},  # not the contract column
            {"kind": "CONTRACT", "column": "bookId"},
            {"kind": "KEYS"},
            {"kind": "RUN", "archive_run_id": "12"},
            {"kind": "DATE_RANGE", "date_from": "31.01.2020", "date_to": None},
            {"kind": "REFERENCED", "key_column": "positionId", "child_table": "Nope", "ref_column": "x", "child": {}},
        ]
        for selection in bad:
            with pytest.raises(templates.RestoreSelectionError):
                templates.restore_selection(self.position, selection)
        builder = _procedure("usp_build_restore_selection")
        for number in range(50850, 50871):
            assert f"THROW {number}," in builder, number
        # Nesting is bounded, as in the procedure.
        deep = {"kind": "RUN", "archive_run_id": 1}
        for _ in range(templates.MAX_RESTORE_DEPTH + 1):
            deep = {"kind": "REFERENCED", "key_column": "contractId", "child_table": "Contract",
                    "ref_column": "contractId", "child": deep}  # fmt: skip
        with pytest.raises(templates.RestoreSelectionError, match="levels deep"):
            templates.restore_selection(self.contract, deep, {"Contract": self.contract})
        assert "IF @depth > 8" in builder and templates.MAX_RESTORE_DEPTH == 8

    def test_a_referenced_child_must_really_reference_the_table(self):
        # The foreign key in the source catalog, or the child's contract join in the registry.
        builder = _procedure("usp_build_restore_selection")
        link = builder.split("IF @kind = N'REFERENCED'", 1)[1].split("CONTINUE;", 1)[0]
        assert "archival_logic = 'CONTRACT_MATURITY' AND contract_table = @table" in link
        assert "FROM sys.foreign_keys AS fk" in link and "fk.referenced_object_id = OBJECT_ID(@qualified" in link
        assert link.index("THROW 50857") < link.index("SET @opening")

    def test_the_insert_leaves_out_computed_and_rowversion_columns_and_sets_identity_insert_around_it(self):
        # rowversion and computed columns cannot be inserted into; an identity
        # column takes explicit values only under IDENTITY_INSERT, which needs
        # ALTER on the table:
        # https://learn.microsoft.com/sql/t-sql/statements/set-identity-insert-transact-sql
        body = templates.render("restore_batch", self.position, selection=self.SELECTIONS["run"])
        insert = "INSERT INTO [Sales].[dbo].[Position] ([positionId], [bookId], [businessDate], [amount])\n"
        assert insert + "SELECT a.[positionId], a.[bookId], a.[businessDate], a.[amount]\n" in body
        on = body.index("SET IDENTITY_INSERT [Sales].[dbo].[Position] ON;")
        assert on < body.index(insert) < body.index("SET IDENTITY_INSERT [Sales].[dbo].[Position] OFF;")
        assert body.index("SET @rows_restored = @@ROWCOUNT;") < body.index(
            "IDENTITY_INSERT [Sales].[dbo].[Position] OFF"
        )
        plain = templates.render("restore_batch", self.contract, selection=self.SELECTIONS["run"])
        assert "SET IDENTITY_INSERT" not in plain and "([contractId], [maturityDate])" in plain
        # No OUTPUT INTO a source table: its target may have no enabled trigger,
        # foreign key or CHECK constraint (docs/sqlserver.md, "OUTPUT ... INTO").
        code = [line for line in plain.splitlines() if not line.lstrip().startswith("--")]
        assert not [line for line in code if "OUTPUT" in line]
        builder = _procedure("usp_build_sql")
        assert "WHERE is_computed = 0 AND type_name <> N'timestamp';" in builder
        assert "SET @identity_on = N'SET IDENTITY_INSERT ' + @source + N' ON;';" in builder
        assert "c.is_identity, c.is_computed" in builder

    def test_identical_rows_are_skipped_and_other_values_stop_with_the_key(self):
        body = templates.render("restore_batch", self.position, selection=self.SELECTIONS["run"])
        compare = "WHERE NOT EXISTS (SELECT s.[positionId], s.[bookId], s.[businessDate], s.[amount] INTERSECT "
        assert body.count(compare) == 2  # counted, then the first key in key order
        assert "ORDER BY b.[positionId], b.[businessDate];\n    RETURN;" in body
        assert body.index("RETURN;") < body.index("INSERT INTO [Sales]")
        assert "INNER JOIN [Sales].[dbo].[Position] AS s WITH (UPDLOCK, HOLDLOCK)" in body
        assert "WHERE b.in_source = 0;" in body  # identical rows are not inserted again ...
        delete = body.split("DELETE a\n", 1)[1].split(";", 1)[0]
        assert "in_source" not in delete  # ... but their archive copy goes
        proc = _procedure("usp_restore_batch")
        conflict = proc.split("IF @conflicts > 0", 1)[1].split("END;", 1)[0]
        assert "THROW 50804, @message, 1;" in conflict and "@conflict_key" in conflict
        assert proc.index("IF @conflicts > 0") < proc.index("INSERT INTO [dbo].[governance_restoreledger]")

    def test_counts_reconcile_before_commit(self):
        proc = _procedure("usp_restore_batch")
        check = proc.split("-- Reconcile before commit", 1)[1].split("THROW 50805", 1)[0]
        for condition in (
            "@rows_deleted <> @batch_rows",
            "@rows_deleted <> @rows_restored + @rows_skipped",
            "@rows_in_source <> @rows_deleted",
            "@rows_recorded <> @rows_deleted",
            "@ledger_rows <> @rows_restored",
        ):
            assert condition in check
        assert proc.index("BEGIN TRANSACTION;") < proc.index("THROW 50805") < proc.index("COMMIT TRANSACTION;")
        body = templates.load_templates()["restore_batch"]
        assert (
            "SELECT @rows_in_source = COUNT(*)\nFROM {SOURCE} AS s\nINNER JOIN #batch AS b ON {KEY_JOIN_S_B};" in body
        )

    def test_the_preview_compares_with_the_source_through_the_signed_procedure(self):
        # The runtime login reads no source table (VIEW DEFINITION only): the
        # preview's conflicting and identical counts come from usp_restore_compare,
        # with the batch's own selection and compared columns.
        body = templates.render("restore_compare", self.position, selection=self.SELECTIONS["keys"])
        assert "{" not in body and parse_errors(body) == []
        join = "INNER JOIN [Sales].[dbo].[Position] AS s ON s.[positionId] = a.[positionId] AND s.[businessDate] = a.[businessDate]"
        assert body.count(join) == 2
        compare = "(SELECT s.[positionId], s.[bookId], s.[businessDate], s.[amount] INTERSECT SELECT a.[positionId]"
        assert "AND NOT EXISTS " + compare in body and "AND EXISTS " + compare in body
        assert "DELETE" not in body and "INSERT" not in body and "UPDATE" not in body
        proc = _procedure("usp_restore_compare")
        assert "BEGIN TRANSACTION" not in proc and "@template_name = N'restore_compare'" in proc
        assert "EXEC archival.usp_build_restore_selection" in proc

    def test_the_ledger_insert_matches_the_restore_ledger_model(self):
        from governance.models import RestoreLedger

        m = re.search(r"INSERT INTO \[dbo\]\.\[(\w+)\] \((.*?)\)", _procedure("usp_restore_batch"), re.DOTALL)
        assert m.group(1) == RestoreLedger._meta.db_table
        inserted = {c.strip() for c in m.group(2).split(",")}
        assert inserted == {f.column for f in RestoreLedger._meta.concrete_fields if not f.primary_key}
        assert "N'MOVED'" in _procedure("usp_restore_batch")

    def test_the_restored_keys_are_recorded_before_the_rows_leave_the_archive(self):
        from governance.models import RestoredKey

        body = templates.load_templates()["restore_batch"]
        m = re.search(r"INSERT INTO \[dbo\]\.\[(\w+)\] \((.*?)\)\nSELECT (.*?)\n", body)
        assert m.group(1) == RestoredKey._meta.db_table
        columns = [c.strip(" []") for c in m.group(2).split(",")]
        assert set(columns) == {f.column for f in RestoredKey._meta.concrete_fields if not f.primary_key}
        assert m.group(3) == "@request_id, @config_id, @batch_no, {KEY_TEXT_A}"
        assert body.index("[governance_restoredkey]") < body.index("DELETE a\nFROM {ARCHIVE}")
        grants = _script("08_")
        assert "GRANT SELECT, INSERT ON OBJECT::[dbo].[governance_restoredkey] TO [archival_signer];" in grants

    def test_keys_match_restore_keys_by_the_canonical_key_text_of_holds(self):
        from governance.models import RestoreKey

        selection = templates.restore_selection(self.position, self.SELECTIONS["keys"])["SELECTION"]
        used = set(re.findall(r"\brk0\.\[(\w+)\]", selection))
        assert used == {f.column for f in RestoreKey._meta.concrete_fields} - {"id"}
        assert f"[dbo].[{RestoreKey._meta.db_table}]" in selection
        key_text = templates.tokens_for(self.position)["KEY_TEXT_A"]
        assert selection.endswith(f"rk0.[key_text] = {key_text})")
        assert "archival.fn_key_text(@keys, @key_types, @alias)" in _procedure("usp_build_restore_selection")

    def test_held_rows_are_counted_with_the_disposal_hold_match(self):
        restore, dispose = templates.load_templates()["restore_batch"], templates.load_templates()["dispose_batch"]

        def match(body):
            return body.split("WHERE EXISTS (\n    SELECT 1\n    FROM [dbo].[governance_hold] AS h", 1)[1].split(
                ");", 1
            )[0]

        assert match(restore) == match(dispose)
        assert "SELECT @rows_held = COUNT(*) FROM #batch WHERE held = 1;" in restore

    def test_key_bound_is_the_inclusive_expanded_or_form(self):
        assert templates.key_bound(["a", "b", "c"], "x", ">", "@lo") == (
            "x.[a] > @lo1 OR (x.[a] = @lo1 AND (x.[b] > @lo2 OR (x.[b] = @lo2 AND (x.[c] >= @lo3))))"
        )
        assert templates.key_bound(["a"], "x", "<", "@hi") == "x.[a] <= @hi1"
        assert "CREATE OR ALTER FUNCTION archival.fn_key_bound(" in _script("04_")
        assert "WHEN @predicate IS NULL THEN @column + N' ' + @op + N'= ' + @variable" in _script("04_")

    def test_an_archive_column_the_source_lost_stops_the_restore(self):
        builder = _procedure("usp_build_sql")
        block = builder.split("IF @template_name IN (N'restore_batch', N'restore_compare')", 1)[1]
        block = block.split("END;\n    END;", 1)[0]
        assert "NOT EXISTS (SELECT 1 FROM @cols AS c WHERE c.name = ac.name)" in block and "THROW 50214" in block

    def test_the_restore_procedures_are_signed_and_their_rights_granted(self):
        grants, provisioning = _script("08_"), _script("06_")
        signed = grants.split("DECLARE procs CURSOR", 1)[1].split("OPEN procs;", 1)[0]
        assert "N'usp_build_restore_selection', N'usp_restore_compare', N'usp_restore_batch'" in signed
        assert "GRANT SELECT, INSERT ON OBJECT::[dbo].[governance_restoreledger] TO [archival_signer];" in grants
        assert "GRANT SELECT ON OBJECT::[dbo].[governance_restorekey] TO [archival_signer];" in grants
        # INSERT on each source table; ALTER where an identity column needs IDENTITY_INSERT.
        assert "N'GRANT SELECT, INSERT, DELETE ON ' + QUOTENAME(@schema_name)" in provisioning
        assert "IF EXISTS (SELECT 1 FROM @cols WHERE is_identity = 1)" in provisioning
        assert "N'GRANT ALTER ON ' + QUOTENAME(@schema_name)" in provisioning
        loop = grants.split("DECLARE registered CURSOR", 1)[1]
        assert "N'GRANT INSERT ON ' + @qualified + N' TO [archival_signer]'" in loop
        assert "IF @has_identity > 0" in loop and "N'GRANT ALTER ON ' + @qualified" in loop
        # Never to the runtime login's roles: no ALTER, and provisioning grants them nothing.
        assert not re.search(r"GRANT[^;]*\bALTER\b[^;]*TO \[(archival_app_data|archival_executor)\]", grants)
        assert not re.search(r"TO \[(archival_app_data|archival_executor)\]", provisioning)
