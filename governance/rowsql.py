"""Plain statements built from a model's metadata, for the engine's hottest control-plane reads and writes.

Per archived table the engine claims and renews a lease, reads its state,
config and run, looks for child configs, appends two audit events and reads
the batch ledger twice; per batch it inserts a ledger row. Built through the
ORM's query compiler each of these cost more than running the statement
(two to five times, on SQLite); these helpers write the SQL the ORM would
(columns from ``_meta``, values through each field's ``get_db_prep_save``,
results through the same converters, names quoted by the connection)
without the compiler. Values are always parameters.
"""

from __future__ import annotations

from typing import TypeVar

from django.db import connections, models, router
from django.db.models.expressions import Col

from archival.backends import backend_for


def plain_sql(using: str) -> bool:
    """True when these helpers write INSERT ... RETURNING and SELECT ... FOR UPDATE themselves on ``using``.

    Elsewhere (SQL Server, MySQL without RETURNING) :func:`insert` and the
    audit chain's lock go through the ORM, and ``test_audit_chain_orm_path``
    keeps that path tested.
    """
    return backend_for(using).writes_returning() and connections[using].features.can_return_columns_from_insert


def insert(instance: models.Model, using: str, *, computed: dict[str, tuple[str, list]] | None = None) -> None:
    """INSERT ``instance`` and set its id: the statement the ORM's save() writes, without the compiler.

    ``computed`` names fields whose value is a scalar subquery (SQL and its
    parameters) that the database evaluates in the INSERT itself, e.g. a
    count the caller checks before it commits; ``instance`` gets the values
    the row got. Without RETURNING each subquery runs first, on its own.
    """
    computed = computed or {}
    connection = connections[using]
    if not plain_sql(using):
        for name, (sub_sql, sub_params) in computed.items():
            with connection.cursor() as cur:
                cur.execute(sub_sql, sub_params)
                setattr(instance, name, cur.fetchone()[0])
        instance.save(using=using, force_insert=True)
        return
    meta = type(instance)._meta
    sql, values = insert_statement(instance, using, computed=computed)
    returned = [meta.pk.column] + [meta.get_field(name).column for name in computed]
    sql += f" RETURNING {', '.join(connection.ops.quote_name(c) for c in returned)}"
    with connection.cursor() as cur:
        cur.execute(sql, values)
        instance.pk, *values_got = cur.fetchone()
    for name, value in zip(computed, values_got, strict=True):
        setattr(instance, meta.get_field(name).attname, value)
    mark_saved(instance, using)


def mark_saved(instance: models.Model, using: str) -> None:
    """Tell the ORM that ``instance`` is a row of ``using`` now (what save() sets after an INSERT)."""
    instance._state.adding = False
    instance._state.db = using


def insert_statement(
    instance: models.Model,
    using: str,
    *,
    with_pk: bool = False,
    pre_save: bool = True,
    computed: dict[str, tuple[str, list]] | None = None,
) -> tuple[str, list]:
    """The ``INSERT ... VALUES`` of ``instance`` (its id too with ``with_pk``), and its parameters.

    Field values go through ``pre_save`` (auto_now_add fields are filled on
    the instance, as save() does; ``pre_save=False``: the caller did it) and
    ``get_db_prep_save``. A field named in ``computed`` gets its scalar
    subquery instead (see :func:`insert`).
    """
    computed = computed or {}
    connection = connections[using]
    qn = connection.ops.quote_name
    meta = type(instance)._meta
    fields = [f for f in meta.concrete_fields if with_pk or not f.primary_key]
    slots, values = [], []
    for f in fields:
        if f.name in computed:
            sub_sql, sub_params = computed[f.name]
            slots.append(f"({sub_sql})")
            values += sub_params
            continue
        value = f.pre_save(instance, True) if pre_save else getattr(instance, f.attname)
        slots.append("%s")
        values.append(f.get_db_prep_save(value, connection))
    sql = f"INSERT INTO {qn(meta.db_table)} ({', '.join(qn(f.column) for f in fields)}) VALUES ({', '.join(slots)})"
    return sql, values


ModelT = TypeVar("ModelT", bound=models.Model)


