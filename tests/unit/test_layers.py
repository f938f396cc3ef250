"""The module layering the architecture page promises, checked in fresh interpreters."""

from __future__ import annotations

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
    assert opening == ["migrate/__init__.py", "transactions.py"]
