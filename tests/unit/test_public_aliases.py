"""The public import paths kept when their modules moved under ``convostore.sql``."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import LargeBinary

import convostore.sql.types

VERSIONS = Path(__file__).parents[2] / "migrations" / "versions"

ALIASES = ["types", "engine", "replicas", "partitioning", "rotation"]

# The imports a revision written before the move carries (0001 and 0005 then).
OLD_REVISION = """
import sqlalchemy as sa
from alembic import op

from convostore import types
from convostore.types import CompressedJSON, UTCDateTime, key_string, long_text
from convostore.types import search_text_mysql
import convostore.types

COLUMNS = [
    sa.Column("id", key_string(64), primary_key=True),
    sa.Column("payload", CompressedJSON(), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("text", long_text()),
    sa.Column("rendered", convostore.types.CompressedJSON()),
]
"""


@pytest.mark.parametrize("name", ALIASES)
@pytest.mark.parametrize("alias_first", [True, False])
def test_each_alias_is_the_moved_module_itself(name: str, alias_first: bool) -> None:
    """Checked in a fresh interpreter, whichever of the two paths is imported first."""
    first, second = f"convostore.{name}", f"convostore.sql.{name}"
    if not alias_first:
        first, second = second, first
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, {first}, {second}\n"
            f"import convostore\n"
            f"from convostore import {name} as by_from\n"
            f"alias, target = {first if alias_first else second}, "
            f"{second if alias_first else first}\n"
            f"print(alias is target, by_from is target, convostore.{name} is target, "
            f"sys.modules['convostore.{name}'] is target)",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"] * 4


def test_monkeypatching_through_the_alias_reaches_the_moved_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = object()
    monkeypatch.setattr("convostore.engine.CONNECT_TIMEOUT_S", marker)
    assert importlib.import_module("convostore.sql.engine").CONNECT_TIMEOUT_S is marker


def test_a_revision_written_before_the_move_still_imports() -> None:
    namespace: dict[str, object] = {}
    exec(compile(OLD_REVISION, "old_revision.py", "exec"), namespace)
    assert namespace["CompressedJSON"] is convostore.sql.types.CompressedJSON
    assert namespace["types"] is convostore.sql.types
    columns = namespace["COLUMNS"]
    assert isinstance(columns, list)
    payload = columns[1].type
    assert isinstance(payload, convostore.sql.types.CompressedJSON)
    assert isinstance(payload.impl_instance, LargeBinary)


@pytest.mark.parametrize("path", sorted(VERSIONS.glob("*.py")), ids=lambda path: path.stem)
def test_the_shipped_revisions_import_through_the_old_path_too(path: Path) -> None:
    """Each revision, its imports written as before the move, loads (``upgrade`` not run)."""
    source = path.read_text(encoding="utf-8").replace("convostore.sql.types", "convostore.types")
    namespace: dict[str, object] = {"__name__": f"old_{path.stem}"}
    exec(compile(source, str(path), "exec"), namespace)
    assert callable(namespace["upgrade"])
