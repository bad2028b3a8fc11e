"""Archive search paging on a 1,000,000-row archived table: page 1 vs a page past row 900,000.

Builds (once; ``--rebuild`` to redo) an archived ``SearchBench`` table in
SourceDB1's archive namespace with N rows laid out like an archived Position,
an (empty) source table and an active TableConfig, then times, through the
same code the pages use (``archival.search.query.fetch_page`` on the
``archive_readonly`` alias):

- page 1 and the page after row 900,000 in key order (keyset);
- the same two pages sorted on reference_date (indexed, not the key);
- the same two pages through the whole view (login, audit, template);
- for reference only, the OFFSET query the pages do not use.

Usage (own data directory; PostgreSQL with the usual *_DATABASE_URL variables):

    ARCHIVAL_DATA_DIR=/tmp/bench_search python manage.py migrate --database default  # etc., or:
    ARCHIVAL_DATA_DIR=/tmp/bench_search python bench/search_paging.py [--rows 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")

import django

django.setup()

from django.core.management import call_command
from django.db import connections, transaction

from archival.backends import backend_for
from archival.backends.sqlite import namespace_for
from archival.search.catalog import resolve_table
from archival.search.query import Sort, encode_cursor, fetch_page

SOURCE = "SourceDB1"
TABLE = "SearchBench"
COLUMNS = (
    '"basketId" INTEGER NOT NULL, "positionId" INTEGER NOT NULL, "businessDate" DATE NOT NULL, '
    '"contractId" INTEGER, "quantity" NUMERIC(18,4), "price" NUMERIC(18,6), "currency" CHAR(3), '
    '"book" VARCHAR(60), "trader" VARCHAR(40)'
)


def source_schema() -> str:
    return "main" if connections[SOURCE].vendor == "sqlite" else SOURCE.lower()


def rows_sql(vendor: str, n: int) -> str:
    if vendor == "sqlite":
        return (
            f"WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < {int(n)}) "
            "SELECT i / 1000, i % 1000, date('2015-01-01', '+' || (i % 365) || ' days'), i % 20000 + 1, "
            "(i % 20000) * 1.5, 10.25, 'EUR', 'BOOK' || (i % 40), 'T' || (i % 200), '2024-06-01 10:00:00', 1, "
            "date('2016-01-01', '+' || (i % 3000) || ' days'), date('2026-01-01', '+' || (i % 3000) || ' days') FROM s"
        )
    return (
        "SELECT i / 1000, i % 1000, DATE '2015-01-01' + (i % 365), i % 20000 + 1, (i % 20000) * 1.5, 10.25, 'EUR', "
        "'BOOK' || (i % 40), 'T' || (i % 200), TIMESTAMPTZ '2024-06-01 10:00:00+00', 1, "
        f"DATE '2016-01-01' + (i % 3000), DATE '2026-01-01' + (i % 3000) FROM generate_series(0, {int(n) - 1}) AS s(i)"
    )


def build(n: int) -> None:
    src = backend_for(SOURCE)
    schema = source_schema()
    with transaction.atomic(using=SOURCE), connections[SOURCE].cursor() as cur:
        if src.vendor == "postgresql":
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {src.quote(schema)}")
        cur.execute(f"DROP TABLE IF EXISTS {src.qualified(schema, TABLE)}")
        cur.execute(
            f'CREATE TABLE {src.qualified(schema, TABLE)} ({COLUMNS}, PRIMARY KEY ("basketId", "positionId", "businessDate"))'
        )
    arc = backend_for("archive")
    ns = namespace_for(SOURCE)
    table = arc.qualified(ns, TABLE)
    ts = "DATETIME" if arc.vendor == "sqlite" else "TIMESTAMPTZ"
    with transaction.atomic(using="archive"), connections["archive"].cursor() as cur:
        if arc.vendor == "postgresql":
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {arc.quote(ns)}")
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(
            f'CREATE TABLE {table} ({COLUMNS}, "archived_at" {ts} NOT NULL, "archive_run_id" BIGINT NOT NULL, '
            '"reference_date" DATE NULL, "retention_until" DATE NULL, '
            'CONSTRAINT "SearchBench_src_key" UNIQUE ("basketId", "positionId", "businessDate"))'
        )
        cur.execute(f"INSERT INTO {table} {rows_sql(arc.vendor, n)}")
        for suffix, column in (
            ("refdate", "reference_date"),
            ("retention", "retention_until"),
            ("contract", "contractId"),
        ):
            if arc.vendor == "sqlite":
                cur.execute(f'CREATE INDEX {arc.quote(ns)}."SearchBench_{suffix}" ON "SearchBench" ("{column}")')
            else:
                cur.execute(f'CREATE INDEX "SearchBench_{suffix}" ON {table} ("{column}")')
    with connections["archive"].cursor() as cur:
        cur.execute(f"ANALYZE {table}" if arc.vendor == "postgresql" else f"ANALYZE {arc.quote(ns)}")
    if arc.vendor == "postgresql":
        from archival.search.readonly import create_readonly_role

        create_readonly_role(role=connections["archive_readonly"].settings_dict["USER"], using="archive")
    from governance.models import TableConfig

    TableConfig.objects.filter(source_db=SOURCE, table_name=TABLE).delete()
    config = TableConfig(source_db=SOURCE, schema_name=schema, table_name=TABLE, date_column="businessDate")
    config.full_clean()
    config.save()
    connections["archive_readonly"].close()


def timed(fn, repeat: int) -> float:
    fn()  # warm
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def cursor_at(search_table, sort, position: int) -> str:
    """Cursor of the row at ``position`` in the order (setup only: uses OFFSET once)."""
    q = search_table.backend.quote
    names = [sort.column.name] if sort else []
    names += [k for k in search_table.key if k not in names]
    with connections["archive_readonly"].cursor() as cur:
        cur.execute(
            f"SELECT {', '.join(q(n) for n in names)} FROM {search_table.qualified} "
            f"ORDER BY {', '.join(q(n) for n in names)} LIMIT 1 OFFSET %s",
            [position - 1],
        )
        return encode_cursor(cur.fetchone())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()

    for alias in ("default", "archive"):
        call_command("migrate", database=alias, verbosity=0)
    arc = backend_for("archive")
    ns = namespace_for(SOURCE)
    present = arc.table_exists(ns, TABLE)
    if present:
        with connections["archive"].cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {arc.qualified(ns, TABLE)}")
            present = cur.fetchone()[0] == args.rows
    if args.rebuild or not present:
        started = time.perf_counter()
        build(args.rows)
        print(f"built {args.rows:,} archived rows in {time.perf_counter() - started:.1f}s")

    table = resolve_table(SOURCE, source_schema(), TABLE)
    deep = 900_001
    print(
        f"engine: {connections['archive_readonly'].vendor}; rows: {args.rows:,}; page size {args.page_size}; "
        f"median of {args.repeat}"
    )
    for label, sort in (("key order", None), ("sorted on reference_date", Sort(table.column("reference_date")))):
        deep_cursor = cursor_at(table, sort, deep - 1)
        first = timed(lambda s=sort: fetch_page(table, [], s, page_size=args.page_size), args.repeat)
        far = timed(
            lambda s=sort, c=deep_cursor: fetch_page(table, [], s, page_size=args.page_size, after=c), args.repeat
        )
        page = fetch_page(table, [], sort, page_size=args.page_size, after=deep_cursor)
        assert len(page.rows) == args.page_size
        print(f"  {label:26s} page 1: {first:7.2f} ms   page at row {deep:,}: {far:7.2f} ms")

    # For reference: what OFFSET would cost at the same depth (the pages never do this).
    q = table.backend.quote
    order = ", ".join(q(k) for k in table.key)

    def offset_page():
        with connections["archive_readonly"].cursor() as cur:
            cur.execute(
                f"SELECT * FROM {table.qualified} ORDER BY {order} LIMIT %s OFFSET %s", [args.page_size, deep - 1]
            )
            cur.fetchall()

    print(
        f"  {'(reference) OFFSET':26s}                  page at row {deep:,}: {timed(offset_page, args.repeat):7.2f} ms"
    )

    # The whole page: login, permission, form, query, audit row, template.
    from django.contrib.auth.models import Permission, User
    from django.test import Client
    from django.urls import reverse

    user, _ = User.objects.get_or_create(username="bench_reader")
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="governance", codename="view_archive_search")
    )
    client = Client()
    client.force_login(user)
    url = reverse("search:table", args=[SOURCE, source_schema(), TABLE])
    deep_cursor = cursor_at(table, None, deep - 1)
    first = timed(lambda: client.get(url), args.repeat)
    far = timed(lambda: client.get(url, {"_after": deep_cursor}), args.repeat)
    print(f"  {'whole view (key order)':26s} page 1: {first:7.2f} ms   page at row {deep:,}: {far:7.2f} ms")


if __name__ == "__main__":
    main()
