"""The archive's own tables live in a schema of their own on PostgreSQL, older installs included.

With the archive in the same PostgreSQL database as the sources, holds, the
ledger, certificates and the archive lock would otherwise sit in ``public``
beside the users' own tables. ``migrate --database archive`` creates the
schema (settings.GOVERNANCE_SCHEMA) and moves an older install's tables out of
``public`` with their rows (governance/archive_schema.py).

Personas: Alice, a compliance officer who places holds; the planner, an
archival administrator who plans disposal.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import DatabaseError, ProgrammingError, connections, transaction

from archival import engine
from archival.backends.postgresql import RECORDER_TABLE, TRIGGER_FUNCTION
from archival.demo import source_schema
from archival.disposal import place_hold, plan_disposal
from governance.archive_schema import archive_tables
from governance.models import BatchLedger, Hold, HoldKey, HoldScope

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

FIRST_CUTOFF, SECOND_CUTOFF = dt.date(2025, 6, 1), dt.date(2026, 11, 25)
FAR_FUTURE = dt.date(2200, 1, 1)
CHECKED = (Hold, HoldKey, BatchLedger)


@pytest.fixture(autouse=True)
def on_postgresql():
    if connections["archive"].vendor != "postgresql":
        pytest.skip("the archive is a database or file of its own on this engine")


def tables_in(schema: str) -> set[str]:
    with connections["archive"].cursor() as cur:
        cur.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace AND relkind IN ('r', 'p')", [schema]
        )
        return {name for (name,) in cur.fetchall()}


def ours() -> set[str]:
    return {RECORDER_TABLE, *archive_tables()}


def fingerprint() -> dict[str, tuple[int, str]]:
    """Row count and an md5 over every row, in id order, of the hold and ledger tables."""
    result = {}
    with connections["archive"].cursor() as cur:
        for model in CHECKED:
            table = connections["archive"].ops.quote_name(model._meta.db_table)
            cur.execute(f"SELECT COUNT(*), md5(COALESCE(string_agg(t::text, '|' ORDER BY t.id), '')) FROM {table} t")
            result[model._meta.db_table] = cur.fetchone()
    return result


def back_to_the_old_layout() -> None:
    """What an install made before the schema existed looks like: everything in public, no schema."""
    schema = settings.GOVERNANCE_SCHEMA
    connection = connections["archive"]
    qn = connection.ops.quote_name
    with transaction.atomic(using="archive"), connection.cursor() as cur:
        for table in sorted(ours() & tables_in(schema)):
            cur.execute(f"ALTER TABLE {qn(schema)}.{qn(table)} SET SCHEMA public")
        cur.execute(f"ALTER FUNCTION {qn(schema)}.{qn(TRIGGER_FUNCTION)}() SET SCHEMA public")
        cur.execute(f"DROP SCHEMA {qn(schema)}")


def test_after_migrate_the_archive_keeps_none_of_its_tables_in_public():
    assert ours() <= tables_in(settings.GOVERNANCE_SCHEMA)
    assert not ours() & tables_in("public")
    # A source sharing the database sees public first; none of ours is there.
    with connections["SourceDB1"].cursor() as cur:
        cur.execute("SELECT to_regclass('governance_hold'), to_regclass('django_migrations')")
        assert cur.fetchone() == (None, None)


def test_an_install_with_its_tables_in_public_keeps_every_row_and_still_works(demo, disposal_personas):
    alice, planner = disposal_personas["alice"], disposal_personas["planner"]
    assert engine.run_cycle(cutoff=FIRST_CUTOFF).ok
    place_hold(scope=HoldScope.ALL, actor=alice, reason="Matter 7", source_db="SourceDB1")
    place_hold(
        scope=HoldScope.KEYS,
        actor=alice,
        reason="Subpoena 12",
        source_db="SourceDB2",
        schema_name=source_schema("SourceDB2"),
        table_name="Trade",
        keys=["1", "2"],
    )
    before = fingerprint()
    assert before["governance_batchledger"][0] > 0 and before["governance_holdkey"][0] == 2

    back_to_the_old_layout()
    # The holds are out of reach: every statement fails, none reads an empty table.
    with pytest.raises(ProgrammingError), transaction.atomic(using="archive"):
        Hold.objects.count()
    connections["archive"].close()

    call_command("migrate", database="archive", verbosity=0)

    assert fingerprint() == before
    assert not ours() & tables_in("public")
    assert ours() <= tables_in(settings.GOVERNANCE_SCHEMA)
    # Running it again changes nothing.
    call_command("migrate", database="archive", verbosity=0)
    assert fingerprint() == before

    # The DELETE refusal came along with the tables.
    with pytest.raises(DatabaseError, match="holds are never deleted"), transaction.atomic(using="archive"):
        Hold.objects.filter(scope=HoldScope.ALL).delete()
    # A hold placed now draws the next id and disposal sees it beside the old ones.
    newest = place_hold(scope=HoldScope.ALL, actor=alice, reason="Matter 8", source_db="SourceDB2")
    assert newest.pk > max(Hold.objects.exclude(pk=newest.pk).values_list("pk", flat=True))
    plan = plan_disposal(actor=planner, today=FAR_FUTURE, dry_run=True)
    by_source = {}
    for table in plan.tables:
        by_source.setdefault(table.table_label.split(".")[0], []).append(table)
    for source in ("SourceDB1", "SourceDB2"):
        assert sum(t.held_rows for t in by_source[source]) > 0, source
        assert all(t.held_rows == t.expired_rows and not t.disposable_rows for t in by_source[source]), source
    # An archival run writes its ledger into the moved table.
    assert engine.run_cycle(cutoff=SECOND_CUTOFF).ok
    assert BatchLedger.objects.count() > before["governance_batchledger"][0]


def test_the_read_only_role_still_reads_the_holds_after_the_move(demo, disposal_personas):
    place_hold(scope=HoldScope.ALL, actor=disposal_personas["alice"], reason="Matter 9", source_db="SourceDB1")
    back_to_the_old_layout()
    connections["archive"].close()
    connections["archive_readonly"].close()
    call_command("migrate", database="archive", verbosity=0)
    # Without running create_readonly_role again: the schema was made anew,
    # and the role that could read the holds may still reach them.
    assert Hold.objects.using("archive_readonly").count() == 1


def test_a_history_shared_with_another_application_is_copied_and_left_to_it():
    back_to_the_old_layout()
    qn = connections["archive"].ops.quote_name
    with connections["archive"].cursor() as cur:
        cur.execute(
            "INSERT INTO public.django_migrations (app, name, applied) VALUES ('ledgerbook', '0001_initial', now())"
        )
        cur.execute("SELECT app, name FROM public.django_migrations WHERE app <> 'ledgerbook' ORDER BY id")
        ours_before = cur.fetchall()
    connections["archive"].close()
    try:
        call_command("migrate", database="archive", verbosity=0)
        schema = qn(settings.GOVERNANCE_SCHEMA)
        with connections["archive"].cursor() as cur:
            cur.execute(f"SELECT app, name FROM {schema}.django_migrations ORDER BY id")
            assert cur.fetchall() == ours_before
            cur.execute("SELECT app FROM public.django_migrations WHERE app = 'ledgerbook'")
            assert cur.fetchall() == [("ledgerbook",)]
            # The copy draws its next id after the copied rows.
            cur.execute(
                f"INSERT INTO {schema}.django_migrations (app, name, applied) "
                "VALUES ('governance', 'probe', now()) RETURNING id"
            )
            (probe,) = cur.fetchone()
            cur.execute(f"SELECT max(id) FROM {schema}.django_migrations WHERE name <> 'probe'")
            assert probe > cur.fetchone()[0]
            cur.execute(f"DELETE FROM {schema}.django_migrations WHERE id = %s", [probe])
        assert tables_in("public") & ours() == {RECORDER_TABLE}
    finally:
        with connections["archive"].cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS public.django_migrations")


def test_another_applications_history_alone_stays_where_it_is():
    with connections["archive"].cursor() as cur:
        cur.execute(
            "CREATE TABLE public.django_migrations (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
            "app varchar(255) NOT NULL, name varchar(255) NOT NULL, applied timestamptz NOT NULL)"
        )
        cur.execute(
            "INSERT INTO public.django_migrations (app, name, applied) VALUES ('ledgerbook', '0001_initial', now())"
        )
    try:
        call_command("migrate", database="archive", verbosity=0)
        with connections["archive"].cursor() as cur:
            cur.execute("SELECT app FROM public.django_migrations")
            assert cur.fetchall() == [("ledgerbook",)]
            cur.execute(
                f"SELECT count(*) FROM {connections['archive'].ops.quote_name(settings.GOVERNANCE_SCHEMA)}.django_migrations WHERE app = 'ledgerbook'"
            )
            assert cur.fetchone() == (0,)
    finally:
        with connections["archive"].cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS public.django_migrations")
