"""Personas and objects for the governance admin tests.

Personas: a compliance officer, an archival administrator, an auditor (all
staff, each in their role's group as the data migration made it), an archive
reader (not staff) and an outsider (staff, in no group).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from django.test import Client
from django.urls import reverse
from django_q.models import Schedule

from archival.demo import source_schema
from archival.schedules import RUN_SCHEDULE
from governance.models import (
    AuditEvent,
    DisposalApproval,
    DisposalBatch,
    Hold,
    HoldScope,
    Phase,
    RecoveryState,
    RestoreCertificate,
    RestoreLedger,
    RestoreRequest,
    RestoreStatus,
    RestoreTable,
    RetentionChange,
    RetentionChangeStatus,
    TableConfig,
)
from governance.roles import (
    ARCHIVAL_ADMINISTRATOR,
    ARCHIVE_READER,
    AUDITOR,
    COMPLIANCE_OFFICER,
)

PASSWORD = "correct horse battery staple 42"
PERSONAS = ("compliance", "administrator", "auditor", "reader", "outsider")
ROLE_OF = {
    "compliance": COMPLIANCE_OFFICER,
    "administrator": ARCHIVAL_ADMINISTRATOR,
    "auditor": AUDITOR,
    "reader": ARCHIVE_READER,
    "outsider": None,
}
SOURCE = "SourceDB1"
TABLE = "adm_trade"
# The sample of the config import (written for the SQLite demo: schema ``main``).
SAMPLE_CONFIGS_CSV = Path(settings.BASE_DIR) / "governance" / "fixtures" / "demo_table_configs.csv"


def make_persona(name: str) -> User:
    user = User.objects.create_user(name, f"{name}@example.com", PASSWORD, is_staff=name != "reader")
    if ROLE_OF[name]:
        user.groups.add(Group.objects.get(name=ROLE_OF[name]))
    return user


@pytest.fixture
def personas(db) -> dict[str, User]:
    return {name: make_persona(name) for name in PERSONAS}


def create_source_table(alias: str = SOURCE, table: str = TABLE) -> None:
    """A small source table the config validation can read (trade rows with a date and a contract)."""
    with connections[alias].cursor() as cursor:
        cursor.execute(f'DROP TABLE IF EXISTS "{table}"')
        cursor.execute(
            f'CREATE TABLE "{table}" ("tradeId" INTEGER NOT NULL PRIMARY KEY, "tradeDate" DATE NOT NULL, "contractId" VARCHAR(20))'
        )
        cursor.executemany(
            f'INSERT INTO "{table}" VALUES (%s, %s, %s)',
            [(i, dt.date(2015, 1, 1) + dt.timedelta(days=i), f"C{i % 3}") for i in range(1, 11)],
        )


def drop_source_table(alias: str = SOURCE, table: str = TABLE) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute(f'DROP TABLE IF EXISTS "{table}"')


@pytest.fixture
def source_table():
    create_source_table()
    yield TABLE
    drop_source_table()


def make_config(**overrides) -> TableConfig:
    values = {
        "source_db": SOURCE,
        "schema_name": "public" if connections[SOURCE].vendor == "postgresql" else "main",
        "table_name": TABLE,
        "table_type": "OPERATIONAL",
        "archival_logic": "DATE_BASED",
        "date_column": "tradeDate",
        "hold_contract_column": "contractId",
    }
    values.update(overrides)
    config = TableConfig(**values)
    config.full_clean()
    config.save()
    return config


@pytest.fixture
def objects(personas, source_table):
    """One object of each governance model the admin shows, for change/history URLs."""
    from governance.models import ArchivalRun

    config = make_config()
    run = ArchivalRun(cutoff=dt.date(2024, 1, 1), started_by="administrator")
    run.full_clean()
    run.save()
    state = RecoveryState(run=run, config=config, table_label=str(config), phase=Phase.FAILED, last_error="boom")
    state.full_clean()
    state.save()
    hold = Hold(
        scope=HoldScope.CONTRACT, source_db=SOURCE, contract_value="C1", reason="Matter 17", placed_by="compliance"
    )
    hold.full_clean()
    hold.save()
    event = AuditEvent.objects.record("test.event", actor=personas["administrator"], details={"why": "fixture"})
    # A batch waiting for its second approval and a shortening waiting for a
    # compliance officer, so the disposal admin's change pages show real rows.
    batch = DisposalBatch(
        config=config,
        table_label=str(config),
        table_type=config.table_type,
        batch_no=1,
        plan_id="fixture-plan",
        key_low=[1],
        key_high=[5],
        row_count=5,
        disposable_before=dt.date(2026, 1, 1),
        planned_by="administrator",
        required_approvals=2,
    )
    batch.full_clean()
    batch.save()
    approval = DisposalApproval(
        batch=batch, approver="compliance", decision="APPROVE", comment="Expired; no matter open."
    )
    approval.full_clean()
    approval.save()
    change = RetentionChange(
        config=config,
        old_years=config.effective_years,
        new_years=max(config.effective_years - 1, 0),
        requested_by="administrator",
        reason="Policy 2026/4 shortens trade retention.",
        status=RetentionChangeStatus.PENDING,
    )
    change.full_clean()
    change.save()
    # A restore whose execution failed half-way (so its page shows progress
    # and offers "execute" again), with one batch and one certificate in the
    # archive database, so the restore admin's pages show real rows.
    restore = RestoreRequest(
        config=config,
        table_label=str(config),
        selection="KEY_RANGE",
        key_low=[1],
        key_high=[5],
        reason="Ticket 4711: recalculation of 2015 trades",
        requested_by="administrator",
        status=RestoreStatus.FAILED,
        decided_by="compliance",
        decision_comment="Approved for the recalculation.",
        executed_by="administrator",
        last_error="the source database did not answer",
    )
    restore.full_clean()
    restore.save()
    restore_table = RestoreTable(
        request=restore, config=config, table_label=str(config), position=1, planned_count=5, phase="FAILED"
    )
    restore_table.full_clean()
    restore_table.save()
    restore_batch = RestoreLedger(
        request_id=restore.pk,
        config_id=config.pk,
        table_label=str(config),
        batch_no=1,
        key_low=None,
        key_high=[2],
        row_count=2,
        deleted_count=2,
        state="MOVED",
    )
    restore_batch.full_clean(exclude=["key_low"])  # null: the first batch (no blank=True on the model)
    restore_batch.save()
    restore_certificate = RestoreCertificate(
        request_id=restore.pk,
        config_id=config.pk,
        table_label=str(config),
        key_columns=["tradeId"],
        row_count=2,
        skipped_identical=0,
        held_count=0,
        digest="0" * 64,
        selection={"kind": "KEY_RANGE", "key_low": [1], "key_high": [5]},
        reason=restore.reason,
        requested_by="administrator",
        approved_by="compliance",
        executed_by="administrator",
        certificate_hash="1" * 64,
    )
    restore_certificate.full_clean()
    restore_certificate.save()
    # The migration's weekly-run schedule, so the schedule admin's change and
    # history pages are walked with a real object.
    schedule = Schedule.objects.get(name=RUN_SCHEDULE)
    return {
        "schedule": schedule,
        "tableconfig": config,
        "archivalrun": run,
        "recoverystate": state,
        "hold": hold,
        "auditevent": event,
        "disposalbatch": batch,
        "disposalapproval": approval,
        "retentionchange": change,
        "restorerequest": restore,
        "restoreledger": restore_batch,
        "restorecertificate": restore_certificate,
    }


@pytest.fixture(scope="module")
def admin_allow_test_flush():
    """Let Django's flush after transactional (live-server) tests empty the
    append-only tables: the DELETE-refusing triggers (archival.disposal.triggers)
    make an exception only while this flag is set. Module-scoped, so it wraps
    the function-scoped database teardown. No test here deletes a hold or an
    audit event on purpose."""
    from archival.disposal.triggers import allow_test_flush

    with allow_test_flush():
        yield


def post_action(client, model, action: str, ids, *, confirm: bool = False, **fields):
    """The changelist's action POST for ``model`` ("app_label.model_name") as the list and the
    object pages send it; ``confirm`` adds the confirmation page's ``post=yes``
    (governance/admin/confirmation.py)."""
    from django.urls import reverse

    app_label, model_name = model.split(".")
    data = {"action": action, "_selected_action": [str(pk) for pk in ids], **fields}
    if confirm:
        data["post"] = "yes"
    return client.post(reverse(f"admin:{app_label}_{model_name}_changelist"), data)


def run_queued_tasks(limit: int = 200) -> list[dict]:
    """The worker side of the ORM broker, in this process: each queued task called once, oldest
    first, including the continuations the tasks enqueue, until the queue is empty."""
    from django.utils.module_loading import import_string
    from django_q.models import OrmQ

    results = []
    for _ in range(limit):
        queued = OrmQ.objects.order_by("pk").first()
        if queued is None:
            return results
        task = queued.task
        queued.delete()
        results.append(import_string(task["func"])(*task["args"], **task["kwargs"]))
    raise AssertionError(f"the queue was not empty after {limit} tasks")


def sample_csv() -> bytes:
    """The shipped sample (written for the SQLite demo) with each source's schema on this engine."""
    text = SAMPLE_CONFIGS_CSV.read_text()
    for alias in ("SourceDB1", "SourceDB2", "SourceDB3"):
        text = text.replace(f"{alias},main,", f"{alias},{source_schema(alias)},")
    return text.encode()


def upload(client: Client, content: bytes, name: str = "configs.csv"):
    return client.post(
        reverse("admin:governance_tableconfig_import"),
        {"import_file": SimpleUploadedFile(name, content, content_type="text/csv"), "format": "0", "resource": "0"},
    )


def confirm(client: Client, preview):
    html = preview.content.decode()
    fields = dict(re.findall(r'name="(import_file_name|original_file_name|format|resource)" value="([^"]*)"', html))
    return client.post(reverse("admin:governance_tableconfig_process_import"), fields)