def fetch_with_parents(model: type[ModelT], *, pk, parents: list[str]) -> ModelT | None:
    """The row ``pk`` of ``model`` with the rows its foreign keys ``parents`` point at, in one SELECT.

    Each parent is set on the instance as the ORM's ``select_related`` sets
    it (the related-object cache), converted as :func:`fetch` converts. The
    parents must live in the same database and be NOT NULL keys (INNER JOIN).
    """
    using = router.db_for_read(model)
    connection = connections[using]
    qn = connection.ops.quote_name
    columns, joins, readers = _joined(model, parents, using)
    sql = f"SELECT {columns} FROM {qn(model._meta.db_table)} t0 {joins} WHERE t0.{qn(model._meta.pk.column)} = %s"
    with connection.cursor() as cur:
        cur.execute(sql, [model._meta.pk.get_db_prep_value(pk, connection)])
        row = cur.fetchone()
    return None if row is None else _with_parents(row, readers, parents, using)


def update_and_fetch_with_parents(model: type[models.Model], fields: dict, *, pk, parents: list[str], **update):
    """:func:`update_where`, then :func:`fetch_with_parents` of the row it changed; None when it changed none.

    One statement where the backend ``selects_updated_rows`` (the UPDATE's
    changed rows joined to the parents), elsewhere the two in turn.
    """
    using = router.db_for_write(model)
    connection = connections[using]
    backend = backend_for(using)
    if not backend.selects_updated_rows():
        if not update_where(model, fields, pk=pk, **update):
            return None
        return fetch_with_parents(model, pk=pk, parents=parents)
    update_sql, params = update_statement(model, fields, pk=pk, **update)
    columns, joins, readers = _joined(model, parents, using)
    with connection.cursor() as cur:
        cur.execute(backend.select_updated_sql(update_sql, columns, joins), params)
        row = cur.fetchone()
    return None if row is None else _with_parents(row, readers, parents, using)


def _joined(model, parents: list[str], using: str) -> tuple[str, str, list]:
    """The column list and JOINs of ``model`` (alias t0) with its ``parents``, and each part's reader."""
    connection = connections[using]
    qn = connection.ops.quote_name
    parts = [(model, "t0")]
    joins = []
    for i, name in enumerate(parents, 1):
        fk = model._meta.get_field(name)
        target = fk.related_model
        if router.db_for_read(target) != using:
            raise ValueError(f"{target.__name__} is not in the database of {model.__name__}")
        parts.append((target, f"t{i}"))
        joins.append(f"JOIN {qn(target._meta.db_table)} t{i} ON t{i}.{qn(target._meta.pk.column)} = t0.{qn(fk.column)}")
    columns, readers = [], []
    for part_model, alias in parts:
        fields = list(part_model._meta.concrete_fields)
        columns += [f"{alias}.{qn(f.column)}" for f in fields]
        readers.append((part_model, fields, _row_converter(connection, part_model._meta.db_table, fields)))
    return ", ".join(columns), " ".join(joins), readers


def _with_parents(row, readers: list, parents: list[str], using: str) -> models.Model:
    instances, start = [], 0
    for part_model, fields, convert in readers:
        values = convert(row[start : start + len(fields)])
        start += len(fields)
        instances.append(part_model.from_db(using, [f.attname for f in fields], values))
    instance = instances[0]
    for name, parent in zip(parents, instances[1:], strict=True):
        setattr(instance, name, parent)
    return instance


def update_where(
    model: type[models.Model],
    fields: dict,
    *,
    pk,
    where: dict | None = None,
    raw_sets: list[str] | None = None,
    raw_set_params: list | None = None,
    raw_where: list[tuple[str, list]] | None = None,
) -> int:
    """``UPDATE`` the row ``pk`` of ``model`` (when ``where`` matches too); return the row count.

    ``fields`` maps field names to values; ``where`` adds equality tests,
    field name to value (a list or tuple means IN). ``raw_sets`` and
    ``raw_where`` are SQL fragments written by the caller (column names from
    :func:`column`), never text from a user or a config; their parameters
    (``raw_set_params``, and the list beside each ``raw_where`` fragment) go
    through :func:`prep` first.
    """
    connection = connections[router.db_for_write(model)]
    sql, params = update_statement(
        model, fields, pk=pk, where=where, raw_sets=raw_sets, raw_set_params=raw_set_params, raw_where=raw_where
    )
    with connection.cursor() as cur:
        return execute_counted(router.db_for_write(model), cur, sql, params)


def execute_counted(using: str, cursor, sql: str, params) -> int:
    """Run one INSERT, UPDATE or DELETE on ``using`` and return the rows it changed.

    Every row count the engine decides on is read here, through the
    database's backend (SQL Server: ``cursor.rowcount`` is -1 under NOCOUNT).
    """
    return backend_for(using).execute_counted(cursor, sql, params)


