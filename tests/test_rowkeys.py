"""archival.rowkeys: one canonical key text and one keyset predicate, and every form of them agreeing.

A KEYS hold on a key of every type (boolean, text with a TAB, a backslash and
a newline, date, timestamp, decimal, all in one composite key) is seen as
held by the disposal delete's SQL, the hold preview, the search's row page
and (by construction) the SQL Server procedures' key text.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connections

from archival import rowkeys
from archival.backends import backend_for
from archival.backends.mssql import templates
from archival.backends.mssql.backend import MSSQLBackend
from archival.backends.sqlite import namespace_for
from archival.disposal import place_hold, release_hold
from archival.disposal.holds import HoldKeysUnreadable, canonicalize_hold_keys
from archival.disposal.tables import archive_table_for
from archival.hold_coverage import covering_q
from archival.search.catalog import SearchColumn, SearchTable
from archival.search.covering_holds import row_facts
from archival.search.query import value_text
from governance.models import AuditEvent, Hold, HoldKey, HoldScope, TableConfig
from tests.disposal_fixtures import DATABASES, SOURCE, source_schema

TODAY = dt.date(2030, 6, 15)
TABLE = "key_kinds"
KEY = ("flag", "label", "day", "at", "amount")
GENERICS = ("bool", "text", "date", "datetime", "decimal")
SCALES = (None, None, None, None, 2)  # the amount is a NUMERIC(18,2)
ROWS = [
    (True, "a\tb", dt.date(2024, 2, 29), dt.datetime(2024, 2, 29, 10, 0, 0), Decimal("12.50")),
    (False, "x\\y", dt.date(2024, 3, 1), dt.datetime(2024, 3, 1, 10, 0, 0, 120000), Decimal("0.05")),
    (True, "n\nl", dt.date(2024, 3, 2), dt.datetime(2024, 3, 2, 23, 59, 59, 999999), Decimal("-7.00")),
    (False, "plain", dt.date(2024, 3, 3), dt.datetime(2024, 3, 3, 0, 0, 0), Decimal("100.10")),
]


# -- the encoder ---------------------------------------------------------------------
def test_each_component_type_has_one_text():
    assert rowkeys.component_text(True) == "true"
    assert rowkeys.component_text(1, "bool") == "true"  # SQLite and MariaDB hand back 1/0
    assert rowkeys.component_text(0, "bool") == "false"
    assert rowkeys.component_text(7) == "7"
    assert rowkeys.component_text(Decimal("12.50")) == "12.50"
    assert rowkeys.component_text(Decimal("1E+2")) == "100"
    # A decimal column's scale pads what a driver hands back (SQLite: 12.5, -7).
    assert rowkeys.component_text(Decimal("12.5"), "decimal", 2) == "12.50"
    assert rowkeys.component_text(12.5, "decimal", 2) == "12.50"
    assert rowkeys.component_text(-7, "decimal", 2) == "-7.00"
    assert rowkeys.component_text(Decimal("1E+2"), "decimal", 2) == "100.00"
    assert rowkeys.component_text(12.5, "decimal") == "12.5"  # scale unknown: as the value prints
    assert rowkeys.component_text(dt.date(2024, 2, 29)) == "2024-02-29"
    assert rowkeys.component_text(dt.datetime(2024, 2, 29, 10, 0)) == "2024-02-29 10:00:00"
    assert rowkeys.component_text(dt.datetime(2024, 2, 29, 10, 0, 0, 120000)) == "2024-02-29 10:00:00.120000"
    # A timestamptz key: its UTC wall time, without the offset (to_char in a UTC session).
    paris = dt.timezone(dt.timedelta(hours=1))
    assert rowkeys.component_text(dt.datetime(2024, 2, 29, 11, 0, tzinfo=paris)) == "2024-02-29 10:00:00"
    assert rowkeys.component_text(b"\x0a\xff") == "0aff"
    assert rowkeys.component_text("a\tb\\c\nd") == "a\\tb\\\\c\\nd"
    assert rowkeys.key_text([1, "a\tb"]) == "1\ta\\tb"


def test_a_key_typed_as_text_reads_by_the_column_types():
    """The hold form and the search's link give text; 1 and true name one boolean."""
    typed = ["1", "a\tb", "2024-02-29", "2024-02-29 10:00:00", "12.50"]
    assert rowkeys.key_text_of_input(typed, GENERICS, SCALES) == rowkeys.key_text(ROWS[0])
    assert rowkeys.key_text_of_input(["true", *typed[1:]], GENERICS, SCALES) == rowkeys.key_text(ROWS[0])
    # 12.5 typed for a numeric(18,2) is the key 12.50.
    assert rowkeys.key_text_of_input([*typed[:4], "12.5"], GENERICS, SCALES) == rowkeys.key_text(ROWS[0])
    with pytest.raises(ValueError):
        rowkeys.key_text_of_input(["maybe", *typed[1:]], GENERICS)
    with pytest.raises(ValueError):
        rowkeys.key_text_of_input([*typed[:2], "29/02/2024", *typed[3:]], GENERICS)


