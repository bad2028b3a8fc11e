"""Peak Python memory of the audit CSV export, by number of events.

Usage (its own data folder; never point it at real data):

    ARCHIVAL_DATA_DIR=/tmp/bench_audit python bench/audit_export_memory.py --events 1000000

Fills the control database's audit table with synthetic events (bulk
inserts: this measures the export, not the audited write path), then streams
``governance.admin.audit.iter_audit_csv`` over all of them under tracemalloc
and prints the peak. The export reads keyset pages, so the peak should not
grow with the number of events; the script checks it at 10% of the events too
and prints both figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")
os.environ.setdefault("ARCHIVAL_DATA_DIR", "/tmp/bench_audit")


def fill(n: int, chunk: int = 20_000) -> None:
    from django.utils import timezone

    from governance.models import AuditEvent

    have = AuditEvent.objects.count()
    now = timezone.now()
    while have < n:
        size = min(chunk, n - have)
        AuditEvent.objects.bulk_create(
            AuditEvent(
                action="batch.moved",
                actor="=bench worker",
                outcome="OK",
                table_label=f"SourceDB1.main.Table{i % 120:03d}",
                run_id=i // 10_000,
                counts={"rows": 5000, "batch": i},
                details={"note": "synthetic event for the export benchmark"},
                host="bench",
                occurred_at=now,
            )
            for i in range(have, have + size)
        )
        have += size


def measure(limit: int | None) -> tuple[int, int, float, int]:
    from governance.admin.audit import iter_audit_csv
    from governance.models import AuditEvent

    queryset = AuditEvent.objects.all()
    if limit is not None:
        last = AuditEvent.objects.order_by("id").values_list("id", flat=True)[limit - 1]
        queryset = queryset.filter(id__lte=last)
    tracemalloc.start()
    started = time.perf_counter()
    lines = size = 0
    for line in iter_audit_csv(queryset):
        lines += 1
        size += len(line)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return lines - 1, size, seconds, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="events to export (the table is filled up to this)"
    )
    args = parser.parse_args()

    import django
    from django.core.management import call_command

    django.setup()
    Path(os.environ["ARCHIVAL_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    fill(args.events)
    print(f"filled {args.events:,} events in {time.perf_counter() - started:.0f}s")
    for limit in (args.events // 10, args.events):
        rows, size, seconds, peak = measure(limit)
        print(
            f"exported {rows:,} events ({size / 1e6:,.0f} MB of CSV) in {seconds:.0f}s; peak traced memory {peak / 1e6:.2f} MB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
