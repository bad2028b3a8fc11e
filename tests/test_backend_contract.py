"""Every engine difference lives in its backend, and every backend provides the whole contract.

The engine (archival/engine), disposal and search ask a backend for each
dialect piece and never which engine it is; a backend that lacks a method of
the contract cannot be instantiated and fails here by name.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from archival.backends.base import Backend
from archival.backends.mariadb import MariaDBBackend
from archival.backends.mssql.backend import MSSQLBackend
from archival.backends.postgresql import PostgresBackend
from archival.backends.sqlite import SQLiteBackend

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = (SQLiteBackend, PostgresBackend, MariaDBBackend, MSSQLBackend)

# The contract, method by method: what the engine, disposal and search ask of a backend.
CONTRACT = (
    # catalog
    "table_exists",
    "describe",
    "schema_exists",
    "referencing",
    # archive columns
    "add_years_sql",
    # reference dates: which stored values are dates
    "readable_date_sql",
    # bounded waits
    "session_wait_limits",
    "transaction_wait_limits",
    "timestamp_type",
    "create_namespace",
    # engines and connections
    "same_server",
    "source_table_sql",
    "param",
    "write_transaction",
    # moves
    "moves_through_procedures",
    "moves_in_one_statement",
    "transactional_ddl",
    "lock_hint",
    "select_sql",
    "join_sql",
    "delete_sql",
    "delete_joins_contract",
    "start_locking_read",
    "insert_rows",
    # archive tables
    "namespace_missing",
    "archive_table_ddl",
    "archive_indexes",
    "reshape_archive_sql",
    "add_column_sql",
    # disposal
    "key_text_sql",
    "text_cast_sql",
    "refuse_delete_trigger_sql",
    "drop_trigger_sql",
    "draws_ids_under_head_lock",
    # control-plane statements
    "writes_returning",
    "selects_updated_rows",
    # search
    "table_names",
    "contains_sql",
    "query_time_limit",
    "create_readonly_role",
    # replicas watched between batches (archival.engine.replicas)
    "replica_lag",
)

# Statements a backend provides only when one of its answers says so (Backend's
# own version of such a statement refuses: the engine never calls it there).
OPTIONAL = {
    "moves_in_one_statement": ("move_statement_sql",),
    "moves_through_procedures": ("mark_table", "archive_batch", "restore_batch"),
    "draws_ids_under_head_lock": ("take_chain_head_sql", "insert_then_sql"),
    "selects_updated_rows": ("select_updated_sql",),
}

VENDOR_BRANCH = re.compile(r"vendor *(==|!=|in[^a-z_])|[.]vendor *in ")


def provides(backend_class: type[Backend], name: str) -> bool:
    """``backend_class`` has a statement ``name`` of its own (not Backend's refusal)."""
    own = getattr(backend_class, name, None)
    return callable(own) and own is not getattr(Backend, name, None)


def unimplemented(backend_class: type[Backend]) -> list[str]:
    """The contract's methods ``backend_class`` does not define (it inherits Backend's abstract one)."""
    return [name for name in CONTRACT if getattr(backend_class, name) is getattr(Backend, name)]


def test_the_contract_lists_every_abstract_method_of_backend():
    assert set(Backend.__abstractmethods__) == set(CONTRACT)


@pytest.mark.parametrize("backend_class", BACKENDS, ids=lambda c: c.__name__)
def test_every_backend_implements_every_method_of_the_contract(backend_class):
    assert unimplemented(backend_class) == []
    assert not inspect.isabstract(backend_class)
    backend_class("default")  # instantiable: no abstract method left


def test_a_backend_missing_one_method_fails_the_check():
    class Incomplete(SQLiteBackend):
        pass

    # Take one method away: it falls back to Backend's abstract one.
    Incomplete.contains_sql = Backend.contains_sql
    assert unimplemented(Incomplete) == ["contains_sql"]


@pytest.mark.parametrize("name", CONTRACT)
def test_each_method_of_the_contract_states_its_contract(name):
    doc = inspect.getdoc(getattr(Backend, name)) or ""
    assert len(doc) > 40, f"Backend.{name} needs a docstring saying what it must do"


@pytest.mark.parametrize("backend_class", BACKENDS, ids=lambda c: c.__name__)
def test_a_backend_answering_yes_provides_the_statements_that_go_with_it(backend_class):
    backend = backend_class("default")
    for question, statements in OPTIONAL.items():
        if getattr(backend, question)():
            for name in statements:
                assert provides(backend_class, name), f"{backend_class.__name__} lacks {name}"


def test_a_backend_that_leaves_out_a_statement_it_answers_yes_for_fails_the_check():
    class Incomplete(PostgresBackend):
        pass

    Incomplete.move_statement_sql = Backend.move_statement_sql
    assert not provides(Incomplete, "move_statement_sql")
    assert provides(PostgresBackend, "move_statement_sql")


def test_engine_disposal_search_and_governance_ask_no_backend_its_vendor():
    branches = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for folder in ("archival/engine", "archival/disposal", "archival/search", "governance")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if VENDOR_BRANCH.search(line)
    ]
    assert branches == []


def test_the_vendor_check_finds_a_branch_when_there_is_one():
    assert VENDOR_BRANCH.search('if on.vendor == "sqlite":')
    assert VENDOR_BRANCH.search('joined = on.vendor in {"mysql", "microsoft"}')
    assert not VENDOR_BRANCH.search("if on.moves_in_one_statement():")