# -- the keyset predicate ------------------------------------------------------------
def test_the_keyset_predicate_consumes_its_parameters_in_reading_order():
    sql, params = rowkeys.keyset_predicate(["a", "b", "c"], ">", [1, 2, 3])
    assert sql == "(a > %s OR (a = %s AND (b > %s OR (b = %s AND (c > %s)))))"
    assert params == [1, 1, 2, 2, 3]
    sql, params = rowkeys.keyset_predicate(["a", "b"], "<=", [1, 2], index_bound=True)
    assert sql == "(a <= %s AND (a < %s OR (a = %s AND (b <= %s))))"
    assert params == [1, 1, 1, 2]
    with pytest.raises(ValueError):
        rowkeys.keyset_predicate(["a"], "<>", [1])


def test_the_sql_server_keyset_is_the_same_predicate_on_variables():
    sql, _ = rowkeys.keyset_predicate(["s.[a]", "s.[b]"], ">", ["@k1", "@k2"])
    assert templates.keyset_predicate(["a", "b"], "s") == sql.replace("%s", "{}").format("@k1", "@k1", "@k2")[1:-1]
    assert templates.key_bound(["a", "b"], "s", "<", "@hi") == "s.[a] < @hi1 OR (s.[a] = @hi1 AND (s.[b] <= @hi2))"


@pytest.mark.django_db(databases=DATABASES)
def test_keyset_pages_of_a_composite_key_visit_every_row_once_in_order():
    """Against the database: every row after each key, in order, by the expanded predicate."""
    create_key_table()
    backend = backend_for("archive")
    cols = [f"a.{backend.quote(c)}" for c in KEY]
    order = ", ".join(cols)
    with connections["archive"].cursor() as cur:
        cur.execute(f"SELECT {order} FROM {qualified()} a ORDER BY {order}")
        ordered = cur.fetchall()
    assert len(ordered) == len(ROWS)
    for i, row in enumerate(ordered):
        where, params = rowkeys.keyset_predicate(cols, ">", list(row), index_bound=True)
        with connections["archive"].cursor() as cur:
            cur.execute(f"SELECT {order} FROM {qualified()} a WHERE {where} ORDER BY {order}", params)
            assert cur.fetchall() == ordered[i + 1 :]


# -- every form agrees on a real table -------------------------------------------------
def qualified() -> str:
    backend = backend_for("archive")
    return backend.qualified(namespace_for(SOURCE), TABLE)


def create_key_table() -> None:
    """A source table (for the config) and its archive table, keyed on one column of each type."""
    source, archive = backend_for(SOURCE), backend_for("archive")
    for alias, backend, extra in (
        (SOURCE, source, ""),
        ("archive", archive, ', "reference_date" DATE, "retention_until" DATE'),
    ):
        types = {**backend.generic_types, "text": "VARCHAR(40)", "decimal": "NUMERIC(18,2)"}
        columns = ", ".join(f'"{c}" {types[g]} NOT NULL' for c, g in zip(KEY, GENERICS, strict=True))
        name = qualified() if alias == "archive" else f'"{TABLE}"'
        with connections[alias].cursor() as cur:
            if alias == "archive" and backend.vendor == "postgresql":
                cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{namespace_for(SOURCE)}"')
            cur.execute(f"DROP TABLE IF EXISTS {name}")
            cur.execute(
                f'CREATE TABLE {name} ({columns}, "contractId" VARCHAR(20){extra}, PRIMARY KEY ({", ".join(f"{chr(34)}{c}{chr(34)}" for c in KEY)}))'
            )
    with connections["archive"].cursor() as cur:
        cur.executemany(
            f'INSERT INTO {qualified()} ({", ".join(archive.quote(c) for c in KEY)}, "contractId", '
            '"reference_date", "retention_until") VALUES (%s, %s, %s, %s, %s, %s, %s, %s)',
            [(*row, "C1", row[2], TODAY - dt.timedelta(days=1)) for row in ROWS],
        )


