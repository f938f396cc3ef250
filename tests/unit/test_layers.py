"""The module layering the architecture page promises, checked in fresh interpreters."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import convostore


def _fresh(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )


def test_the_in_memory_twin_loads_no_sql() -> None:
    result = _fresh(
        "import sys, convostore.memory\n"
        "loaded = sorted(m for m in sys.modules if m.partition('.')[0] in "
        "('sqlalchemy', 'alembic', 'aiosqlite', 'asyncpg', 'asyncmy'))\n"
        "print(loaded)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# What loading an entry point must leave out, counted rather than timed (the import of the
# public API stays under 300 ms by what it does not load): SQLAlchemy and its drivers and
# greenlet load on the first Database() / connect() call, Alembic (with Mako and Pygments)
# on the first schema check, OpenTelemetry with the façades, cryptography with a keyring.
NEVER_AT_IMPORT = {
    "sqlalchemy",
    "greenlet",
    "aiosqlite",
    "asyncpg",
    "asyncmy",
    "alembic",
    "mako",
    "pygments",
    "opentelemetry",
    "cryptography",
}
IMPORT_BUDGETS = {
    # Modules a fresh interpreter loads for the statement, beyond those it had at start:
    # measured 38 and 199 (pydantic with its dependencies, for the models); the old eager
    # import of the façades loaded 484.
    "from convostore import Database": (60, NEVER_AT_IMPORT | {"pydantic", "zstandard"}),
    "from convostore import connect, ContextMessage": (250, NEVER_AT_IMPORT),
}


@pytest.mark.parametrize("statement", list(IMPORT_BUDGETS))
def test_importing_the_public_api_loads_little(statement: str) -> None:
    """The entry points load the façades when first called, and no table of every
    Unicode code point is built (that waits for the first non-ASCII text searched or
    stored)."""
    budget, banned = IMPORT_BUDGETS[statement]
    result = _fresh(
        "import sys\n"
        "before = set(sys.modules)\n"
        f"{statement}\n"
        "import json\n"
        "added = set(sys.modules) - before\n"
        "search = sys.modules.get('convostore.search')\n"
        "table = 0 if search is None else search._combining.cache_info().currsize\n"
        "print(json.dumps([len(added), sorted({m.partition('.')[0] for m in added}), table]))"
    )
    assert result.returncode == 0, result.stderr
    count, loaded, table = json.loads(result.stdout)
    assert sorted(set(loaded) & banned) == []
    assert count <= budget, f"{count} modules (budget {budget})"
    assert table == 0


def test_the_entry_points_load_the_facades_on_first_call(tmp_path: Path) -> None:
    result = _fresh(
        "import sys\n"
        "from convostore import Database\n"
        "assert 'convostore.database' not in sys.modules\n"
        f"db = Database({str(tmp_path / 'first.db')!r})\n"
        "from convostore.database import SQLAlchemyDatabase\n"
        "assert isinstance(db, SQLAlchemyDatabase)\n"
        "print('ok')"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_every_public_name_imports_from_the_package() -> None:
    result = _fresh(
        "import convostore\n"
        "missing = [n for n in convostore.__all__ if getattr(convostore, n, None) is None]\n"
        "print(missing)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert set(convostore.__all__) <= set(dir(convostore))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        convostore.no_such_name  # noqa: B018


def test_only_the_runner_and_the_migrations_open_connections() -> None:
    """Every other module goes through TransactionRunner (retries, typed errors)."""
    source = Path(convostore.__file__).parent
    pattern = re.compile(r"engine\.(begin|connect)\(")
    opening = sorted(
        str(path.relative_to(source))
        for path in source.rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8"))
    )
    # Besides the runner and the migrations: the replicas' wait for a standby to catch up,
    # which the runner itself calls while it routes a read (a poll on the standby, outside
    # any transaction of the call).
    assert opening == [
        "migrate/__init__.py",
        "sql/replicas.py",
        "sql/runner.py",
    ]


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The convostore modules ``path`` (module ``name``) imports, at any depth of the code,
    except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
    return {module for module in found if module in modules and module != name}


def test_no_import_cycle_in_the_package() -> None:
    graph = _package_graph()
    cycles = []
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            cycles.append([*trail[trail.index(name) :], name])
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert cycles == []


def test_driver_error_codes_are_read_in_one_module() -> None:
    """sql/retry.py classifies driver errors; convostore.errors knows no driver."""
    source = Path(convostore.__file__).parent
    pattern = re.compile(r"sqlstate|pgcode")
    reading = sorted(
        str(path.relative_to(source))
        for path in source.rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8"))
    )
    assert reading == ["sql/retry.py"]
    errors = (source / "errors.py").read_text(encoding="utf-8")
    assert "sqlalchemy" not in errors
    assert "asyncpg" not in errors


def test_the_facades_submit_appends_and_the_group_committer_calls_no_facade() -> None:
    """Group commit, the autocommit decision and the round-trip marks belong to the
    aggregates' appenders (sql/repositories): the façades only submit to them."""
    source = Path(convostore.__file__).parent
    paths = {
        name: source / f"{name.removeprefix('convostore.').replace('.', '/')}.py"
        for name in (
            "convostore.context",
            "convostore.database",
            "convostore.facade",
            "convostore.sql.group_commit",
        )
    }
    everything = {
        ".".join(["convostore", *p.relative_to(source).with_suffix("").parts])
        for p in source.rglob("*.py")
    }
    for facade in ("convostore.context", "convostore.database", "convostore.facade"):
        imported = _imports(paths[facade], facade, everything)
        assert "convostore.sql.group_commit" not in imported, facade
        assert "convostore.sql.counters" not in imported, facade
        text = paths[facade].read_text(encoding="utf-8")
        assert "last=" not in text, facade
        assert "autocommit" not in text, facade
    committer = _imports(
        paths["convostore.sql.group_commit"], "convostore.sql.group_commit", everything
    )
    assert not committer & {"convostore.context", "convostore.database", "convostore.facade"}


