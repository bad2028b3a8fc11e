"""A refused decision reports the batch as it stands (its recorded approvals).

Personas: the planner (archival administrator), Alice and Bob (compliance
officers). The admin's side is in tests/test_admin_bad_input.py.
"""

from __future__ import annotations

import datetime as dt

import pytest

from archival.disposal import decide_batch, plan_disposal
from governance.models import AuditEvent, BatchStatus, DisposalBatch
from tests.disposal_fixtures import DATABASES, TODAY, create_tables, insert_rows, make_config


def _rows(n: int, retention: dt.date):
    return [(1, f"p{i}", dt.date(2010, 1, 1) + dt.timedelta(days=i), "C1", retention) for i in range(n)]


@pytest.mark.django_db(databases=DATABASES)
def test_a_refused_second_approval_reports_the_approval_already_recorded(disposal_personas):
    create_tables()
    insert_rows(_rows(4, TODAY - dt.timedelta(days=30)))
    make_config("FUNCTIONAL")
    plan_disposal(actor=disposal_personas["planner"], today=TODAY)
    batch = DisposalBatch.objects.get()
    assert decide_batch(batch.pk, user=disposal_personas["alice"], decision="APPROVE", comment="ok").accepted

    again = decide_batch(batch.pk, user=disposal_personas["alice"], decision="APPROVE", comment="again")

    assert not again.accepted and "someone else" in again.message
    assert (again.approvals, again.required, again.status) == (1, 2, BatchStatus.PENDING_REVIEW)
    refused = AuditEvent.objects.filter(action="disposal.review_refused").latest("id")
    assert refused.counts == {"approvals": 1, "required": 2}
