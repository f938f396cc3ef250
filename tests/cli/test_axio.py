"""``convostore import-axio``: a database written by the real axio-context-sqlite package.

axio needs Python 3.12, so the source database is built by a generator running under the
interpreter named by ``CONVOSTORE_TEST_PY312`` (default: ``python3.12`` on PATH, then
pyenv's 3.12.1) with ``axio-context-sqlite`` installed; without one the test is skipped.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from convostore import SQLAlchemyContextStore, connect
from tests.cli.conftest import json_out

GENERATOR = r"""
import asyncio, json, sys
from axio.blocks import TextBlock, ToolUseBlock
from axio.messages import Message
from axio_context_sqlite import SQLiteContextStore, connect

async def main(path):
    conn = await connect(path)
    one = SQLiteContextStore(conn, "sess-1", project="/proj/a")
    await one.append(Message(role="system", content=[TextBlock(text="be brief")]))
    await one.append(Message(role="user", content=[TextBlock(text="Bonjour ✓ " * 20)]))
    await one.append(Message(role="assistant", content=[
        TextBlock(text="a long answer that gets gzip-compressed " * 40),
        ToolUseBlock(id="call-1", name="search", input={"q": "x", "n": 3}),
    ]))
    await one.add_context_tokens(300, 40)
    forked = await one.fork()
    await forked.append(Message(role="user", content=[TextBlock(text="in the fork")]))
    other = SQLiteContextStore(conn, "sess-2", project="/proj/b")
    await other.append(Message(role="assistant", content=[TextBlock(text="no user yet")]))
    tokens_only = SQLiteContextStore(conn, "sess-3", project="/proj/b")
    await tokens_only.set_context_tokens(7, 8)
    expected = {}
    for store, project in ((one, "/proj/a"), (forked, "/proj/a"), (other, "/proj/b"),
                           (tokens_only, "/proj/b")):
        history = [m.to_dict() for m in await store.get_history()]
        expected[f"{project}|{store.session_id}"] = {
            "history": history, "tokens": list(await store.get_context_tokens())}
    for project in ("/proj/a", "/proj/b"):
        for info in await SQLiteContextStore(conn, "any", project=project).list_sessions():
            expected[f"{project}|{info.session_id}"]["preview"] = info.preview
    await conn.close()
    json.dump(expected, sys.stdout)

asyncio.run(main(sys.argv[1]))
"""


@functools.cache
def python312() -> str | None:
    """An interpreter that can import axio_context_sqlite, or None."""
    named = os.environ.get("CONVOSTORE_TEST_PY312")
    candidates = (
        [named]
        if named
        else [
            shutil.which("python3.12"),
            "/root/.pyenv/versions/3.12.1/bin/python3.12",
        ]
    )
    for candidate in candidates:
        if not candidate or (not Path(candidate).exists() and not shutil.which(candidate)):
            continue
        probe = subprocess.run(
            [candidate, "-c", "import axio_context_sqlite"],
            capture_output=True,
            check=False,
            timeout=60,
        )
        if probe.returncode == 0:
            return candidate
    return None


def build_axio(path: Path) -> dict[str, Any]:
    interpreter = python312()
    if interpreter is None:
        pytest.skip(
            "no Python 3.12 with axio-context-sqlite: set CONVOSTORE_TEST_PY312 to one "
            "(pip install axio-context-sqlite)"
        )
    done = subprocess.run(
        [interpreter, "-c", GENERATOR, str(path)],
        capture_output=True,
        check=False,
        timeout=120,
        cwd=path.parent,
    )
    assert done.returncode == 0, done.stderr.decode()
    expected: dict[str, Any] = orjson.loads(done.stdout)
    return expected


def test_import_axio(tmp_path: Path) -> None:
    source = tmp_path / "axio.db"
    expected = build_axio(source)
    target = str(tmp_path / "convostore.db")

    report = json_out("import-axio", str(source), "--url", target)
    assert report["verified"] is True
    assert report["counts"]["session"] == {"source": 4, "inserted": 4, "skipped": 0}
    assert report["counts"]["context_message"] == {"source": 8, "inserted": 8, "skipped": 0}
    again = json_out("import-axio", str(source), "--url", target)
    assert again["counts"]["context_message"]["inserted"] == 0
    assert again["counts"]["session"]["inserted"] == 0

    async def check() -> None:
        engine = await connect(target)
        try:
            for key, want in expected.items():
                project, session_id = key.split("|")
                store = SQLAlchemyContextStore(engine, project=project, session_id=session_id)
                history = [m.model_dump() for m in await store.get_history()]
                assert history == want["history"], key
                assert list(await store.get_context_tokens()) == want["tokens"], key
                listed = {s.session_id: s for s in await store.list_sessions()}
                if "preview" in want:
                    assert listed[session_id].preview == want["preview"], key
                    assert listed[session_id].message_count == len(want["history"])
                else:
                    assert session_id not in listed  # tokens only: no messages to list
        finally:
            await engine.dispose()

    asyncio.run(check())


def test_not_an_axio_database(tmp_path: Path) -> None:
    from tests.cli.conftest import run_cli

    text_file = tmp_path / "notes.db"
    text_file.write_text("not sqlite at all")
    result = run_cli("import-axio", str(text_file), "--url", str(tmp_path / "t.db"))
    assert result.exit_code == 1
    assert "not an SQLite database" in result.stderr
    missing = run_cli("import-axio", str(tmp_path / "none.db"), "--url", str(tmp_path / "t2.db"))
    assert missing.exit_code == 1
    assert not (tmp_path / "t2.db").exists()
