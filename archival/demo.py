"""Build our users' topology in the source databases, with table configs.

SourceDB1: Position (key basketId, positionId, businessDate; contractId) and
Contract (maturityDate). SourceDB2: Trade (tradeDate, settlementDate;
contractId references Contract) and Contract. SourceDB3: PriceHistory
(asOfDate). Plus generated reference and operational tables, so that 100+
tables are configured. Deterministic (fixed seed), relative to ``today``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

from django.conf import settings
from django.db import connections, transaction

from archival.backends import backend_for
from governance.models import TableConfig

SEED = 20261125


@dataclass
class DemoSize:
    positions: int = 200_000
    contracts: int = 4_000
    trades: int = 60_000
    prices: int = 40_000
    generated_tables: int = 100
    generated_rows: int = 400


def source_schema(alias: str) -> str:
    conn = connections[alias]
    if conn.vendor == "sqlite":
        return "main"
    if conn.vendor == "mysql":
        return conn.settings_dict["NAME"]
    if conn.vendor == "microsoft":
        return "dbo"
    return alias.lower()


def _types(vendor: str) -> dict[str, str]:
    return {
        "ts": "DATETIME" if vendor in {"sqlite", "mysql"} else "TIMESTAMP",
        "text": "VARCHAR(40)",
    }


def _create(alias: str, table: str, ddl_columns: str, drop: bool = True) -> str:
    backend = backend_for(alias)
    schema = source_schema(alias)
    qualified = backend.qualified(schema, table)
    with connections[alias].cursor() as cur:
        if backend.vendor == "postgresql":
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {backend.quote(schema)}")
        if drop:
            cur.execute(f"DROP TABLE IF EXISTS {qualified}" + (" CASCADE" if backend.vendor == "postgresql" else ""))
        cur.execute(f"CREATE TABLE {qualified} ({ddl_columns})")
    return qualified


def _load(alias: str, qualified: str, rows: list[tuple], chunk: int = 20_000) -> None:
    if not rows:
        return
    marks = ", ".join(["%s"] * len(rows[0]))
    with transaction.atomic(using=alias), connections[alias].cursor() as cur:
        for i in range(0, len(rows), chunk):
            cur.executemany(f"INSERT INTO {qualified} VALUES ({marks})", rows[i : i + chunk])


def _day(rng: random.Random, today: date, max_days: int) -> date:
    return today - timedelta(days=rng.randrange(max_days))


def _d(value, vendor):
    if value is None:
        return None
    return value.isoformat() if vendor == "sqlite" else value


def build_contracts(alias: str, n: int, today: date, rng: random.Random) -> list[date]:
    vendor = connections[alias].vendor
    t = _types(vendor)
    q = _create(
        alias,
        "Contract",
        f'"contractId" INTEGER NOT NULL PRIMARY KEY, "contractRef" {t["text"]}, "counterparty" {t["text"]}, '
        f'"maturityDate" DATE NULL, "notional" NUMERIC(18,2)'.replace('"', "`" if vendor == "mysql" else '"'),
    )
    maturities = []
    rows = []
    for cid in range(1, n + 1):
        # Maturities from 6 years ago to 2 years ahead; 1% unknown.
        maturity = None if rng.random() < 0.01 else today - timedelta(days=rng.randrange(-730, 6 * 365))
        maturities.append(maturity)
        rows.append(
            (
                cid,
                f"C-{cid:07d}",
                f"CP{rng.randrange(300):03d}",
                _d(maturity, vendor),
                f"{rng.uniform(1e4, 1e8):.2f}",
            )
        )
    _load(alias, q, rows)
    return maturities


def build_positions(alias: str, n: int, contracts: int, today: date, rng: random.Random) -> None:
    vendor = connections[alias].vendor
    t = _types(vendor)
    qc = "`" if vendor == "mysql" else '"'
    cols = (
        f'"basketId" INTEGER NOT NULL, "positionId" INTEGER NOT NULL, "businessDate" DATE NOT NULL, '
        f'"contractId" INTEGER, "quantity" NUMERIC(18,4), "price" NUMERIC(18,6), "marketValue" NUMERIC(18,2), '
        f'"currency" CHAR(3), "book" {t["text"]}, "trader" {t["text"]}, "updatedAt" {t["ts"]}, '
        f'PRIMARY KEY ("basketId", "positionId", "businessDate")'
    ).replace('"', qc)
    q = _create(alias, "Position", cols)
    rows = []
    for i in range(n):
        basket, position = divmod(i, 500)
        business = _day(rng, today, 5 * 365)
        qty = rng.uniform(-1e5, 1e5)
        price = rng.uniform(1, 500)
        rows.append(
            (
                basket,
                position,
                _d(business, vendor),
                rng.randrange(1, contracts + 1),
                f"{qty:.4f}",
                f"{price:.6f}",
                f"{qty * price:.2f}",
                rng.choice(["EUR", "USD", "GBP", "CHF"]),
                f"BOOK{rng.randrange(40):02d}",
                f"T{rng.randrange(200):03d}",
                f"{business.isoformat()} 18:00:00",
            )
        )
    _load(alias, q, rows)


def build_trades(alias: str, n: int, contracts: int, today: date, rng: random.Random) -> None:
    vendor = connections[alias].vendor
    t = _types(vendor)
    qc = "`" if vendor == "mysql" else '"'
    cols = (
        f'"tradeId" BIGINT NOT NULL PRIMARY KEY, "contractId" INTEGER REFERENCES "Contract" ("contractId"), '
        f'"tradeDate" DATE NOT NULL, "settlementDate" DATE NULL, "quantity" NUMERIC(18,4), "price" NUMERIC(18,6), '
        f'"side" CHAR(1), "counterparty" {t["text"]}'
    ).replace('"', qc)
    if vendor == "postgresql":
        cols = cols.replace('REFERENCES "Contract"', f'REFERENCES "{source_schema(alias)}"."Contract"')
    q = _create(alias, "Trade", cols)
    rows = []
    for i in range(1, n + 1):
        trade = _day(rng, today, 5 * 365)
        # 0.5% unsettled: no settlement date, never eligible.
        settle = None if rng.random() < 0.005 else trade + timedelta(days=rng.choice([0, 1, 2, 3]))
        rows.append(
            (
                i,
                rng.randrange(1, contracts + 1),
                _d(trade, vendor),
                _d(settle, vendor),
                f"{rng.uniform(1, 1e5):.4f}",
                f"{rng.uniform(1, 500):.6f}",
                rng.choice("BS"),
                f"CP{rng.randrange(300):03d}",
            )
        )
    _load(alias, q, rows)


def build_prices(alias: str, n: int, today: date, rng: random.Random) -> None:
    vendor = connections[alias].vendor
    qc = "`" if vendor == "mysql" else '"'
    cols = '"instrumentId" INTEGER NOT NULL, "asOfDate" DATE NOT NULL, "closePrice" NUMERIC(18,6), "volume" BIGINT, PRIMARY KEY ("instrumentId", "asOfDate")'.replace(
        '"', qc
    )
    q = _create(alias, "PriceHistory", cols)
    days = 5 * 365
    rows = []
    for i in range(n):
        inst, offset = divmod(i, days)
        rows.append(
            (
                inst + 1,
                _d(today - timedelta(days=offset), vendor),
                f"{rng.uniform(1, 900):.6f}",
                rng.randrange(10**6),
            )
        )
    _load(alias, q, rows)


def build_generated(alias: str, name: str, n: int, today: date, rng: random.Random) -> None:
    vendor = connections[alias].vendor
    t = _types(vendor)
    qc = "`" if vendor == "mysql" else '"'
    cols = f'"id" INTEGER NOT NULL PRIMARY KEY, "eventDate" DATE NULL, "category" {t["text"]}, "amount" NUMERIC(18,2)'.replace(
        '"', qc
    )
    q = _create(alias, name, cols)
    rows = []
    for i in range(1, n + 1):
        when = None if rng.random() < 0.01 else _day(rng, today, 6 * 365)
        rows.append((i, _d(when, vendor), f"K{rng.randrange(50)}", f"{rng.uniform(0, 1e6):.2f}"))
    _load(alias, q, rows)


def demo_configs(size: DemoSize) -> list[dict]:
    s1, s2, s3 = settings.SOURCE_DATABASES[:3]
    configs = [
        dict(
            source_db=s1,
            table_name="Position",
            table_type="FUNCTIONAL",
            archival_logic="CONTRACT_MATURITY",
            contract_table="Contract",
            contract_key_column="contractId",
            contract_reference_column="contractId",
            contract_maturity_column="maturityDate",
            hold_contract_column="contractId",
            execution_priority=10,
        ),
        dict(
            source_db=s1,
            table_name="Contract",
            table_type="FUNCTIONAL",
            date_column="maturityDate",
            hold_contract_column="contractId",
            execution_priority=200,
        ),
        dict(
            source_db=s2,
            table_name="Trade",
            table_type="FUNCTIONAL",
            date_column="settlementDate",
            hold_contract_column="contractId",
            execution_priority=10,
        ),
        dict(
            source_db=s2,
            table_name="Contract",
            table_type="FUNCTIONAL",
            date_column="maturityDate",
            hold_contract_column="contractId",
            execution_priority=200,
        ),
        dict(
            source_db=s3,
            table_name="PriceHistory",
            table_type="REFERENCE",
            date_column="asOfDate",
            execution_priority=50,
        ),
    ]
    for i in range(size.generated_tables):
        alias = (s1, s2, s3)[i % 3]
        kind = "REFERENCE" if i % 2 == 0 else "OPERATIONAL"
        configs.append(
            dict(
                source_db=alias,
                table_name=generated_name(i),
                table_type=kind,
                date_column="eventDate",
                execution_priority=100,
            )
        )
    return configs


def generated_name(i: int) -> str:
    return f"RefRate{i:03d}" if i % 2 == 0 else f"OpsEvent{i:03d}"


def build_demo(size: DemoSize | None = None, today: date | None = None, *, configs: bool = True) -> dict:
    """(Re)create the demo source tables and their configs; return row counts per table."""
    size = size or DemoSize()
    today = today or date.today()
    rng = random.Random(SEED)
    s1, s2, s3 = settings.SOURCE_DATABASES[:3]
    counts: dict[str, int] = {}
    # Children first when dropping (Trade references Contract).
    for alias, table in ((s2, "Trade"),):
        backend = backend_for(alias)
        with connections[alias].cursor() as cur:
            if backend.vendor == "postgresql":
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {backend.quote(source_schema(alias))}")
            cur.execute(f"DROP TABLE IF EXISTS {backend.qualified(source_schema(alias), table)}")
    build_contracts(s1, size.contracts, today, rng)
    build_positions(s1, size.positions, size.contracts, today, rng)
    build_contracts(s2, size.contracts, today, rng)
    build_trades(s2, size.trades, size.contracts, today, rng)
    build_prices(s3, size.prices, today, rng)
    counts.update(
        {
            f"{s1}.Contract": size.contracts,
            f"{s1}.Position": size.positions,
            f"{s2}.Contract": size.contracts,
            f"{s2}.Trade": size.trades,
            f"{s3}.PriceHistory": size.prices,
        }
    )
    for i in range(size.generated_tables):
        alias = (s1, s2, s3)[i % 3]
        build_generated(alias, generated_name(i), size.generated_rows, today, rng)
        counts[f"{alias}.{generated_name(i)}"] = size.generated_rows
    if configs:
        for spec in demo_configs(size):
            config, _ = TableConfig.objects.get_or_create(
                source_db=spec["source_db"],
                schema_name=source_schema(spec["source_db"]),
                table_name=spec["table_name"],
                defaults={k: v for k, v in spec.items() if k not in {"source_db", "table_name"}},
            )
            config.full_clean()
            config.save()
    return counts
