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
    source = Path(convostore.__file__).parent
    paths = {}
    for path in source.rglob("*.py"):
        parts = ["convostore", *path.relative_to(source).with_suffix("").parts]
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {name: _imports(path, name, set(paths)) for name, path in paths.items()}
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