# --- What each folder may import -----------------------------------------------------------

PURE = [
    "convostore.interfaces",
    "convostore.models",
    "convostore.arguments",
    "convostore.rules",
    "convostore.errors",
    "convostore.codec",
    "convostore.encryption",
    "convostore.search",
    "convostore.deadlines",
    "convostore.telemetry",
    "convostore.pairs",
    "convostore.memory",
]
"""Modules that know no backend: they never load SQLAlchemy, let alone ``convostore.sql``
(docs/architecture.md, "The tree")."""

NOT_YET_PURE: dict[str, str] = {}
"""Pure modules known to load SQL still, each a strict xfail with its reason: when one
becomes pure, the xfail passes and fails the suite until it leaves this list."""


def _loaded_by(module: str) -> list[str]:
    """``sqlalchemy`` and the ``convostore.sql`` modules that importing ``module`` (alone, in
    a fresh interpreter) loads, directly or through anything it imports."""
    result = _fresh(
        f"import sys, {module}\n"
        "print(sorted(m for m in sys.modules if m == 'sqlalchemy' "
        "or m == 'convostore.sql' or m.startswith('convostore.sql.')))"
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = ast.literal_eval(result.stdout.strip())
    return loaded


@pytest.mark.parametrize(
    "module",
    [
        pytest.param(
            name,
            marks=[pytest.mark.xfail(strict=True, reason=NOT_YET_PURE[name])]
            if name in NOT_YET_PURE
            else [],
        )
        for name in PURE
    ],
)
def test_pure_modules_load_no_sql(module: str) -> None:
    assert _loaded_by(module) == []


def test_settings_parse_urls_without_convostore_sql() -> None:
    """URL resolution uses SQLAlchemy's URL parser, and nothing that runs SQL."""
    assert _loaded_by("convostore.settings") == ["sqlalchemy"]


def _package_graph() -> dict[str, set[str]]:
    source = Path(convostore.__file__).parent
    paths = {}
    for path in source.rglob("*.py"):
        parts = ["convostore", *path.relative_to(source).with_suffix("").parts]
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return {name: _imports(path, name, set(paths)) for name, path in paths.items()}


EDGES = ("convostore.transfer", "convostore.integrations", "convostore.migrate", "convostore.ui")
FACADES = ("convostore.facade", "convostore.context", "convostore.database", "convostore.cli")

SQL_IMPORTS_UPWARD: dict[tuple[str, str], str] = {
    ("convostore.sql.rotation", "convostore.transfer.reindex"): (
        "rotation drops the search feeds when clear text is turned off, with the back-fill's "
        "batched drop_feeds (kept in transfer.reindex, which the search branch reworks)"
    ),
}
"""Imports from ``convostore.sql`` up into the façades or the edges, each with its reason."""


def test_sql_imports_neither_the_facades_nor_the_edges() -> None:
    """``convostore.sql`` is the floor the façades and edges stand on: it calls nothing
    above it (no callback into a façade module, no dependency on a framework)."""
    upward = sorted(
        (name, target)
        for name, targets in _package_graph().items()
        if name.startswith("convostore.sql")
        for target in targets
        if target.startswith(EDGES) or target in FACADES
    )
    assert upward == sorted(SQL_IMPORTS_UPWARD)


# --- Where statements are built ------------------------------------------------------------

CONSTRUCTORS = frozenset({"select", "insert", "update", "delete", "text"})
"""SQLAlchemy's statement constructors (``text`` included: raw SQL is a statement too)."""

STATEMENTS_OUTSIDE_REPOSITORIES: dict[str, str] = {
    "sql/dml.py": "the dialect DML builders (upsert, insert-if-absent, multi-row VALUES) "
    "that the repositories call with their tables",
    "sql/counters.py": "counter bumps and inserts at the positions they reserve, one form "
    "per backend, called by the repositories' appenders",
    "sql/fulltext.py": "the full-text match and rank of each backend, which the search "
    "repository composes into its queries",
    "sql/partitioning.py": "DDL that attaches PostgreSQL partitions (an operator's tool, "
    "not a read or write of data)",
    "sql/replicas.py": "the WAL position poll that routes a read to a standby that has "
    "caught up, run by the runner itself",
    "sql/tables.py": "text() as a partial index's predicate, part of the schema",
    "sql/search_index.py": "SQLite's search index kept beside the tables (catch-up to a "
    "watermark, FTS5 and its map, the read-only match of pending rows): machinery of one "
    "backend's index, run by the writer thread and the search repository; its reads and "
    "writes of messages are candidates for sql/repositories/search.py",
    "migrate/__init__.py": "the advisory locks around Alembic's upgrade, on the migration "
    "connection before any repository may run",
}
"""Modules outside ``sql/repositories/`` that build statements, each with its reason."""


def _statement_lines(path: Path) -> list[int]:
    """Lines of ``path`` that call one of SQLAlchemy's statement constructors, resolved
    through the module's imports (``from sqlalchemy import select as s``, ``import
    sqlalchemy as sa`` then ``sa.select``, ``from sqlalchemy.dialects import postgresql``
    then ``postgresql.insert``), so a local function or method that happens to be called
    ``update`` or ``delete`` is not one."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions: set[str] = set()
    namespaces: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").partition(".")[0] == (
            "sqlalchemy"
        ):
            for alias in node.names:
                bound = alias.asname or alias.name
                (functions if alias.name in CONSTRUCTORS else namespaces).add(bound)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.partition(".")[0] == "sqlalchemy":
                    namespaces.add(alias.asname or alias.name.partition(".")[0])
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        called = node.func
        if (isinstance(called, ast.Name) and called.id in functions) or (
            isinstance(called, ast.Attribute)
            and called.attr in CONSTRUCTORS
            and isinstance(called.value, ast.Name)
            and called.value.id in namespaces
        ):
            lines.append(node.lineno)
    return sorted(lines)


def test_statements_are_built_only_in_repositories() -> None:
    source = Path(convostore.__file__).parent
    building = {
        str(path.relative_to(source)): lines
        for path in sorted(source.rglob("*.py"))
        if (lines := _statement_lines(path))
    }
    outside = {
        name: lines for name, lines in building.items() if not name.startswith("sql/repositories/")
    }
    assert sorted(outside) == sorted(STATEMENTS_OUTSIDE_REPOSITORIES), outside
    # The repositories do build statements: the scan sees what it is meant to see.
    assert {"sql/repositories/admin.py", "sql/repositories/adk.py"} <= set(building)


def test_the_statement_scan_resolves_names_through_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import sqlalchemy as sa\n"
        "from sqlalchemy import select as pick\n"
        "from sqlalchemy.dialects import postgresql\n"
        "def update(x): return x\n"
        "pick(1)\n"
        "sa.delete(t)\n"
        "postgresql.insert(t)\n"
        "update({})\n"
        "{}.update(a=1)\n"
        "repo.delete()\n",
        encoding="utf-8",
    )
    assert _statement_lines(sample) == [5, 6, 7]


def test_repositories_never_end_a_transaction() -> None:
    """Repositories run statements; committing, rolling back, closing (and beginning) belong
    to the runner or the caller's unit of work."""
    source = Path(convostore.__file__).parent / "sql" / "repositories"
    ending = sorted(
        f"{path.name}:{node.lineno} .{node.func.attr}()"
        for path in source.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in {"commit", "rollback", "close", "begin", "begin_nested"}
    )
    assert ending == []