def make_key_config() -> TableConfig:
    config = TableConfig(
        source_db=SOURCE,
        schema_name=source_schema(),
        table_name=TABLE,
        table_type="OPERATIONAL",
        date_column="day",
        primary_key_columns=",".join(KEY),
    )
    config.full_clean()
    config.save()
    return config


def read_back() -> list[tuple]:
    """Each row's key as the driver returns it, and its key text built in SQL."""
    backend = backend_for("archive")
    sql, params = backend.key_text_sql(
        [(f"a.{backend.quote(c)}", g, s) for c, g, s in zip(KEY, GENERICS, SCALES, strict=True)]
    )
    with connections["archive"].cursor() as cur:
        cur.execute(f"SELECT {', '.join(f'a.{backend.quote(c)}' for c in KEY)}, {sql} FROM {qualified()} a", params)
        return [(tuple(r[:-1]), r[-1]) for r in cur.fetchall()]


@pytest.mark.django_db(databases=DATABASES)
def test_the_sql_key_text_of_every_type_is_the_python_key_text():
    create_key_table()
    rows = read_back()
    assert len(rows) == len(ROWS)
    for values, sql_text in rows:
        assert sql_text == rowkeys.key_text(values, GENERICS, SCALES)
    # The inserted values' text, trailing zeros of the decimals included
    # (SQLite hands back 12.5, 100.1 and -7 for 12.50, 100.10 and -7.00).
    assert sorted(t for _, t in rows) == sorted(rowkeys.key_text(r) for r in ROWS)


@pytest.mark.django_db(databases=DATABASES)
def test_a_keys_hold_on_every_key_type_is_held_by_disposal_the_preview_and_the_search(disposal_personas):
    create_key_table()
    config = make_key_config()
    # Keys as the driver returns them (SQLite gives 12.5 for a NUMERIC 12.50,
    # which the column's scale pads back), typed as the search's "hold these
    # rows" link writes them (value_text: a boolean as 1/0).
    rows = sorted(read_back(), key=lambda r: r[1])
    held, free = [values for values, _ in rows[:3]], rows[3][0]
    typed_keys = [[value_text(v) for v in row] for row in held]
    preview = place_hold(
        scope=HoldScope.KEYS,
        source_db=SOURCE,
        table_name=TABLE,
        keys=typed_keys,
        actor=disposal_personas["alice"],
        reason="litigation",
        dry_run=True,
    )
    assert [(i.table_label, i.rows) for i in preview.impact] == [(config.label, len(held))]
    hold = place_hold(
        scope=HoldScope.KEYS,
        source_db=SOURCE,
        table_name=TABLE,
        keys=typed_keys,
        actor=disposal_personas["alice"],
        reason="x",
    )
    assert sorted(hold.keys.values_list("key_text", flat=True)) == sorted(
        rowkeys.key_text(r, GENERICS, SCALES) for r in held
    )

    # Disposal: the delete's SQL hold check.
    t = archive_table_for(config)
    held_sql, held_params = t.held_sql(TODAY)
    with connections["archive"].cursor() as cur:
        cur.execute(f"SELECT {t.pk_select()} FROM {t.qualified} a WHERE {held_sql}", held_params)
        disposal_held = {rowkeys.key_text(r, GENERICS, SCALES) for r in cur.fetchall()}
    assert disposal_held == {rowkeys.key_text(r, GENERICS, SCALES) for r in held}

    # The search's row page: the row as its driver returns it.
    backend = backend_for("archive")
    search_table = SearchTable(
        config=config,
        namespace=namespace_for(SOURCE),
        columns=[
            SearchColumn(name=c, generic=g, nullable=False, is_key=True, scale=s)
            for c, g, s in zip(KEY, GENERICS, SCALES, strict=True)
        ],
        key=list(KEY),
        contract_column=None,
        backend=backend,
    )
    for values, _ in read_back():
        row = {**dict(zip(KEY, values, strict=True)), "reference_date": values[2]}
        seen = Hold.objects.using("archive").filter(covering_q(*row_facts(search_table, row))).filter(pk=hold.pk)
        assert seen.exists() == (values != free)


# -- SQL Server, by construction -------------------------------------------------------
SQL_DIR = Path(__file__).resolve().parents[1] / "sql"


