"""Order-independent checksums of source union archive, over every source column.

For each table: the number of rows and the sum (mod 2^64) of a 64-bit
BLAKE2 hash of each row's values, over the source table and the archive
table together (the archive projected on the source's columns). A lost row,
a duplicated row or a changed value changes the pair; comparing it with the
pair taken right after loading proves source union archive == original, with no
row in both. Rows are hashed in Python so the check reads the same on every
engine (SQLite has no hash function of its own).
"""

from __future__ import annotations

import hashlib

from django.db import connections

from bench.generate import TableSpec, dialect_for, source_schema, to_archive

MASK = (1 << 64) - 1


def _digest(cur) -> tuple[int, int]:
    count = total = 0
    while True:
        rows = cur.fetchmany(10_000)
        if not rows:
            return count, total
        for row in rows:
            h = hashlib.blake2b(repr(tuple(row)).encode(), digest_size=8).digest()
            total = (total + int.from_bytes(h, "big")) & MASK
        count += len(rows)


def table_checksums(specs: list[TableSpec]) -> dict[str, dict]:
    from archival.backends.sqlite import namespace_for

    out = {}
    for spec in to_archive(specs):
        d = dialect_for(connections[spec.source].vendor)
        cols = ", ".join(d.quote(c) for c in spec.column_names)
        src = f"{d.quote(source_schema(spec.source))}.{d.quote(spec.name)}"
        with connections[spec.source].cursor() as cur:
            cur.execute(f"SELECT {cols} FROM {src}")
            s_count, s_sum = _digest(cur)
        a_count = a_sum = 0
        arc = connections["archive"]
        ns = namespace_for(spec.source)
        from archival.backends import backend_for

        backend = backend_for("archive")
        if backend.schema_exists(ns) and backend.table_exists(ns, spec.name):
            ad = dialect_for(arc.vendor)
            with arc.cursor() as cur:
                cur.execute(
                    f"SELECT {', '.join(ad.quote(c) for c in spec.column_names)} FROM {ad.quote(ns)}.{ad.quote(spec.name)}"
                )
                a_count, a_sum = _digest(cur)
        out[f"{spec.source}.{spec.name}"] = {
            "rows": s_count + a_count,
            "sum": (s_sum + a_sum) & MASK,
            "source": s_count,
            "archive": a_count,
        }
    return out
