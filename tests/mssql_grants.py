"""The permission contract: what sql/03 and sql/08 (and 10) grant, and what a captured statement needs.

Grants. The scripts are read as sqlcmd runs them (``$(Var)`` substituted,
split on ``GO``) and each batch is parsed by sqlfluff (T-SQL). Per statement
of the parse tree: ``USE`` switches the database; ``CREATE USER ... FOR
LOGIN`` maps a login to a user of the current database; ``ALTER ROLE ... ADD
MEMBER`` and ``GRANT``/``DENY ... [ON class::securable] TO principal`` are
read from the statement's text. Dynamic SQL is followed where the scripts use
it: ``EXEC (N'...')`` parses the literal; a cursor loop over
``STRING_SPLIT(N'a,b', ...)`` or over ``sys.schemas WHERE name LIKE
N'prefix%'`` runs its ``SET @sql = ...`` concatenation once per value
(``QUOTENAME(@v)``, literals and variables) and executes it in the database
``EXEC [db].sys.sp_executesql`` names. Anything else dynamic is ignored, so a
grant made in a way this reader does not follow counts as missing.

Rules encoded (Microsoft, "Permissions (Database Engine)" and "GRANT Object
Permissions", https://learn.microsoft.com/sql/relational-databases/security/permissions-database-engine):
a login reaches a database only through a user mapped to it (else error
916); a user is in ``public`` and in the roles it was added to; a
permission on the database covers every schema and object in it, one on a
schema covers its objects; ``db_datareader`` has SELECT and
``db_datawriter`` INSERT/UPDATE/DELETE on the whole database; DENY beats
GRANT; catalog views (``sys.*``, ``INFORMATION_SCHEMA``) need only a user in
the database (what they show is limited by metadata visibility, not
checked here). DDL needs CREATE TABLE/ALTER, which no runtime role has.

Needs. A captured statement is parsed by sqlfluff; its statement type and
table references give (database, object, verb): SELECT needs SELECT on each
table read; INSERT/UPDATE/DELETE/MERGE need that verb on the target (and
SELECT on the tables they read); EXEC needs EXECUTE on the procedure;
CREATE/ALTER/DROP need the DDL permission. Names resolve as SQL Server
resolves them: one part -> dbo in the connection's database, two parts ->
schema.object there, three parts -> that database. ``#temp`` tables and
CTE names need nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cache

from sqlfluff.core import FluffConfig, Linter

from tests.mssql_fixtures import GO_RE, SQL_DIR
from tests.mssql_standin import SQLCMD_VARIABLES

# The scripts that create users, roles, GRANTs and DENYs (10, where present,
# adds DENYs that outrank db_datawriter in the control database).
GRANT_SCRIPTS = ("03_roles_and_security.sql", "08_signing_and_grants.sql", "10_governance_triggers.sql")
FIXED_ROLES = {
    "db_datareader": {"SELECT"},
    "db_datawriter": {"INSERT", "UPDATE", "DELETE"},
    "db_owner": {"SELECT", "INSERT", "UPDATE", "DELETE", "EXECUTE", "CREATE TABLE", "ALTER"},
    "db_ddladmin": {"CREATE TABLE", "ALTER"},
}


@cache
def _linter() -> Linter:
    return Linter(config=FluffConfig(overrides={"dialect": "tsql"}))


def _name(raw: str) -> str:
    raw = raw.strip()
    return raw[1:-1].replace("]]", "]") if raw.startswith("[") else raw.strip('"')


def _parts(raw: str) -> list[str]:
    return [_name(p) for p in re.findall(r"\[(?:[^\]]|\]\])*\]|[^.\s]+", raw.strip())]


@dataclass(frozen=True)
class Need:
    database: str
    obj: str  # schema.object, or "" for a database-level permission
    verb: str


# The securable of a server permission (granted to a login, not a database user).
SERVER = "<server>"


@dataclass
class Grants:
    users: dict = field(default_factory=dict)  # (database, login) -> user
    members: dict = field(default_factory=dict)  # (database, member) -> {role}
    granted: set = field(default_factory=set)  # (database, principal, verb, securable pattern)
    denied: set = field(default_factory=set)

    def principals(self, database: str, user: str) -> set[str]:
        found, todo = {user, "public"}, [user]
        while todo:
            for role in self.members.get((database, todo.pop()), ()):
                if role not in found:
                    found.add(role)
                    todo.append(role)
        return found

    @staticmethod
    def _covers(securable: str, obj: str) -> bool:
        """Does a permission on ``securable`` (DATABASE, SCHEMA::s, OBJECT::s.o, patterns) cover ``obj``?"""
        if securable == "DATABASE":
            return True
        kind, _, name = securable.partition("::")
        if kind == "SCHEMA":
            return bool(obj) and fnmatchcase(obj.split(".")[0].lower(), name.lower())
        return fnmatchcase(obj.lower(), name.lower())

    def allows(self, login: str, need: Need) -> bool:
        if need.obj == SERVER:
            # A server permission (VIEW SERVER STATE) is granted to the login, in master.
            return ("master", login.lower(), need.verb, "DATABASE") in self.granted and not any(
                d == "master" and who == login.lower() and verb == need.verb for d, who, verb, _ in self.denied
            )
        user = self.users.get((need.database.lower(), login.lower()))
        if user is None:
            return False  # 916: no user for this login in the database
        if need.verb == "CONNECT":
            return True
        principals = {p.lower() for p in self.principals(need.database.lower(), user)}
        if any(need.verb in FIXED_ROLES.get(p, ()) for p in principals):
            fixed = True
        else:
            fixed = False

        def matching(rows):
            return any(
                db == need.database.lower() and who in principals and verb == need.verb and self._covers(sec, need.obj)
                for db, who, verb, sec in rows
            )

        if need.verb == "VIEW DEFINITION":
            # Metadata visibility: any permission on the securable (or one covering it) shows it.
            return any(
                db == need.database.lower() and who in principals and self._covers(sec, need.obj)
                for db, who, _, sec in self.granted
            ) or any(FIXED_ROLES.get(p) for p in principals)
        if matching(self.denied):
            return False
        return fixed or matching(self.granted)


_GRANT_RE = re.compile(
    r"^(GRANT|DENY)\s+(?P<perms>.+?)(?:\s+ON\s+(?P<on>(?:(?P<cls>\w+)::)?\s*(?P<sec>\S+)))?\s+TO\s+(?P<to>.+?)\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_ADD_MEMBER_RE = re.compile(r"^ALTER\s+ROLE\s+(\S+)\s+ADD\s+MEMBER\s+(\S+?)\s*;?\s*$", re.IGNORECASE)
_CREATE_USER_RE = re.compile(r"^CREATE\s+USER\s+(\S+)\s+(?:FOR|FROM)\s+LOGIN\s+(\S+)", re.IGNORECASE)
_EXEC_LITERAL_RE = re.compile(r"^EXEC(?:UTE)?\s*\(\s*N'((?:[^']|'')*)'\s*\)\s*;?\s*$", re.IGNORECASE | re.DOTALL)


_GRANTISH = re.compile(r"\b(CREATE\s+USER|ALTER\s+ROLE|GRANT|DENY)\b", re.IGNORECASE)


def _split_statements(text: str) -> list[str]:
    """Split on ; outside string literals and [names]."""
    pieces, current = [], []
    for m in re.finditer(r"N?'(?:[^']|'')*'|\[(?:[^\]]|\]\])*\]|;|[^';\[]+|.", text):
        if m.group(0) == ";":
            pieces.append("".join(current))
            current = []
        else:
            current.append(m.group(0))
    pieces.append("".join(current))
    return pieces


class _Reader:
    def __init__(self):
        self.grants = Grants()
        self.database = "master"
        self.patterns: dict[str, str] = {}

    def batch(self, text: str, dynamic: bool = False) -> None:
        if re.search(r"\bCURSOR\b", text, re.IGNORECASE):
            self._cursor_loop(text)
            return
        parsed = _linter().parse_string(text)
        if parsed.violations or parsed.tree is None:
            pieces = [p for p in _split_statements(text) if p and p.strip()] if dynamic else []
            if len(pieces) > 1:
                # Dynamic SQL may hold statements sqlfluff does not know
                # (CREATE CERTIFICATE ... FROM BINARY): read the others one by one.
                for piece in pieces:
                    if _GRANTISH.search(piece):
                        self.batch(piece, dynamic=True)
                return
            raise AssertionError(f"grant script batch does not parse: {parsed.violations[:1]} in {text[:200]!r}")
        for segment in parsed.tree.recursive_crawl("statement", recurse_into=False):
            self.statement(segment)

    def statement(self, segment) -> None:
        kinds = {c.get_type() for c in segment.segments}
        raw = " ".join(segment.raw.split())
        if "use_statement" in kinds:
            self.database = _name(raw.split(None, 1)[1].rstrip(";"))
        elif "create_user_statement" in kinds:
            m = _CREATE_USER_RE.match(raw)
            if m:
                self.grants.users[(self.database.lower(), _name(m.group(2)).lower())] = _name(m.group(1))
        elif "alter_role_statement" in kinds:
            m = _ADD_MEMBER_RE.match(raw)
            if m:
                key = (self.database.lower(), _name(m.group(2)))
                self.grants.members.setdefault(key, set()).add(_name(m.group(1)))
        elif kinds & {"grant_statement", "deny_statement"}:
            self._grant(raw)
        elif kinds & {"if_then_statement", "if_statement"}:
            for inner in segment.recursive_crawl("statement", recurse_into=True):
                if inner is not segment:
                    self.statement(inner)
        elif "execute_script_statement" in kinds:
            m = _EXEC_LITERAL_RE.match(raw)
            inner = m.group(1).replace("''", "'") if m else ""
            # Only dynamic statements that grant or map users matter here.
            if re.match(r"\s*(CREATE\s+USER|ALTER\s+ROLE|GRANT|DENY)\b", inner, re.IGNORECASE):
                self.batch(inner, dynamic=True)

    def _grant(self, raw: str) -> None:
        m = _GRANT_RE.match(raw)
        if not m:
            raise AssertionError(f"unread grant: {raw}")
        perms = [" ".join(p.split()).upper() for p in m.group("perms").split(",")]
        if m.group("on"):
            cls = (m.group("cls") or "OBJECT").upper()
            parts = _parts(m.group("sec"))
            securable = f"{cls}::{'.'.join(parts if cls != 'OBJECT' or len(parts) > 1 else ['dbo', *parts])}"
        else:
            securable = "DATABASE"
        for token, pattern in self.patterns.items():
            securable = securable.replace(token, pattern)
        target = self.grants.denied if m.group(1).upper() == "DENY" else self.grants.granted
        for principal in m.group("to").split(","):
            for perm in perms:
                target.add((self.database.lower(), _name(principal).lower(), perm, securable))

    # -- the scripts' dynamic SQL in cursor loops ------------------------------
    def _cursor_loop(self, text: str) -> None:
        split = re.search(r"STRING_SPLIT\(\s*N'([^']*)'", text, re.IGNORECASE)
        like = re.search(r"FROM\s+sys\.schemas\s+WHERE\s+name\s+LIKE\s+(.+?);", text, re.IGNORECASE | re.DOTALL)
        fetch = re.search(r"FETCH\s+NEXT\s+FROM\s+\w+\s+INTO\s+(@\w+)", text, re.IGNORECASE)
        if not fetch or not (split or like):
            return  # a loop over other things (signing procedures) grants nothing
        var = fetch.group(1)
        if split:
            values = [v.strip() for v in split.group(1).split(",") if v.strip()]
        else:
            # Every schema the LIKE pattern matches, now and later: a stand-in
            # name that parses, read back as the fnmatch pattern in _grant.
            token = f"like_pattern_{len(self.patterns)}"
            self.patterns[token] = _like_to_fnmatch(_evaluate(like.group(1), {}))
            values = [token]
        declared = {}
        for m in re.finditer(r"DECLARE\s+(@\w+)\s+[\w()]+\s*=\s*(.+?);\s*$", text, re.I | re.M | re.S):
            declared[m.group(1).lower()] = _evaluate(m.group(2), declared)
        for value in values:
            env = {**declared, var.lower(): value}
            for assign in re.finditer(r"SET\s+(@\w+)\s*=\s*(.+?);\s*$", text, re.IGNORECASE | re.MULTILINE | re.DOTALL):
                env[assign.group(1).lower()] = _evaluate(assign.group(2), env)
            for call in re.finditer(r"EXEC\s+(@\w+|sys\.sp_executesql)\s+(@\w+)\s*;", text, re.IGNORECASE):
                where = call.group(1).lower()
                sql = env.get(call.group(2).lower())
                if sql is None:
                    continue
                saved = self.database
                if where.startswith("@"):
                    target = env.get(where, "")
                    self.database = _parts(target)[0] if target else saved
                try:
                    self.batch(sql, dynamic=True)
                finally:
                    self.database = saved


# A value the scripts compute from the server (a certificate's bytes): any
# binary literal keeps the statement it is spliced into parseable.
UNKNOWN = "0x00"
_TOKEN = re.compile(
    r"N?'(?P<lit>(?:[^']|'')*)'"
    r"|QUOTENAME\(\s*(?P<quoted>@\w+|N'(?:[^']|'')*')\s*(?:,\s*N?'[^']*')?\s*\)"
    r"|REPLACE\(\s*(?P<rep>(?:[^()]|\([^()]*\))*?)\s*,\s*N?'(?P<old>(?:[^']|'')*)'\s*,\s*N?'(?P<new>(?:[^']|'')*)'\s*\)"
    r"|(?P<var>@\w+)|(?P<plus>\+)|(?P<other>\S)",
    re.IGNORECASE,
)


def _evaluate(expr: str, env: dict) -> str:
    """A T-SQL string expression: N'literals', QUOTENAME, REPLACE, @variables joined by +.

    Anything else (CONVERT of a certificate, ...) is a value only the server
    knows: :data:`UNKNOWN`.
    """
    expr = expr.strip()
    out = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if expr[pos].isspace():
            pos += 1
            continue
        if m is None or m.group("other"):
            return UNKNOWN
        pos = m.end()
        if m.group("plus"):
            continue
        if m.group("lit") is not None:
            out.append(m.group("lit").replace("''", "'"))
        elif m.group("quoted"):
            arg = m.group("quoted")
            value = env.get(arg.lower(), "") if arg.startswith("@") else arg[2:-1].replace("''", "'")
            out.append("[" + value.replace("]", "]]") + "]")
        elif m.group("rep") is not None:
            inner = _evaluate(m.group("rep"), env)
            out.append(inner.replace(m.group("old").replace("''", "'"), m.group("new").replace("''", "'")))
        else:
            out.append(env.get(m.group("var").lower(), UNKNOWN))
    return "".join(out)


def _like_to_fnmatch(pattern: str) -> str:
    """LIKE's % and _ as fnmatch's * and ?; [..] classes stay classes."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "[":
            end = pattern.index("]", i + 2) if pattern[i + 1 : i + 2] == "[" else pattern.index("]", i)
            out.append(pattern[i : end + 1])
            i = end + 1
            continue
        out.append({"%": "*", "_": "?"}.get(c, c))
        i += 1
    return "".join(out)


@cache
def load_grants() -> Grants:
    reader = _Reader()
    for script in GRANT_SCRIPTS:
        if not (SQL_DIR / script).exists():
            continue
        text = (SQL_DIR / script).read_text()
        text = re.sub(r"\$\((\w+)\)", lambda m: SQLCMD_VARIABLES[m.group(1)], text)
        for batch in GO_RE.split(text):
            if batch.strip():
                reader.batch(batch)
    return reader.grants


# -- what a statement needs --------------------------------------------------------
_DDL = {"create_table_statement", "alter_table_statement", "drop_table_statement", "create_index_statement",
        "create_schema_statement", "drop_index_statement"}  # fmt: skip
_DML = {"insert_statement": "INSERT", "update_statement": "UPDATE", "delete_statement": "DELETE",
        "merge_statement": "MERGE"}  # fmt: skip


def _resolve(raw: str, database: str) -> tuple[str, str] | None:
    parts = _parts(raw)
    if not parts or parts[-1].startswith("#") or parts[0].startswith("@"):
        return None
    if len(parts) == 1:
        return database, f"dbo.{parts[0]}"
    if len(parts) == 2:
        return database, f"{parts[0]}.{parts[1]}"
    return parts[-3], f"{parts[-2] or 'dbo'}.{parts[-1]}"


def _is_catalog(obj: str) -> bool:
    return obj.lower().startswith(("sys.", "information_schema."))


# How the catalog reads name the object they look up: by parameters.
_CATALOG_OBJECT = [
    re.compile(r"SCHEMA_ID\(@P(\d+)\)\s+AND\s+\w+\.name\s*=\s*@P(\d+)", re.I),
    re.compile(r"TABLE_SCHEMA\s*=\s*@P(\d+)\s+AND\s+TABLE_NAME\s*=\s*@P(\d+)", re.I),
    re.compile(r"OBJECT_ID\(\s*QUOTENAME\(@P(\d+)\)\s*\+\s*N'\.'\s*\+\s*QUOTENAME\(@P(\d+)\)", re.I),
]
_CATALOG_SCHEMA = re.compile(r"FROM\s+sys\.schemas\s+WHERE\s+name\s*=\s*@P(\d+)", re.I)


def _catalog_needs(tsql: str, database: str, params: tuple) -> list[Need]:
    """A catalog read shows only securables the user has some permission on (metadata visibility).

    https://learn.microsoft.com/sql/relational-databases/security/metadata-visibility-configuration
    """
    needs = []
    for pattern in _CATALOG_OBJECT:
        for m in pattern.finditer(tsql):
            schema, table = (params[int(g) - 1] for g in m.groups())
            needs.append(Need(database, f"{schema}.{table}", "VIEW DEFINITION"))
    for m in _CATALOG_SCHEMA.finditer(tsql):
        needs.append(Need(database, f"{params[int(m.group(1)) - 1]}.*", "VIEW DEFINITION"))
    return needs


def required_permissions(tsql: str, *, database: str, params: tuple = ()) -> tuple[Need, ...]:
    """(database, object, verb) a batch needs: its statements' and, for catalog reads, the object they name."""
    needs = list(_statement_needs(tsql, database=database))
    if any(n.obj == "" and n.verb == "CONNECT" for n in needs) and re.search(r"\bsys\.|INFORMATION_SCHEMA", tsql, re.I):
        needs += _catalog_needs(tsql, database, tuple(str(p) for p in params))
    return tuple(dict.fromkeys(needs))


@cache
def _statement_needs(tsql: str, *, database: str) -> tuple[Need, ...]:
    """(database, object, verb) a batch's statements need, from its sqlfluff parse tree."""
    parsed = _linter().parse_string(tsql)
    if parsed.tree is None:
        return ()
    needs: list[Need] = [Need(database, "", "CONNECT")]
    ctes = {_name(seg.raw.split()[0]).lower() for seg in parsed.tree.recursive_crawl("common_table_expression")}
    for statement in parsed.tree.recursive_crawl("statement", recurse_into=False):
        kinds = {c.get_type() for c in statement.segments}
        refs = []
        for ref in statement.recursive_crawl("table_reference"):
            resolved = _resolve(ref.raw, database)
            if resolved and resolved[1].split(".")[-1].lower() not in ctes:
                refs.append(resolved)
        if kinds & _DDL:
            needs.append(
                Need(
                    database,
                    refs[0][1] if refs else "",
                    "CREATE TABLE" if "create_table_statement" in kinds else "ALTER",
                )
            )
            continue
        if "execute_script_statement" in kinds:
            for ref in statement.recursive_crawl("object_reference"):
                resolved = _resolve(ref.raw, database)
                if resolved:
                    needs.append(Need(resolved[0], resolved[1], "EXECUTE"))
                break
            continue
        verb = next((v for k, v in _DML.items() if k in kinds), None)
        for n, (db, obj) in enumerate(refs):
            if _is_catalog(obj):
                needs.append(Need(db, "", "CONNECT"))
                if obj.lower().startswith("sys.dm_"):
                    # Dynamic management views show server state: VIEW SERVER STATE
                    # (SQL Server 2019; https://learn.microsoft.com/sql/relational-databases/system-dynamic-management-views/system-dynamic-management-views).
                    needs.append(Need("master", SERVER, "VIEW SERVER STATE"))
                continue
            if verb and n == 0:
                needs.append(Need(db, obj, verb))
            needs.append(Need(db, obj, "SELECT")) if (not verb or n > 0 or verb in {"UPDATE", "DELETE"}) else None
    return tuple(dict.fromkeys(needs))