def test_the_sql_server_key_text_writes_each_type_as_rowkeys_does():
    """No SQL Server runs here: each type's T-SQL is the CONVERT whose documented
    output is rowkeys' text (style 23: yyyy-mm-dd; 120: yyyy-mm-dd hh:mi:ss,
    then the microseconds only when not zero, as isoformat; style 2: hex)."""
    part = templates.key_text_part
    assert part("a.[b]", "bit") == "CASE WHEN a.[b] = 1 THEN N'true' ELSE N'false' END COLLATE DATABASE_DEFAULT"
    assert rowkeys.component_text(True) == "true" and rowkeys.component_text(False) == "false"
    assert part("a.[d]", "date") == "CONVERT(nvarchar(10), a.[d], 23) COLLATE DATABASE_DEFAULT"
    assert part("a.[t]", "datetime2").startswith(
        "CONVERT(nvarchar(19), a.[t], 120) + CASE WHEN DATEPART(MICROSECOND, a.[t]) = 0 THEN N'' ELSE N'.' + RIGHT(N'000000' + "
    )
    for value in (ROWS[0][3], ROWS[1][3], ROWS[2][3]):
        style_120 = value.strftime("%Y-%m-%d %H:%M:%S")
        assert rowkeys.component_text(value) == style_120 + (
            "" if value.microsecond == 0 else f".{value.microsecond:06d}"
        )
    assert part("a.[s]", "nvarchar") == (
        "REPLACE(REPLACE(REPLACE(CONVERT(nvarchar(4000), a.[s]), N'\\', N'\\\\'), NCHAR(9), N'\\t'), "
        "NCHAR(10), N'\\n') COLLATE DATABASE_DEFAULT"
    )
    text = "a\tb\\c\nd"
    assert rowkeys.component_text(text) == text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    assert part("a.[v]", "varbinary") == "LOWER(CONVERT(nvarchar(max), a.[v], 2)) COLLATE DATABASE_DEFAULT"
    assert part("a.[n]", "decimal") == "CONVERT(nvarchar(4000), a.[n]) COLLATE DATABASE_DEFAULT"
    composite = templates.key_text(list(KEY), "a", ["bit", "nvarchar", "date", "datetime2", "decimal"])
    assert composite.startswith("CONCAT_WS(NCHAR(9), CASE WHEN a.[flag] = 1")
    # The Python side of SQL Server (plan counts, preview) builds the same text as the procedures.
    sql, params = MSSQLBackend.key_text_sql(
        None, [(f"a.[{c}]", g, s) for c, g, s in zip(KEY, GENERICS, SCALES, strict=True)]
    )
    assert params == []
    assert sql == templates.key_text(list(KEY), "a", ["bit", "nvarchar", "date", "datetime2", "decimal"])


def test_fn_key_text_has_a_branch_for_every_type_its_python_twin_knows():
    """archival.fn_key_text (sql/04) and templates.key_text_part treat the same sys.types names."""
    body = (SQL_DIR / "04_helper_functions.sql").read_text().split("FUNCTION archival.fn_key_text", 1)[1]
    body = body.split("\nGO", 1)[0]
    names = set(re.findall(r"N'(\w+)'", " ".join(re.findall(r"WHEN t\.value[^\n]*", body))))
    assert names == {
        "char", "varchar", "nchar", "nvarchar", "date", "datetime", "datetime2", "smalldatetime",
        "bit", "uniqueidentifier", "binary", "varbinary",
    }  # fmt: skip
    for name in names:
        assert "CONVERT(nvarchar(4000), a.[c]) COLLATE" not in templates.key_text_part("a.[c]", name), name
    assert "LOWER(CONVERT(nvarchar(max), ' + @alias + N'.' + QUOTENAME(j.value) + N', 2))" in body


# -- stored holds in earlier forms -----------------------------------------------------
# What earlier encoders stored for ROWS[0..2]: a boolean as 1/0 or True, a
# decimal as typed (12.5 on a numeric(18,2)) or as SQLite printed it (-7), a
# timestamp with a T or PostgreSQL's shortened fraction, a backslash unescaped.
OLD_FORMS = [
    "1\ta\\tb\t2024-02-29\t2024-02-29T10:00:00\t12.5",
    "0\tx\\y\t2024-03-01\t2024-03-01 10:00:00.12\t0.05",
    "True\tn\\nl\t2024-03-02\t2024-03-02 23:59:59.999999\t-7",
]


def held_by_disposal(config: TableConfig) -> set[str]:
    t = archive_table_for(config)
    held_sql, held_params = t.held_sql(TODAY)
    with connections["archive"].cursor() as cur:
        cur.execute(f"SELECT {t.pk_select()} FROM {t.qualified} a WHERE {held_sql}", held_params)
        return {rowkeys.key_text(r, GENERICS, SCALES) for r in cur.fetchall()}


