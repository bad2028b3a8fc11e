"""The hold form: tables chosen from the configured ones, only the chosen
scope's fields used, a preview of what the hold covers before it is placed
(child tables through the contract join included), and a keys hold placed
from rows a compliance officer found in the archive search."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import connections
from django.test import Client
from django.urls import reverse

from archival.disposal import plan_disposal
from archival.disposal.holds import hold_impact
from archival.engine import run_cycle
from governance.models import AuditEvent, Hold, HoldKey, HoldScope, TableConfig
from tests.admin_fixtures import SOURCE, make_config
from tests.engine_fixtures import drop_archive_tables
from tests.search_fixtures import build_search_archive, make_position_config, source_schema

PARENT, CHILD = "hf_contract", "hf_position"
CONTRACTS = 4
POSITIONS_PER_CONTRACT = 3


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db(databases="__all__")
class TestTheForm:
    def test_a_table_hold_names_a_configured_table_and_ignores_other_scopes_fields(self, personas, source_table):
        config = make_config()
        response = client_for(personas["compliance"]).post(
            reverse("admin:governance_hold_add"),
            {
                "scope": HoldScope.TABLE,
                "table": config.pk,
                # Left over from another scope; hidden on the page, ignored here.
                "contract_value": "C9",
                "date_from": "2020-01-01",
                "reason": "Audit 2026/3 of the trade table",
            },
        )
        assert response.status_code == 302, response.content.decode()[:2000]
        hold = Hold.objects.get()
        assert (hold.scope, hold.source_db, hold.schema_name, hold.table_name) == (
            HoldScope.TABLE,
            config.source_db,
            config.schema_name,
            config.table_name,
        )
        assert hold.contract_value == "" and hold.date_from is None

    def test_the_table_is_chosen_from_configs_not_typed(self, personas, source_table):
        config = make_config()
        client = client_for(personas["compliance"])
        form = client.get(reverse("admin:governance_hold_add")).context["adminform"].form
        assert list(form.fields["table"].queryset) == [config]
        assert "table_name" not in form.fields and "schema_name" not in form.fields
        response = client.post(
            reverse("admin:governance_hold_add"), {"scope": HoldScope.TABLE, "table": 999_999, "reason": "Matter 1"}
        )
        assert response.status_code == 200
        assert "table" in response.context["adminform"].form.errors
        assert not Hold.objects.exists()

    def test_a_contract_hold_offers_the_source_databases_and_says_what_it_covers(self, personas):
        form = client_for(personas["compliance"]).get(reverse("admin:governance_hold_add")).context["adminform"].form
        choices = [value for value, _ in form.fields["source_db"].choices if value]
        assert choices == ["SourceDB1", "SourceDB2", "SourceDB3"]
        assert "through its contract join" in form.fields["source_db"].help_text

    def test_the_page_shows_only_the_chosen_scopes_fields_with_a_same_origin_script(self, personas):
        html = client_for(personas["compliance"]).get(reverse("admin:governance_hold_add")).content.decode()
        assert '<script src="/static/governance/scoped_fields.js"' in html
        scope_map = re.search(r'data-scope-fields="([^"]+)"', html).group(1).replace("&quot;", '"')
        assert '"CONTRACT": ["source_db", "contract_value"]' in scope_map
        assert '"KEYS": ["table", "keys"]' in scope_map
        assert "onchange=" not in html


@pytest.fixture
def parent_and_child(transactional_db):
    """A contract table and a position table archived by its contract's
    maturity; neither names a hold contract column: the child carries the
    contract through its join, the parent as the joined table's key."""
    with connections[SOURCE].cursor() as cur:
        for table in (CHILD, PARENT):
            cur.execute(f'DROP TABLE IF EXISTS "{table}"')
        cur.execute(
            f'CREATE TABLE "{PARENT}" ("contractId" INTEGER NOT NULL PRIMARY KEY, "maturityDate" DATE NOT NULL)'
        )
        cur.execute(
            f'CREATE TABLE "{CHILD}" ("positionId" INTEGER NOT NULL PRIMARY KEY, "contractId" INTEGER NOT NULL, '
            '"quantity" INTEGER NOT NULL)'
        )
        cur.executemany(
            f'INSERT INTO "{PARENT}" VALUES (%s, %s)', [(c, dt.date(2010, 1, c)) for c in range(1, CONTRACTS + 1)]
        )
        cur.executemany(
            f'INSERT INTO "{CHILD}" VALUES (%s, %s, %s)',
            [(c * 10 + p, c, p) for c in range(1, CONTRACTS + 1) for p in range(POSITIONS_PER_CONTRACT)],
        )
    parent = make_config(
        table_name=PARENT,
        date_column="maturityDate",
        hold_contract_column="",
        years_retention_archive=1,
        execution_priority=20,
    )
    child = make_config(
        table_name=CHILD,
        archival_logic="CONTRACT_MATURITY",
        date_column="",
        contract_table=PARENT,
        contract_key_column="contractId",
        contract_reference_column="contractId",
        contract_maturity_column="maturityDate",
        hold_contract_column="",
        years_retention_archive=1,
        execution_priority=10,
    )
    run_cycle(cutoff=dt.date(2026, 1, 1))
    run_cycle(cutoff=dt.date(2026, 1, 1))
    yield parent, child
    with connections[SOURCE].cursor() as cur:
        for table in (CHILD, PARENT):
            cur.execute(f'DROP TABLE IF EXISTS "{table}"')
    drop_archive_tables()


