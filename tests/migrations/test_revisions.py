"""The revision files themselves: one line of history, self-contained, each one reversible.

These checks read the files (Alembic's script directory, and ``ast`` for the source) without
touching a database.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from convostore import migrate
from tests.migrations.conftest import REPO_ROOT

VERSIONS = REPO_ROOT / "migrations" / "versions"
REVISION_FILES = sorted(VERSIONS.glob("*.py"))

# A revision must not import the models: they describe the latest schema, and an old revision
# that followed them would silently change meaning. Type hints from the standard library are fine.
ALLOWED_IMPORTS = ("sqlalchemy", "alembic.op", "convostore.sql.types")
ALLOWED_STDLIB = ("__future__", "collections.abc", "typing")


def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(migrate.alembic_config())


def imported_names(tree: ast.Module) -> list[str]:
    """Every dotted name a module imports, wherever the import statement is."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports cannot work in a revision file"
            assert node.module is not None
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def allowed(name: str) -> bool:
    return any(
        name == prefix or name.startswith(prefix + ".")
        for prefix in (*ALLOWED_IMPORTS, *ALLOWED_STDLIB)
    )


def module_function(tree: ast.Module, name: str) -> ast.FunctionDef:
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    assert len(functions) == 1, f"expected one top-level {name}()"
    return functions[0]


def does_something(function: ast.FunctionDef) -> bool:
    """Whether a function has a statement besides its docstring, ``pass`` and ``...``."""
    for statement in function.body:
        if isinstance(statement, ast.Pass):
            continue
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue  # the docstring, or a bare ``...``
        return True
    return False


def test_the_checkout_has_revision_files() -> None:
    assert REVISION_FILES, f"no revision files in {VERSIONS}"
    assert migrate.migrations_dir() == VERSIONS.parent


def test_exactly_one_head_and_one_base() -> None:
    directory = script()
    assert len(directory.get_heads()) == 1
    assert len(directory.get_bases()) == 1
    assert migrate.head() == directory.get_current_head()


def test_history_is_one_line_through_every_file() -> None:
    revisions = list(script().walk_revisions())  # head first
    assert len(revisions) == len(REVISION_FILES)
    for newer, older in itertools.pairwise(revisions):
        assert newer.down_revision == older.revision
        assert not newer.is_merge_point
    assert revisions[-1].down_revision is None


@pytest.mark.parametrize("path", REVISION_FILES, ids=lambda p: Path(p).name)
def test_file_is_named_after_its_revision(path: Path) -> None:
    revision = script().get_revision(path.name.split("_", 1)[0])
    assert revision is not None
    assert Path(revision.path).name == path.name


@pytest.mark.parametrize("path", REVISION_FILES, ids=lambda p: Path(p).name)
def test_revision_imports_only_sqlalchemy_alembic_op_and_convostore_types(path: Path) -> None:
    names = imported_names(ast.parse(path.read_text(encoding="utf-8")))
    forbidden = [name for name in names if not allowed(name)]
    assert not forbidden, f"{path.name} imports {forbidden}"


@pytest.mark.parametrize("path", REVISION_FILES, ids=lambda p: Path(p).name)
def test_revision_has_a_real_upgrade_and_downgrade(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert does_something(module_function(tree, "upgrade"))
    assert does_something(module_function(tree, "downgrade")), f"{path.name}: empty downgrade()"


def test_the_checks_catch_what_they_are_for() -> None:
    bad = ast.parse(
        "from convostore.sql.tables import Base\n"
        "import convostore\n"
        "def downgrade():\n"
        "    '''Not reversible.'''\n"
        "    pass\n"
    )
    assert [allowed(name) for name in imported_names(bad)] == [False, False]
    assert not does_something(module_function(bad, "downgrade"))
    good = ast.parse(
        "import sqlalchemy as sa\nfrom alembic import op\nfrom sqlalchemy import types"
    )
    assert all(allowed(name) for name in imported_names(good))
