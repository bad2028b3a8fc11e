"""Property: random archives, random holds of every scope, random approvals and
hold placements interleaved with execution.

Whatever happens: no row covered by an active hold is ever deleted; once every
batch is reviewed and executed, every expired unheld row is gone; the counts
and digests of the certificates reconcile with the rows that disappeared.
The oracle below decides "held" in plain Python, independently of the SQL.

Examples: 200 under the ``ci`` profile (CI=true), 40 by default, 1,000 with
DISPOSAL_HYPOTHESIS_PROFILE=full.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import transaction
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from archival.disposal import (
    decide_batch,
    digest_of_keys,
    execute_disposal,
    key_text,
    place_hold,
    plan_disposal,
    release_hold,
)
from governance.models import BatchStatus, DisposalBatch, DisposalCertificate, Hold, HoldScope
from tests.disposal_fixtures import (
    DATABASES,
    PROFILE,
    SOURCE,
    TABLE,
    TODAY,
    archived_keys,
    create_tables,
    insert_rows,
    make_config,
)

pytestmark = pytest.mark.django_db(databases=DATABASES)

DAY0 = dt.date(2010, 1, 1)
CONTRACTS = ["C0", "C1", "C2"]
# Text key components include a TAB, a backslash and a newline: the canonical
# key text escapes them, in Python and in SQL alike.
POSITIONS = ["p1", "p2", "a\tb", "x\\y", "n\nl"]

rows_st = st.lists(
    st.tuples(
        st.integers(1, 3),
        st.sampled_from(POSITIONS),
        st.integers(0, 20).map(lambda d: DAY0 + dt.timedelta(days=d)),
        st.sampled_from(CONTRACTS),
        st.integers(-60, 20).map(lambda d: TODAY + dt.timedelta(days=d)),
    ),
    max_size=30,
    unique_by=lambda r: (r[0], r[1], r[2]),
)

hold_st = st.one_of(
    st.tuples(st.just(HoldScope.ALL), st.none()),
    st.tuples(st.just(HoldScope.TABLE), st.sampled_from([TABLE, "other_table"])),
    st.tuples(
        st.just(HoldScope.CONTRACT), st.tuples(st.sampled_from([SOURCE, "SourceDB2"]), st.sampled_from(CONTRACTS))
    ),
    st.tuples(
        st.just(HoldScope.DATE_RANGE),
        st.tuples(st.one_of(st.none(), st.integers(0, 20)), st.one_of(st.none(), st.integers(0, 20))),
    ),
    st.tuples(st.just(HoldScope.KEYS), st.lists(st.integers(0, 40), min_size=1, max_size=4)),
)
hold_until_st = st.one_of(st.none(), st.integers(-3, 3).map(lambda d: TODAY + dt.timedelta(days=d)))

step_st = st.one_of(
    st.tuples(st.just("plan"), st.none()),
    st.tuples(
        st.just("approve"), st.tuples(st.integers(0, 50), st.sampled_from(["alice", "bob", "planner"]), st.booleans())
    ),
    st.tuples(st.just("hold"), st.tuples(hold_st, hold_until_st)),
    st.tuples(st.just("release"), st.integers(0, 50)),
    st.tuples(st.just("execute"), st.integers(1, 3)),
)


def covers(hold: Hold, keys_of_hold: set[str], row) -> bool:
    """The oracle: does an active hold cover this archive row?"""
    if hold.released_at is not None or (hold.hold_until is not None and hold.hold_until < TODAY):
        return False
    b, p, d, contract, _ = row
    if hold.scope == HoldScope.ALL:
        return True
    if hold.scope == HoldScope.TABLE:
        return hold.source_db == SOURCE and hold.table_name == TABLE
    if hold.scope == HoldScope.CONTRACT:
        return hold.source_db == SOURCE and hold.contract_value == contract
    if hold.scope == HoldScope.DATE_RANGE:
        return (hold.date_from is None or d >= hold.date_from) and (hold.date_to is None or d <= hold.date_to)
    return hold.table_name == TABLE and key_text((b, p, d)) in keys_of_hold


def held_rows(rows) -> set[tuple]:
    holds = list(Hold.objects.all())
    keys = {h.pk: set(h.keys.values_list("key_text", flat=True)) for h in holds}
    return {r[:3] for r in rows if any(covers(h, keys[h.pk], r) for h in holds)}


def place(spec, until, rows, people):
    (scope, arg) = spec
    common = {"actor": people["alice"], "reason": "property", "hold_until": until}
    if scope == HoldScope.ALL:
        return place_hold(scope=scope, **common)
    if scope == HoldScope.TABLE:
        if arg != TABLE:
            return None  # a hold on an unconfigured table is refused by validation
        return place_hold(scope=scope, source_db=SOURCE, table_name=arg, **common)
    if scope == HoldScope.CONTRACT:
        return place_hold(scope=scope, source_db=arg[0], contract_value=arg[1], **common)
    if scope == HoldScope.DATE_RANGE:
        lo, hi = arg
        if lo is None and hi is None:
            return None
        if lo is not None and hi is not None and lo > hi:
            lo, hi = hi, lo
        day = lambda n: None if n is None else DAY0 + dt.timedelta(days=n)  # noqa: E731
        return place_hold(scope=scope, date_from=day(lo), date_to=day(hi), **common)
    keys = [rows[i][:3] if i < len(rows) else (9, "missing", DAY0) for i in arg]
    return place_hold(scope=scope, source_db=SOURCE, table_name=TABLE, keys=keys, **common)


@pytest.fixture
def empty_tables():
    """The source and archive tables, made before the examples' savepoints (MariaDB commits on DDL)."""
    create_tables()


