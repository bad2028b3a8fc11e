"""Demo step: one disposal cycle with a hold protecting rows, and its certificate."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.models import Permission, User
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from archival.disposal import decide_batch, execute_disposal, place_hold, plan_disposal
from archival.disposal.tables import archive_table_for
from governance.chain_verification import verify_chains
from governance.models import DisposalCertificate, HoldScope, TableConfig


class Command(BaseCommand):
    help = (
        "Run after `make demo` (build_demo + an archival run): takes one archived table, places a hold on one "
        "contract (or key), plans, approves and executes its disposal as of a date when rows have expired, then "
        "prints the certificate and checks the hash chain."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--table", help="Table label or name (default: the first archived table with a contract column)."
        )
        parser.add_argument(
            "--as-of",
            type=dt.date.fromisoformat,
            help="Pretend today is this date (default: 30 days after the earliest retention end).",
        )

    def handle(self, *args, **options):
        config, t = self._pick(options["table"])
        ru = t.col("retention_until")
        with t.backend.connection.cursor() as cur:
            cur.execute(f"SELECT MIN({ru}) FROM {t.qualified} a")
            earliest = cur.fetchone()[0]
        if earliest is None:
            raise CommandError(f"{config} has no archived rows with a retention date; run the archival demo first")
        earliest = dt.date.fromisoformat(str(earliest)[:10])
        as_of = options["as_of"] or earliest + dt.timedelta(days=30)
        self.stdout.write(f"Table {config}; disposing as of {as_of} (earliest retention end {earliest}).")

        officers = [self._user("demo_compliance_1"), self._user("demo_compliance_2")]
        hold_kwargs = self._hold_target(config, t, as_of)
        hold = place_hold(actor=officers[0], reason="Demo: litigation hold on one contract", **hold_kwargs)
        self.stdout.write(f"Placed {hold}.")

        plan = plan_disposal(tables=[config.label], actor="demo planner", today=as_of)
        tp = plan.tables[0]
        if tp.error:
            raise CommandError(tp.error)
        self.stdout.write(f"Planned {tp.disposable_rows} rows in {len(tp.batches)} batch(es); {tp.held_rows} held by:")
        for b in tp.blocking_holds:
            self.stdout.write(f"  hold {b.hold_id} ({b.description}): {b.rows} rows")
        for pb in tp.batches:
            for officer in officers[: tp.required_approvals]:
                decide_batch(
                    pb.batch_id,
                    user=officer,
                    decision="APPROVE",
                    comment="Demo review: retention passed, no matter pending",
                )
        result = execute_disposal(tables=[config.label], actor="demo operator", today=as_of)
        if not result.ok:
            raise CommandError("; ".join(b.error for b in result.errors))
        self.stdout.write(f"Destroyed {result.deleted} rows; {result.held} expired rows kept under the hold.")
        cert = (
            DisposalCertificate.objects.filter(pk__in=[b.certificate_id for b in result.batches]).order_by("id").first()
        )
        if cert is not None:
            self.stdout.write(self.style.MIGRATE_HEADING("Certificate of disposal"))
            for field in (
                "pk",
                "table_label",
                "key_columns",
                "key_low",
                "key_high",
                "planned_count",
                "row_count",
                "held_count",
                "digest",
                "encoding",
                "disposable_before",
                "approvals",
                "holds_checked",
                "executed_by",
                "executed_at",
                "prev_hash",
                "certificate_hash",
            ):
                self.stdout.write(f"  {field:18} {getattr(cert, field)}")
        report = verify_chains()
        if not report.ok:
            raise CommandError(report.first_broken)
        self.stdout.write(
            self.style.SUCCESS(
                f"Chain OK ({report.audit_events} events, {report.certificates} certificates); head in {report.log_path}"
            )
        )

    def _pick(self, wanted):
        for config in TableConfig.objects.active():
            if wanted and wanted not in (config.label, config.table_name):
                continue
            t = archive_table_for(config)
            if t is None:
                continue
            with t.backend.connection.cursor() as cur:
                cur.execute(f"SELECT COUNT(*) FROM {t.qualified} a")
                if not cur.fetchone()[0]:
                    continue
            if wanted or config.hold_contract_column:
                return config, t
        raise CommandError("no archived table found; run `make demo` (build_demo and an archival run) first")

    def _hold_target(self, config, t, as_of):
        ru = t.col("retention_until")
        with connections["archive"].cursor() as cur:
            if t.contract_column:
                col = t.col(t.contract_column)
                cur.execute(
                    t.backend.limit_sql(
                        f"SELECT {col} FROM {t.qualified} a WHERE {ru} < %s AND {col} IS NOT NULL ORDER BY {col}", "%s"
                    ),
                    [as_of, 1],
                )
                row = cur.fetchone()
                if row:
                    return {"scope": HoldScope.CONTRACT, "source_db": config.source_db, "contract_value": str(row[0])}
            cur.execute(
                t.backend.limit_sql(
                    f"SELECT {t.pk_select()} FROM {t.qualified} a WHERE {ru} < %s ORDER BY {t.order_by()}", "%s"
                ),
                [as_of, 1],
            )
            key = cur.fetchone()
        return {"scope": HoldScope.KEYS, "source_db": config.source_db, "table_name": config.table_name, "keys": [key]}

    def _user(self, name):
        user, created = User.objects.get_or_create(
            username=name, defaults={"email": f"{name}@example.com", "is_staff": True}
        )
        if created:
            user.set_unusable_password()
            user.save()
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label="governance", codename="approve_disposal")
            )
        return User.objects.get(pk=user.pk)
