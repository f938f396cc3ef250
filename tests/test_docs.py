"""Every ``python`` code block in README.md and docs/ runs, so the documentation cannot rot.

Blocks of one page run in order in one namespace (a later block may use an earlier one's
names), with top-level ``await`` allowed, in a temporary working directory and without the
database environment variables, so the default ``./convostore.db`` lands there. A block
whose info string says ``python notest`` is shown but not run (used for snippets that need
a server or a framework this interpreter lacks); pages that need Python 3.12 packages are
run by their own integration tests.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Pages whose examples need optional frameworks run in tests/frameworks instead.
OWN_TESTS = {"integrations.md"}
BLOCK = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```", re.DOTALL | re.MULTILINE)


def pages() -> list[Path]:
    docs = sorted(p for p in (ROOT / "docs").rglob("*.md") if p.name not in OWN_TESTS)
    return [page for page in (ROOT / "README.md", *docs) if python_blocks(page)]


def python_blocks(page: Path) -> list[str]:
    blocks = []
    for match in BLOCK.finditer(page.read_text(encoding="utf-8")):
        info = match.group("info").strip().split()
        if info[:1] == ["python"] and "notest" not in info:
            blocks.append(match.group("body"))
    return blocks


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
async def test_code_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(page)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONVOSTORE_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem}"}
    for number, source in enumerate(blocks, 1):
        code = compile(
            source,
            f"{page.name}#block{number}",
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        )
        result = eval(code, namespace)
        if result is not None:
            await result
