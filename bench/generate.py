"""Deterministic benchmark data: two data sets.

``tables120``: the demo's topology scaled to 120 tables (below).
``single``: PERFORMANCE.md's measurement, one table: Position (composite key
basketId, positionId, businessDate; 11 columns) with every row of the size,
joined to one contract per 50 rows (20,000 at 1,000,000 rows), 40% of the
rows eligible (contract matured before the threshold). Its Contract table is
loaded but not archived (no TableConfig, no yardstick moves it): the set
measures one table's move, as PERFORMANCE.md does.

Three source databases, like the demo: SourceDB1 (Position keyed by basketId,
positionId, businessDate, joined to Contract by contractId), SourceDB2 (Trade
keyed by tradeId, version, joined to its own Contract), SourceDB3
(PriceHistory keyed by instrumentId, priceDate), plus generated tables spread
over the three (a contract join on half of the functional ones in SourceDB1
and SourceDB2, a date column on the rest; composite keys on every fifth one).

Every value is a pure function of the row number and the seed, computed by
the database itself (PostgreSQL ``generate_series``, MariaDB's sequence
engine, a recursive CTE on SQLite): nothing travels through Python, loading
is fast, and the three engines hold exactly the same rows, so checksums and
row counts compare across engines.

Eligibility: every table keeps 24 months in the source and the bench cutoff
is 2025-01-01, so the threshold is 2023-01-01. Dates and contract maturities
are spread uniformly over 2019-01-01 .. 2028-12-31 (3,653 days), 1,461 of
which fall before the threshold: 40% of the rows are eligible (0.5% of the
dated rows have no date and are never eligible). A contract is eligible once
no remaining child row references it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

SEED = 20250101
CUTOFF = "2025-01-01"
THRESHOLD = "2023-01-01"
MONTHS = 24
YEARS = 10
SIZES = {"tiny": 20_000, "small": 1_000_000, "large": 12_000_000}
SOURCES = ("SourceDB1", "SourceDB2", "SourceDB3")
SPAN_DAYS = 3653  # 2019-01-01 .. 2028-12-31
BASE_DATE = "2019-01-01"

NOUNS = (
    "Cashflow", "Settlement", "Fee", "Margin", "Collateral", "Payment", "Accrual", "Coupon",
    "Valuation", "Exposure", "Limit", "Confirmation", "Allocation", "Instruction", "Booking",
    "Reset", "Fixing", "Exercise", "Novation", "Netting", "Invoice", "Statement", "Tax",
)  # fmt: skip


@dataclass(frozen=True)
class Col:
    name: str
    kind: str  # int, bigint, date, datetime, dec, text
    expr: str  # template over {n} (row number), {h1}..{h4} (hashes), see Dialect
    size: int = 0


@dataclass(frozen=True)
class TableSpec:
    source: str
    name: str
    rows: int
    pk: tuple[str, ...]
    columns: tuple[Col, ...]
    table_type: str = "FUNCTIONAL"
    logic: str = "DATE_BASED"  # or CONTRACT_MATURITY
    date_column: str = ""
    contract_table: str = ""  # for CONTRACT_MATURITY children
    is_contract: bool = False
    priority: int = 100
    indexes: tuple[str, ...] = field(default_factory=tuple)
    # False: loaded (a child's join needs it) but neither configured nor moved.
    archived: bool = True

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def contract_column(self) -> str:
        return "contractId" if "contractId" in self.column_names else ""


# -- expressions ---------------------------------------------------------------
# {n}: 0-based row number. {hK}: a deterministic hash of the row number and the
# seed, 0 <= h < 2^31 - 1 (multiplicative hashing; no overflow below 3e9 rows).
def _hash(k: int, seed: int) -> str:
    return f"((({{n}} + {k * 7919}) * 2654435761 + {seed}) % 2147483647)"


def _dated(name: str, k: int) -> Col:
    # 1 row in 200 has no date (never eligible; the plan counts it).
    return Col(name, "date", f"CASE WHEN {{h{k}}} % 200 = 7 THEN NULL ELSE {{date:{{h{k + 1}}} % {SPAN_DAYS}}} END")


def _contract_ref(k: int, contracts: int) -> Col:
    return Col("contractId", "int", f"({{h{k}}} % {contracts}) + 1")


def _money(name: str, k: int) -> Col:
    return Col(name, "dec", f"{{dec:{{h{k}}} % 100000000}}")


def _text(name: str, prefix: str, k: int, modulo: int, size: int) -> Col:
    return Col(name, "text", f"{{cat:'{prefix}'|{{h{k}}} % {modulo}}}", size)


def _stamp(name: str, k: int) -> Col:
    return Col(name, "datetime", f"{{ts:{{h{k}}} % 31536000}}")


def _currency(k: int) -> Col:
    return Col(
        "currency",
        "text",
        f"CASE {{h{k}}} % 4 WHEN 0 THEN 'EUR' WHEN 1 THEN 'USD' WHEN 2 THEN 'GBP' ELSE 'CHF' END",
        3,
    )


def contract_table(source: str, rows: int, archived: bool = True) -> TableSpec:
    return TableSpec(
        source,
        "Contract",
        rows,
        ("contractId",),
        (
            Col("contractId", "int", "{n} + 1"),
            Col("maturityDate", "date", f"{{date:{{h1}} % {SPAN_DAYS}}}"),
            _text("counterparty", "CP", 2, 5000, 40),
            _money("notional", 3),
            _currency(4),
        ),
        table_type="REFERENCE",
        logic="DATE_BASED",
        date_column="maturityDate",
        is_contract=True,
        priority=200,
        indexes=("maturityDate",),
        archived=archived,
    )


def position_table(rows: int, contracts: int) -> TableSpec:
    return TableSpec(
        "SourceDB1",
        "Position",
        rows,
        ("basketId", "positionId", "businessDate"),
        (
            Col("basketId", "int", "{div:{n}|1000}"),
            Col("positionId", "int", "{div:{n}|10} % 100"),
            Col("businessDate", "date", "{date:{n} % 10}"),
            _contract_ref(1, contracts),
            _money("quantity", 2),
            _money("price", 3),
            _money("marketValue", 4),
            _currency(1),
            _text("bookCode", "BK", 2, 300, 16),
            Col("status", "text", "CASE {h3} % 3 WHEN 0 THEN 'OPEN' WHEN 1 THEN 'CLOSED' ELSE 'SETTLED' END", 8),
            _stamp("updatedAt", 4),
        ),
        logic="CONTRACT_MATURITY",
        contract_table="Contract",
        indexes=("contractId",),
    )


def trade_table(rows: int, contracts: int) -> TableSpec:
    return TableSpec(
        "SourceDB2",
        "Trade",
        rows,
        ("tradeId", "version"),
        (
            Col("tradeId", "bigint", "{div:{n}|2} + 1"),
            Col("version", "int", "({n} % 2) + 1"),
            _contract_ref(1, contracts),
            Col("tradeDate", "date", f"{{date:{{h2}} % {SPAN_DAYS}}}"),
            _money("amount", 3),
            _currency(4),
            _text("trader", "TR", 1, 400, 32),
            _stamp("bookedAt", 2),
        ),
        logic="CONTRACT_MATURITY",
        contract_table="Contract",
        indexes=("contractId",),
    )


def price_table(rows: int) -> TableSpec:
    return TableSpec(
        "SourceDB3",
        "PriceHistory",
        rows,
        ("instrumentId", "priceDate"),
        (
            Col("instrumentId", "int", f"{{div:{{n}}|{SPAN_DAYS}}} + 1"),
            Col("priceDate", "date", f"{{date:{{n}} % {SPAN_DAYS}}}"),
            _money("closePrice", 1),
            _money("openPrice", 2),
            Col("volume", "bigint", "{h3} % 1000000"),
            _currency(4),
        ),
        table_type="REFERENCE",
        date_column="priceDate",
        indexes=(),
    )


def generated_table(k: int, rows: int, contracts: dict[str, int]) -> TableSpec:
    source = SOURCES[k % 3]
    composite = k % 5 == 0
    name = f"{NOUNS[k % len(NOUNS)]}{k:03d}"
    if composite:
        key_cols = (Col("accountId", "int", "{div:{n}|100} + 1"), Col("seqNo", "int", "{n} % 100"))
        pk = ("accountId", "seqNo")
    else:
        key_cols = (Col("id", "bigint", "{n} + 1"),)
        pk = ("id",)
    by_contract = source in contracts and k % 2 == 0
    types = ("FUNCTIONAL", "OPERATIONAL", "REFERENCE")
    if by_contract:
        first = _contract_ref(1, contracts[source])
        extra = dict(
            logic="CONTRACT_MATURITY", contract_table="Contract", table_type="FUNCTIONAL", indexes=("contractId",)
        )
    else:
        first = _dated("eventDate", 1)
        extra = dict(date_column="eventDate", table_type=types[k % 3], indexes=("eventDate",))
    cols = (*key_cols, first, _money("amount", 3), _text("memo", "M", 4, 100000, 40), _stamp("createdAt", 2))
    return TableSpec(source, name, rows, pk, cols, **extra)


def build_specs(total_rows: int, tables: int = 120) -> list[TableSpec]:
    """The table list for ``total_rows`` rows in ``tables`` tables (5..120).

    The five demo tables are always there; generated tables are added in
    order, round-robin over the sources. Shares of the total are fixed
    weights renormalised over the chosen tables, so every size has the same
    shape and ``tables`` changes only how the same rows are spread.
    """
    if not 5 <= tables <= 120:
        raise ValueError("tables must be between 5 and 120")
    weights: list[tuple[str, float]] = [
        ("Position", 33.0), ("Contract1", 2.0), ("Trade", 20.0), ("Contract2", 2.0), ("PriceHistory", 15.0),
    ]  # fmt: skip
    gen = list(range(tables - 5))
    weights += [(f"gen{k}", 28.0 / 115 * (0.5 + (k * 37 % 11) / 10)) for k in gen]
    total_w = sum(w for _, w in weights)
    rows = {name: max(100, int(total_rows * w / total_w)) for name, w in weights}
    c1, c2 = rows["Contract1"], rows["Contract2"]
    contracts = {"SourceDB1": c1, "SourceDB2": c2}
    specs = [
        position_table(rows["Position"], c1),
        contract_table("SourceDB1", c1),
        trade_table(rows["Trade"], c2),
        contract_table("SourceDB2", c2),
        price_table(rows["PriceHistory"]),
    ]
    specs += [generated_table(k, rows[f"gen{k}"], contracts) for k in gen]
    return specs


DATASETS = ("single", "tables120")
ROWS_PER_CONTRACT = 50


def single_specs(total_rows: int) -> list[TableSpec]:
    """PERFORMANCE.md's data: every row in Position, its Contract loaded but not archived."""
    contracts = max(1, total_rows // ROWS_PER_CONTRACT)
    return [position_table(total_rows, contracts), contract_table("SourceDB1", contracts, archived=False)]


def specs_for(dataset: str, total_rows: int, tables: int = 120) -> list[TableSpec]:
    """The table list of ``dataset`` (``tables`` applies to tables120 only)."""
    if dataset == "single":
        return single_specs(total_rows)
    if dataset == "tables120":
        return build_specs(total_rows, tables)
    raise ValueError(f"unknown data set {dataset!r} (one of {', '.join(DATASETS)})")


def to_archive(specs: list[TableSpec]) -> list[TableSpec]:
    """The tables a cycle (and every yardstick) moves."""
    return [s for s in specs if s.archived]


# -- dialects ------------------------------------------------------------------
class Dialect:
    vendor = ""
    types = {}

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def render(self, expr: str, seed: int) -> str:
        """Expand the tiny expression language into this engine's SQL."""
        for k in range(1, 6):
            expr = expr.replace(f"{{h{k}}}", _hash(k, seed))
        expr = expr.replace("{n}", self.row_var)
        # innermost-first expansion of {fn:args}
        while "{" in expr:
            end = expr.index("}")
            start = expr.rindex("{", 0, end)
            fn, _, args = expr[start + 1 : end].partition(":")
            expr = expr[:start] + getattr(self, f"fn_{fn}")(*args.split("|")) + expr[end + 1 :]
        return expr

    row_var = "n"

    def fn_cat(self, a: str, b: str) -> str:
        return f"({a} || CAST({b} AS TEXT))"

    def fn_div(self, a: str, b: str) -> str:
        return f"({a} / {b})"

    def column_type(self, col: Col) -> str:
        if col.kind == "text":
            return f"VARCHAR({col.size})"
        return self.types[col.kind]


class PostgresDialect(Dialect):
    vendor = "postgresql"
    types = {"int": "integer", "bigint": "bigint", "date": "date", "datetime": "timestamp", "dec": "numeric(18,2)"}

    def fn_date(self, days: str) -> str:
        return f"(DATE '{BASE_DATE}' + CAST({days} AS integer))"

    def fn_ts(self, secs: str) -> str:
        return f"(TIMESTAMP '2024-01-01 00:00:00' + make_interval(secs => {secs}))"

    def fn_dec(self, x: str) -> str:
        return f"(CAST({x} AS numeric) / 100)"

    def rows_from(self, count: int) -> str:
        return f"generate_series(0, {count - 1}) AS g(n)"


class SQLiteDialect(Dialect):
    vendor = "sqlite"
    types = {"int": "INTEGER", "bigint": "BIGINT", "date": "DATE", "datetime": "DATETIME", "dec": "NUMERIC(18,2)"}

    def fn_date(self, days: str) -> str:
        return f"date('{BASE_DATE}', '+' || ({days}) || ' days')"

    def fn_ts(self, secs: str) -> str:
        return f"datetime('2024-01-01 00:00:00', '+' || ({secs}) || ' seconds')"

    def fn_dec(self, x: str) -> str:
        return f"(({x}) / 100.0)"


class MariaDBDialect(Dialect):
    vendor = "mysql"
    types = {"int": "INT", "bigint": "BIGINT", "date": "DATE", "datetime": "DATETIME", "dec": "DECIMAL(18,2)"}
    row_var = "seq"

    def quote(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    def fn_cat(self, a: str, b: str) -> str:
        return f"CONCAT({a}, {b})"

    def fn_div(self, a: str, b: str) -> str:
        return f"({a} DIV {b})"

    def fn_date(self, days: str) -> str:
        return f"DATE_ADD('{BASE_DATE}', INTERVAL ({days}) DAY)"

    def fn_ts(self, secs: str) -> str:
        return f"TIMESTAMPADD(SECOND, {secs}, '2024-01-01 00:00:00')"

    def fn_dec(self, x: str) -> str:
        return f"(({x}) / 100)"


def dialect_for(vendor: str) -> Dialect:
    return {"postgresql": PostgresDialect, "sqlite": SQLiteDialect, "mysql": MariaDBDialect}[vendor]()


# -- loading -------------------------------------------------------------------
def create_sql(d: Dialect, qualified: str, spec: TableSpec) -> str:
    cols = [f"{d.quote(c.name)} {d.column_type(c)}{' NOT NULL' if c.name in spec.pk else ''}" for c in spec.columns]
    cols.append(f"PRIMARY KEY ({', '.join(d.quote(c) for c in spec.pk)})")
    return f"CREATE TABLE {qualified} ({', '.join(cols)})"


def insert_sql(d: Dialect, qualified: str, spec: TableSpec, seed: int) -> str:
    names = ", ".join(d.quote(c.name) for c in spec.columns)
    exprs = ", ".join(d.render(c.expr, seed) for c in spec.columns)
    if d.vendor == "postgresql":
        return f"INSERT INTO {qualified} ({names}) SELECT {exprs} FROM generate_series(0, {spec.rows - 1}) AS g(n)"
    if d.vendor == "mysql":
        return f"INSERT INTO {qualified} ({names}) SELECT {exprs} FROM seq_0_to_{spec.rows - 1}"
    return (
        f"WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < {spec.rows - 1}) "
        f"INSERT INTO {qualified} ({names}) SELECT {exprs} FROM g"
    )


def load_table(connection, schema: str, spec: TableSpec, seed: int = SEED) -> None:
    """(Re)create one source table and fill it server-side; indexes after the load."""
    d = dialect_for(connection.vendor)
    qualified = f"{d.quote(schema)}.{d.quote(spec.name)}"
    # Tables of the same shape get different values (the seed is per table).
    seed = seed + zlib.crc32(spec.name.encode()) % 1_000_000
    with connection.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {qualified}")
        cur.execute(create_sql(d, qualified, spec))
        cur.execute(insert_sql(d, qualified, spec, seed))
        for col in spec.indexes:
            idx = d.quote(f"{spec.name}_{col}_idx")
            if d.vendor == "mysql":
                cur.execute(f"CREATE INDEX {idx} ON {qualified} ({d.quote(col)})")
            elif d.vendor == "sqlite":
                cur.execute(f"CREATE INDEX {d.quote(schema)}.{idx} ON {d.quote(spec.name)} ({d.quote(col)})")
            else:
                cur.execute(f"CREATE INDEX {idx} ON {qualified} ({d.quote(col)})")


def source_schema(alias: str) -> str:
    """The schema a source's tables live in, for the connection ``alias`` points at."""
    from django.db import connections

    conn = connections[alias]
    if conn.vendor == "sqlite":
        return "main"
    if conn.vendor == "mysql":
        return conn.settings_dict["NAME"]
    # PostgreSQL: one schema per source, so that sources can share a database
    # (the same-server topology) without their Contract tables colliding.
    return alias.lower()


def load(specs: list[TableSpec], seed: int = SEED, log=print) -> dict[str, int]:
    """Create and fill every table of ``specs`` in its source database."""
    import time

    from django.db import connections, transaction

    loaded: dict[str, int] = {}
    for alias in SOURCES:
        conn = connections[alias]
        schema = source_schema(alias)
        t0 = time.perf_counter()
        todo = [s for s in specs if s.source == alias]
        if conn.vendor == "postgresql":
            with conn.cursor() as cur:
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {PostgresDialect().quote(schema)}")
        if conn.vendor == "sqlite":
            # Loading only: no journal, no fsync (rebuilt from scratch on any crash).
            with conn.cursor() as cur:
                cur.execute("PRAGMA journal_mode=OFF")
                cur.execute("PRAGMA synchronous=OFF")
        if conn.vendor == "mysql":
            with conn.cursor() as cur:
                cur.execute("SET SESSION unique_checks = 0")
        with transaction.atomic(using=alias):
            for spec in todo:
                load_table(conn, schema, spec, seed)
                loaded[f"{alias}.{spec.name}"] = spec.rows
        if conn.vendor == "sqlite":
            with conn.cursor() as cur:
                cur.execute("ANALYZE")
                cur.execute("PRAGMA journal_mode=DELETE")
                cur.execute("PRAGMA synchronous=FULL")
        elif conn.vendor == "postgresql":
            d = PostgresDialect()
            with conn.cursor() as cur:
                for spec in todo:
                    cur.execute(f"VACUUM ANALYZE {d.quote(schema)}.{d.quote(spec.name)}")
        elif conn.vendor == "mysql":
            with conn.cursor() as cur:
                cur.execute("SET SESSION unique_checks = 1")
                for spec in todo:
                    cur.execute(f"ANALYZE TABLE {MariaDBDialect().quote(schema)}.{MariaDBDialect().quote(spec.name)}")
                    cur.fetchall()
        log(
            f"loaded {alias}: {len(todo)} tables, {sum(s.rows for s in todo):,} rows in {time.perf_counter() - t0:.1f}s"
        )
    return loaded


def create_configs(specs: list[TableSpec]) -> list:
    """One TableConfig per table, validated against the live schema (full_clean)."""
    from governance.models import TableConfig

    made = []
    for spec in to_archive(specs):
        config = TableConfig(
            source_db=spec.source,
            schema_name=source_schema(spec.source),
            table_name=spec.name,
            table_type=spec.table_type,
            archival_logic=spec.logic,
            date_column=spec.date_column,
            months_retention_source=MONTHS,
            years_retention_archive=YEARS,
            execution_priority=spec.priority,
            hold_contract_column=spec.contract_column,
        )
        if spec.logic == "CONTRACT_MATURITY":
            config.contract_table = spec.contract_table
            config.contract_key_column = "contractId"
            config.contract_reference_column = "contractId"
            config.contract_maturity_column = "maturityDate"
        config.full_clean()
        config.save()
        made.append(config)
    return made


def eligible_rows(specs: list[TableSpec]) -> int:
    """Rows a cycle at CUTOFF must move, counted in the source (for checks)."""
    from django.db import connections

    total = 0
    for spec in to_archive(specs):
        conn = connections[spec.source]
        d = dialect_for(conn.vendor)
        schema = source_schema(spec.source)
        t = f"{d.quote(schema)}.{d.quote(spec.name)}"
        with conn.cursor() as cur:
            if spec.logic == "CONTRACT_MATURITY":
                c = f"{d.quote(schema)}.{d.quote(spec.contract_table)}"
                cur.execute(
                    f"SELECT COUNT(*) FROM {t} s JOIN {c} c ON c.{d.quote('contractId')} = s.{d.quote('contractId')} "
                    f"WHERE c.{d.quote('maturityDate')} < %s",
                    [THRESHOLD],
                )
            else:
                cur.execute(f"SELECT COUNT(*) FROM {t} WHERE {d.quote(spec.date_column)} < %s", [THRESHOLD])
            total += cur.fetchone()[0]
    return total