def update_statement(
    model, fields: dict, *, pk, where=None, raw_sets=None, raw_set_params=None, raw_where=None
) -> tuple[str, list]:
    """The SQL and parameters :func:`update_where` runs."""
    connection = connections[router.db_for_write(model)]
    meta = model._meta
    sets: list[str] = []
    params: list = []
    for name, value in fields.items():
        field = meta.get_field(name)
        sets.append(f"{connection.ops.quote_name(field.column)} = %s")
        params.append(field.get_db_prep_save(value, connection))
    sets += raw_sets or []
    params += raw_set_params or []
    conditions, where_params = _conditions(model, connection, {meta.pk.name: pk, **(where or {})}, raw_where)
    params += where_params
    sql = f"UPDATE {connection.ops.quote_name(meta.db_table)} SET {', '.join(sets)} WHERE {' AND '.join(conditions)}"
    return sql, params


def column(model: type[models.Model], name: str) -> str:
    """The quoted column of field ``name`` on the connection that writes ``model``."""
    connection = connections[router.db_for_write(model)]
    return connection.ops.quote_name(model._meta.get_field(name).column)


def prep(model: type[models.Model], name: str, value):
    """``value`` as the database driver takes it for field ``name``."""
    connection = connections[router.db_for_write(model)]
    return model._meta.get_field(name).get_db_prep_save(value, connection)


def select_rows(model: type[models.Model], names: list[str], *, where: dict, order_by: str) -> list[tuple]:
    """Rows of ``names`` (field names) where every ``where`` field equals its value, ordered by one field.

    The values come back as the ORM's ``values_list`` gives them: each
    column goes through the same converters (JSON decoded, and so on).
    """
    meta = model._meta
    return _read(model, [meta.get_field(name) for name in names], where=where, order_by=order_by)[1]


def fetch(
    model: type[models.Model], *, where: dict, raw_where: list[tuple[str, list]] | None = None
) -> list[models.Model]:
    """Instances of ``model`` where every ``where`` field equals its value (and each ``raw_where`` holds).

    A plain SELECT of the model's columns, converted as the ORM converts
    them, handed to ``Model.from_db``: the instances are the ORM's own,
    without the query compiler's cost (nor ``Model.objects.raw``'s, which
    resolves the column order and converters again for every query).
    ``raw_where`` fragments follow the rules of :func:`update_where`.
    """
    fields = list(model._meta.concrete_fields)
    using, rows = _read(model, fields, where=where, raw_where=raw_where)
    attnames = [f.attname for f in fields]
    return [model.from_db(using, attnames, row) for row in rows]


def _read(model, fields: list, *, where: dict, raw_where=None, order_by: str | None = None) -> tuple[str, list[tuple]]:
    """(alias, rows of ``fields``) through the ORM's converters."""
    using = router.db_for_read(model)
    connection = connections[using]
    meta = model._meta
    table = meta.db_table
    convert = _row_converter(connection, table, fields)
    qn = connection.ops.quote_name
    conditions, params = _conditions(model, connection, where, raw_where)
    sql = f"SELECT {', '.join(qn(f.column) for f in fields)} FROM {qn(table)} WHERE {' AND '.join(conditions)}"
    if order_by:
        sql += f" ORDER BY {qn(meta.get_field(order_by).column)}"
    with connection.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    return using, [convert(row) for row in rows]


def _row_converter(connection, table: str, fields: list):
    """A function turning a row of ``fields`` as the driver gives it into the values the ORM gives."""
    cols = [Col(table, f) for f in fields]
    converters = [connection.ops.get_db_converters(c) + c.get_db_converters(connection) for c in cols]
    if not any(converters):
        return tuple

    def convert(row) -> tuple:
        values = []
        for value, col, convs in zip(row, cols, converters, strict=True):
            for converter in convs:
                value = converter(value, col, connection)
            values.append(value)
        return tuple(values)

    return convert


def _conditions(model, connection, where: dict, raw_where: list[tuple[str, list]] | None = None) -> tuple[list, list]:
    """WHERE conjuncts and their parameters: field = value (a list or tuple: IN), then the raw fragments."""
    meta = model._meta
    qn = connection.ops.quote_name
    conditions: list[str] = []
    params: list = []
    for name, value in where.items():
        field = meta.get_field(name)
        if isinstance(value, list | tuple):
            conditions.append(f"{qn(field.column)} IN ({', '.join(['%s'] * len(value))})")
            params += [field.get_db_prep_value(v, connection) for v in value]
        else:
            conditions.append(f"{qn(field.column)} = %s")
            params.append(field.get_db_prep_value(value, connection))
    for fragment, fragment_params in raw_where or []:
        conditions.append(f"({fragment})")
        params += fragment_params
    return conditions, params
