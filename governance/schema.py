"""Validate a table config against the live source schema.

Every name in a config must name an existing table or column exactly; nothing
else is accepted, so nothing a config says can reach SQL except as a quoted,
verified identifier. Runs on every create path (admin form, import, command,
engine) through ``TableConfig.clean()``.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import DatabaseError

from archival.backends import SchemaError, TableInfo, backend_for
from archival.backends.base import DATE_FAMILIES, Column

ARCHIVE_ALIAS = "archive"
# How many of a text column's values are read to tell whether it holds dates.
TEXT_DATE_SAMPLE = 1000


def text_dates_problem(source_db: str, schema: str, table: str, column: Column) -> str | None:
    """Why a text column cannot serve as a date column, or None when it holds ISO dates.

    SQLite has no date type: ISO text is its usual way to keep dates, and
    text columns elsewhere hold them too. A sample of the column's values
    decides: most of them must be dates (YYYY-MM-DD, a time of day may
    follow). The rest, and whatever else the column holds later, is never
    eligible: the plan counts those rows as unreadable dates.
    """
    backend = backend_for(source_db)
    check = backend.readable_date_sql(backend.quote("v"), column)
    sample = backend.limit_sql(
        f"SELECT {backend.quote(column.name)} AS {backend.quote('v')} FROM {backend.qualified(schema, table)} "
        f"WHERE {backend.quote(column.name)} IS NOT NULL",
        str(TEXT_DATE_SAMPLE),
    )
    with backend.connection.cursor() as cur:
        cur.execute(f"SELECT COUNT(*), COALESCE(SUM(CASE WHEN {check} THEN 1 ELSE 0 END), 0) FROM ({sample}) t")
        read, dates = (int(n) for n in cur.fetchone())
    if dates * 2 >= read:
        return None
    return (
        f"Column {column.name!r} of {table} is {column.db_type}, not a date: "
        f"{read - dates} of {read} values read are not dates (YYYY-MM-DD)."
    )


def describe_source_table(source_db: str, schema: str, table: str) -> TableInfo:
    """Read a source table's live definition, or raise ValidationError."""
    try:
        backend = backend_for(source_db)
        if not backend.table_exists(schema, table):
            raise ValidationError({"table_name": f"Table {schema}.{table} does not exist in {source_db}."})
        return backend.describe(schema, table)
    except (DatabaseError, SchemaError) as exc:
        raise ValidationError(f"Cannot read the schema of {source_db}: {exc}") from None


def validate_config_against_schema(config) -> None:
    errors: dict[str, str] = {}
    info = describe_source_table(config.source_db, config.schema_name, config.table_name)
    columns = {c.name: c for c in info.columns}

    if not info.primary_key:
        raise ValidationError({"table_name": f"Table {config} has no primary key; keyset batches need one."})
    declared = config.pk_columns
    if not declared:
        config.primary_key_columns = ",".join(info.primary_key)
    elif declared != info.primary_key:
        errors["primary_key_columns"] = (
            f"The primary key of {config} is ({', '.join(info.primary_key)}), not ({', '.join(declared)})."
        )

    def need_column(
        field: str,
        name: str,
        table_columns=columns,
        table=config.table_name,
        dates=False,
    ):
        col = table_columns.get(name)
        if col is None:
            errors[field] = f"Column {name!r} does not exist in {table}."
        elif dates and col.generic == "text":
            problem = text_dates_problem(config.source_db, config.schema_name, table, col)
            if problem:
                errors[field] = problem
        elif dates and col.generic not in DATE_FAMILIES:
            errors[field] = f"Column {name!r} of {table} is {col.db_type}, not a date."

    if config.archival_logic == "DATE_BASED":
        need_column("date_column", config.date_column, dates=True)
    else:
        need_column("contract_reference_column", config.contract_reference_column)
        try:
            contract = describe_source_table(config.source_db, config.schema_name, config.contract_table)
        except ValidationError:
            errors["contract_table"] = (
                f"Contract table {config.contract_table!r} does not exist in {config.source_db}.{config.schema_name}."
            )
        else:
            contract_columns = {c.name: c for c in contract.columns}
            need_column(
                "contract_key_column",
                config.contract_key_column,
                contract_columns,
                config.contract_table,
            )
            need_column(
                "contract_maturity_column",
                config.contract_maturity_column,
                contract_columns,
                config.contract_table,
                dates=True,
            )
    if config.hold_contract_column:
        need_column("hold_contract_column", config.hold_contract_column)
    source = backend_for(config.source_db)
    for name in info.primary_key:
        problem = source.key_column_error(columns[name])
        if problem:
            errors["primary_key_columns"] = problem
    # Names the archive builds from this table (schemas, tables, constraints).
    errors.update(backend_for(ARCHIVE_ALIAS).name_errors(config, info))
    if errors:
        raise ValidationError(errors)