def old_keys_hold(texts: list[str], **fields) -> Hold:
    """A KEYS hold as an earlier version stored it (key texts as they are)."""
    hold = Hold.objects.using("archive").create(
        scope=HoldScope.KEYS, source_db=SOURCE, schema_name=source_schema(), table_name=TABLE,
        reason="litigation", placed_by="alice", **fields,
    )  # fmt: skip
    for text in texts:
        HoldKey.objects.using("archive").create(hold=hold, key_text=text)
    return hold


@pytest.mark.django_db(databases=DATABASES)
def test_holds_stored_in_earlier_forms_protect_their_rows_once_canonicalized(disposal_personas):
    create_key_table()
    config = make_key_config()
    hold = old_keys_hold(OLD_FORMS)
    # One key stored in an old form and in the canonical one: nothing to add.
    both = old_keys_hold([OLD_FORMS[0], rowkeys.key_text(ROWS[0])])
    assert held_by_disposal(config) == {rowkeys.key_text(ROWS[0])}  # only through the canonical one

    preview = canonicalize_hold_keys(actor=disposal_personas["alice"], dry_run=True)
    assert preview.keys_added == 3 and held_by_disposal(config) == {rowkeys.key_text(ROWS[0])}

    result = canonicalize_hold_keys(actor=disposal_personas["alice"])
    canonical = [rowkeys.key_text(r) for r in ROWS[:3]]
    assert sorted(result.added[hold.pk]) == sorted(zip(OLD_FORMS, canonical, strict=True))
    assert both.pk not in result.added
    # The stored texts stay (hold keys are never changed); the canonical ones protect the rows.
    assert set(hold.keys.values_list("key_text", flat=True)) == {*OLD_FORMS, *canonical}
    assert held_by_disposal(config) == set(canonical)
    events = AuditEvent.objects.filter(action="hold.keys_canonicalized")
    assert [(e.object_id, e.counts, e.table_label) for e in events] == [(str(hold.pk), {"keys": 3}, config.label)]

    again = canonicalize_hold_keys(actor=disposal_personas["alice"])
    assert again.added == {} and AuditEvent.objects.filter(action="hold.keys_canonicalized").count() == 1


@pytest.mark.django_db(databases=DATABASES)
def test_a_key_that_cannot_be_read_refuses_and_changes_nothing(disposal_personas):
    create_key_table()
    make_key_config()
    hold = old_keys_hold(OLD_FORMS[:1])
    unreadable = old_keys_hold(["maybe\tx\t2024-03-01\t2024-03-01 10:00:00\t1.00"])
    with pytest.raises(HoldKeysUnreadable, match="'maybe' is not a boolean"):
        canonicalize_hold_keys(actor=disposal_personas["alice"])
    assert list(hold.keys.values_list("key_text", flat=True)) == OLD_FORMS[:1]
    assert not AuditEvent.objects.filter(action="hold.keys_canonicalized").exists()
    # The command says the same and fails.
    with pytest.raises(CommandError, match="nothing was changed"):
        call_command("canonicalize_hold_keys", stdout=io.StringIO())
    assert list(hold.keys.values_list("key_text", flat=True)) == OLD_FORMS[:1]

    # Released, it protects nothing: reported and left as it is.
    release_hold(unreadable.pk, actor=disposal_personas["alice"], reason="settled")
    out = io.StringIO()
    call_command("canonicalize_hold_keys", stdout=out)
    assert "added the canonical text of 1 key(s) to 1 hold(s)" in out.getvalue()
    assert "(released: left as it is)" in out.getvalue()
    assert set(hold.keys.values_list("key_text", flat=True)) == {OLD_FORMS[0], rowkeys.key_text(ROWS[0])}


def test_a_stored_key_text_is_read_by_the_column_types():
    assert rowkeys.canonical_key_text(OLD_FORMS[1], GENERICS, SCALES) == rowkeys.key_text(ROWS[1])
    # TABs written unescaped inside the one text column of the key.
    assert rowkeys.canonical_key_text("1\ta\tb\t2024-02-29\t2024-02-29 10:00:00\t12.50", GENERICS, SCALES) == (
        rowkeys.key_text(ROWS[0])
    )
    canonical = rowkeys.key_text(ROWS[2])
    assert rowkeys.canonical_key_text(canonical, GENERICS, SCALES) == canonical
    with pytest.raises(ValueError, match="3 component"):
        rowkeys.canonical_key_text("1\tx\t2024-01-01", GENERICS, SCALES)
    with pytest.raises(ValueError, match="component 3"):
        rowkeys.canonical_key_text("1\tx\t01/01/2024\t2024-01-01 10:00:00\t1", GENERICS, SCALES)