@hsettings(hsettings.get_profile(PROFILE))
@given(
    rows=rows_st,
    table_type=st.sampled_from(["FUNCTIONAL", "REFERENCE", "OPERATIONAL"]),
    batch_size=st.integers(1, 8),
    steps=st.lists(step_st, max_size=12),
)
def test_holds_always_win_and_every_approved_expired_row_goes(
    disposal_personas, empty_tables, rows, table_type, batch_size, steps
):
    sid_default = transaction.savepoint(using="default")
    sid_archive = transaction.savepoint(using="archive")
    try:
        make_config(table_type, batch_size=batch_size)
        insert_rows(rows)
        by_key = {r[:3]: r for r in rows}
        destroyed: set[tuple] = set()
        approvers = {name: disposal_personas[name] for name in ("alice", "bob", "planner")}

        def execute(max_batches):
            before = archived_keys()
            protected = held_rows([by_key[k] for k in before])
            known = set(DisposalCertificate.objects.values_list("pk", flat=True))
            result = execute_disposal(actor=disposal_personas["planner"], today=TODAY, max_batches=max_batches)
            assert result.ok, result.errors
            gone = before - archived_keys()
            assert not gone & protected, f"held rows deleted: {gone & protected}"
            assert all(by_key[k][4] < TODAY for k in gone), "an unexpired row was deleted"
            new = DisposalCertificate.objects.exclude(pk__in=known)
            assert sum(c.row_count for c in new) == len(gone) == result.deleted
            if len(new) == 1:
                assert new[0].digest == digest_of_keys(sorted(gone))[0]
            assert not gone & destroyed
            destroyed.update(gone)

        for kind, arg in steps:
            if kind == "plan":
                plan_disposal(actor=disposal_personas["planner"], today=TODAY)
            elif kind == "approve":
                pending = list(DisposalBatch.objects.filter(status=BatchStatus.PENDING_REVIEW).order_by("pk"))
                if pending:
                    idx, who, approve = arg
                    batch = pending[idx % len(pending)]
                    result = decide_batch(
                        batch.pk, user=approvers[who], decision="APPROVE" if approve else "REJECT", comment="p"
                    )
                    if who == "planner":
                        assert not result.accepted
            elif kind == "hold":
                place(arg[0], arg[1], rows, disposal_personas)
            elif kind == "release":
                active = list(Hold.objects.filter(released_at__isnull=True).order_by("pk"))
                if active:
                    release_hold(active[arg % len(active)].pk, actor=disposal_personas["bob"], reason="done")
            else:
                execute(arg)

        # Finish: review everything still pending, plan what is left, execute all.
        for round_no in range(2):
            if round_no:
                plan_disposal(actor=disposal_personas["planner"], today=TODAY)
            for batch in DisposalBatch.objects.filter(status=BatchStatus.PENDING_REVIEW):
                for who in ("alice", "bob"):
                    decide_batch(batch.pk, user=approvers[who], decision="APPROVE", comment="final")
            execute(None)
        remaining = archived_keys()
        protected = held_rows([by_key[k] for k in remaining])
        expired_unheld = {k for k in remaining if by_key[k][4] < TODAY} - protected
        assert not expired_unheld, f"expired unheld rows survived: {expired_unheld}"
        assert destroyed | remaining == set(by_key) and not destroyed & remaining
        assert sum(DisposalCertificate.objects.values_list("row_count", flat=True)) == len(destroyed)
        for batch in DisposalBatch.objects.filter(status=BatchStatus.EXECUTED):
            cert = DisposalCertificate.objects.get(batch_id=batch.pk)
            assert cert.row_count <= batch.row_count + batch.held_in_range
            assert batch.deleted_count == cert.row_count
    finally:
        transaction.savepoint_rollback(sid_archive, using="archive")
        transaction.savepoint_rollback(sid_default, using="default")
