"""Every ``python`` block of docs/integrations.md runs, with the real frameworks installed.

As in ``tests/test_docs.py``: the page's blocks run in order in one namespace, with
top-level ``await``, in a temporary working directory without the database environment
variables.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("axio", reason="axio is not installed (it needs Python 3.12+)")
pytest.importorskip("agents", reason="openai-agents is not installed")
pytest.importorskip("langchain_core", reason="langchain-core is not installed")
pytest.importorskip("langgraph", reason="langgraph is not installed")
pytest.importorskip("google.adk", reason="google-adk is not installed")
pytest.importorskip("pydantic_ai", reason="pydantic-ai-slim is not installed")

PAGE = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"
BLOCK = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(page: Path) -> list[str]:
    return [
        match.group("body")
        for match in BLOCK.finditer(page.read_text(encoding="utf-8"))
        if match.group("info").split()[:1] == ["python"] and "notest" not in match.group("info")
    ]


def test_the_page_has_an_example_per_framework() -> None:
    text = "\n".join(python_blocks(PAGE))
    for module in (
        "axio",
        "agentstr",
        "openai_agents",
        "langchain",
        "langgraph",
        "adk",
        "pydantic_ai",
    ):
        assert f"convostore.integrations.{module} import" in text


@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")
async def test_the_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONVOSTORE_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    namespace: dict[str, Any] = {"__name__": "docs_integrations"}
    for number, source in enumerate(python_blocks(PAGE), 1):
        # dont_inherit: the blocks run as a reader's module would, without this module's
        # `from __future__ import annotations` (which would leave LangGraph's TypedDict
        # state annotations as strings naming this namespace's imports).
        code = compile(
            source,
            f"integrations.md#block{number}",
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            dont_inherit=True,
        )
        result = eval(code, namespace)
        if result is not None:
            await result
    assert (tmp_path / "chat.db").exists()
    assert (tmp_path / "conversations.db").exists()
    for name in ("langchain.db", "langgraph.db", "sessions.db", "pydantic-ai.db"):
        assert (tmp_path / name).exists()
