"""A disposal process killed with SIGKILL resumes without deleting anything
twice and without touching held rows.

The operator's real command (``manage.py dispose --execute``) runs as a child
process against the test databases; the test kills it with SIGKILL once a few
batches have committed (and, on most runs, while a batch transaction is open),
then resumes in-process the way the next scheduled execution would.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from archival.disposal import digest_of_keys, execute_disposal, place_hold, plan_disposal
from governance.chain_verification import verify_chains
from governance.models import BatchStatus, DisposalBatch, DisposalCertificate, HoldScope
from tests.disposal_fixtures import DATABASES, SOURCE, archived_keys, create_tables, insert_rows, make_config
from tests.engine_fixtures import database_url

pytestmark = pytest.mark.django_db(databases=DATABASES, transaction=True)

ROOT = Path(__file__).resolve().parent.parent
LEASE_SECONDS = 5  # the smallest ARCHIVAL_LEASE_SECONDS allows


def child_env() -> dict:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url("default"),
        ARCHIVE_DATABASE_URL=database_url("archive"),
        ARCHIVE_READONLY_DATABASE_URL=database_url("archive"),
        SOURCEDB1_DATABASE_URL=database_url(SOURCE),
        ARCHIVAL_LEASE_SECONDS=str(LEASE_SECONDS),
        DJANGO_SETTINGS_MODULE="governance.settings",
    )
    return env


def test_a_killed_disposal_resumes_without_double_or_held_deletes():
    create_tables()
    make_config("OPERATIONAL", batch_size=3)  # no review: batches are approved at planning
    # The child process executes "today" (it has no test clock): plan for today too.
    today = timezone.localdate()
    expired = today - dt.timedelta(days=1)
    rows = [
        (b, f"p{i}", dt.date(2010, 1, 1) + dt.timedelta(days=i), f"C{i % 5}", expired)
        for b in (1, 2)
        for i in range(120)
    ]
    insert_rows(rows)
    held = {r[:3] for r in rows if r[3] == "C3"}
    place_hold(scope=HoldScope.CONTRACT, actor="compliance", reason="Matter 7", source_db=SOURCE, contract_value="C3")
    plan = plan_disposal(actor="planner", today=today)
    assert plan.held_rows == len(held) and plan.disposable_rows == len(rows) - len(held)
    before = archived_keys()

    child = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "dispose", "--execute"],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    try:
        while DisposalCertificate.objects.count() < 5:
            assert child.poll() is None, (
                f"the child finished before it could be killed: {child.stderr.read().decode()[-2000:]}"
            )
            assert time.monotonic() < deadline, "no progress from the child"
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    interrupted = DisposalBatch.objects.filter(status__in=(BatchStatus.APPROVED, BatchStatus.EXECUTING)).count()
    assert interrupted > 0, "the kill came after the last batch; nothing to resume"
    certified_before = DisposalCertificate.objects.count()

    # The dead worker's lease must expire before another worker takes its batch.
    time.sleep(LEASE_SECONDS + 0.5)
    result = execute_disposal(actor="resumer", today=today)
    assert result.ok, result.errors

    after = archived_keys()
    gone = before - after
    assert held <= after, "a held row was deleted"
    assert after == held, "an unheld expired row survived"
    certs = list(DisposalCertificate.objects.order_by("id"))
    assert len(certs) == DisposalBatch.objects.count() == len({c.batch_id for c in certs})
    assert len(certs) >= certified_before
    assert sum(c.row_count for c in certs) == len(gone), "a row was counted (deleted) twice"
    assert all(b.status == BatchStatus.EXECUTED for b in DisposalBatch.objects.all())
    # An auditor recomputes the digests from the export made before disposal.
    for cert in certs:
        batch = DisposalBatch.objects.get(pk=cert.batch_id)
        lo = (batch.key_low[0], batch.key_low[1], dt.date.fromisoformat(batch.key_low[2]))
        hi = (batch.key_high[0], batch.key_high[1], dt.date.fromisoformat(batch.key_high[2]))
        keys = [k for k in gone if lo <= k <= hi]
        assert cert.digest == digest_of_keys(keys)[0]
    report = verify_chains(write_log=False)
    assert report.ok, report.errors
    assert settings.ARCHIVAL["LEASE_SECONDS"] >= 5  # the parent kept its own setting