@pytest.mark.django_db(databases="__all__", transaction=True)
@pytest.mark.usefixtures("admin_allow_test_flush")
class TestAContractHoldOnAParentAndItsChild:
    def test_the_preview_counts_both_tables_and_places_nothing(self, personas, parent_and_child):
        parent, child = parent_and_child
        assert child.contract_column_for_holds() == "contractId"
        assert parent.contract_column_for_holds() == "contractId"
        response = client_for(personas["compliance"]).post(
            reverse("admin:governance_hold_add"),
            {
                "scope": HoldScope.CONTRACT,
                "source_db": SOURCE,
                "contract_value": "2",
                "reason": "Matter 2: contract 2 and its positions",
                "_preview": "Preview what it covers",
            },
        )
        assert response.status_code == 200
        preview = {row.table_label: row.rows for row in response.context["preview"]}
        assert preview == {str(parent): 1, str(child): POSITIONS_PER_CONTRACT}
        html = response.content.decode()
        assert 'id="hold-preview"' in html and f"cover {1 + POSITIONS_PER_CONTRACT} archived rows" in html
        # A preview is not a hold: nothing kept, nothing audited.
        assert not Hold.objects.exists()
        assert not AuditEvent.objects.filter(action="hold.placed").exists()

    def test_the_placed_hold_keeps_the_child_rows_out_of_disposal(self, personas, parent_and_child):
        parent, child = parent_and_child
        client_for(personas["compliance"]).post(
            reverse("admin:governance_hold_add"),
            {"scope": HoldScope.CONTRACT, "source_db": SOURCE, "contract_value": "2", "reason": "Matter 2"},
        )
        hold = Hold.objects.get(contract_value="2")
        assert {i.table_label: i.rows for i in hold_impact(hold)} == {str(parent): 1, str(child): 3}
        plan = plan_disposal(actor=personas["administrator"], dry_run=True, today=dt.date(2026, 6, 1))
        held = {t.table_label: t.held_rows for t in plan.tables}
        assert held[str(child)] == POSITIONS_PER_CONTRACT and held[str(parent)] == 1


@pytest.fixture
def searchable_positions(transactional_db):
    """The search tests' archived Position table, committed (the search reads
    through its own read-only connection), rebuilt for these tests."""
    build_search_archive()
    return make_position_config()


@pytest.mark.django_db(databases="__all__", transaction=True)
@pytest.mark.usefixtures("admin_allow_test_flush")
def test_a_compliance_officer_places_a_keys_hold_from_rows_found_in_the_search(personas, searchable_positions):
    config = searchable_positions
    client = client_for(personas["compliance"])
    search = client.get(reverse("search:table", args=[SOURCE, source_schema(SOURCE), "Position"]), {"contractId": 7})
    assert search.status_code == 200
    html = search.content.decode()
    assert 'id="hold-from-rows"' in html and f'name="table" value="{config.pk}"' in html
    keys = re.findall(r'<input type="checkbox" name="keys" value="([^"]+)"', html)[:2]
    assert len(keys) == 2 and all(k.count(",") == 2 for k in keys)
    # The search's selection opens the hold form filled in.
    form_page = client.get(reverse("admin:governance_hold_add"), {"scope": "KEYS", "table": config.pk, "keys": keys})
    form = form_page.context["adminform"].form
    assert form.initial["keys"].splitlines() == keys
    assert str(form.initial["table"]) == str(config.pk) and form.initial["scope"] == "KEYS"
    response = client.post(
        reverse("admin:governance_hold_add"),
        {"scope": "KEYS", "table": config.pk, "keys": "\n".join(keys), "reason": "Matter 7: two positions"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    hold = Hold.objects.get(scope=HoldScope.KEYS)
    assert (hold.source_db, hold.table_name) == (SOURCE, "Position")
    assert sorted(HoldKey.objects.filter(hold=hold).values_list("key_text", flat=True)) == sorted(
        k.replace(",", "\t") for k in keys
    )
    assert sum(i.rows for i in hold_impact(hold)) == 2


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_a_reader_sees_no_hold_selection_in_the_search(personas, searchable_positions):
    html = (
        client_for(personas["reader"])
        .get(reverse("search:table", args=[SOURCE, source_schema(SOURCE), "Position"]), {"contractId": 7})
        .content.decode()
    )
    assert 'id="results"' in html
    assert "hold-from-rows" not in html and 'name="keys"' not in html
    assert TableConfig.objects.count() == 1


@pytest.mark.django_db(databases="__all__")
def test_a_key_with_the_wrong_number_of_components_is_a_field_error_not_a_crash(personas, source_table):
    config = make_config()
    response = client_for(personas["compliance"]).post(
        reverse("admin:governance_hold_add"),
        {"scope": "KEYS", "table": config.pk, "keys": "1\n2,2015-01-02", "reason": "Matter 3"},
    )
    assert response.status_code == 200
    error = response.context["adminform"].form.errors["keys"][0]
    assert "1 component(s) (tradeId)" in error and "2,2015-01-02" in error
    assert not Hold.objects.exists()
