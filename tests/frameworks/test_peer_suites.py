"""The peers' own README examples and test suites, run against convostore's drop-ins.

``make peers`` downloads the pinned sdists of axio-context-sqlite, agentstr-sdk and
openai-agents into ``.peers/`` (``CONVOSTORE_PEERS_DIR``); nothing of theirs is committed
here. (google-adk's sdist ships no tests: ADK's behaviour is checked beside ADK's own
service in tests/frameworks/test_adk.py.)

* Every python example of axio-context-sqlite's README runs verbatim but for its import line.
* Their test suites run in a pytest of their own with :mod:`tests.frameworks.peer_swap`
  swapping in our classes, on SQLite and on each selected server. Every test must pass,
  except those listed in docs/integrations.md ("The peers' own test suites") — and each of
  those must still fail, so the list stays true.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import in_ci, require_backend, server_admin_url

pytest.importorskip("axio", reason="axio is not installed (it needs Python 3.12+)")

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "integrations.md"

AXIO_IMPORT = "from axio_context_sqlite import connect, SQLiteContextStore"
OUR_AXIO_IMPORT = (
    "from convostore.integrations.axio import connect, AxioContextStore as SQLiteContextStore"
)

# The OpenAI Agents SDK's tests of its SQLAlchemySession that concern any session over a
# SQL database: concurrent first use of a new file, and one file (or one session) used
# from two threads each with its own event loop. The rest of that file tests the SDK's
# own tables and table-creation lock, which convostore does not have.
_OPENAI_SESSION_TESTS = "tests/extensions/memory/test_sqlalchemy_session.py::"
OPENAI_CROSS_LOOP = [
    f"{_OPENAI_SESSION_TESTS}test_add_items_concurrent_first_access_{name}"
    for name in (
        "across_sessions_with_shared_engine",
        "across_from_url_sessions",
        "across_from_url_sessions_cross_loop",
        "with_shared_session_cross_loop",
    )
]

# peer -> (sdist folder prefix, the test paths inside it, how many tests at least)
SUITES = {
    "axio-context-sqlite": ("axio_context_sqlite-", ["tests"], 10),
    "agentstr-sdk": ("agentstr_sdk-", ["tests/test_database.py"], 10),
    "openai-agents": ("openai_agents-", OPENAI_CROSS_LOOP, len(OPENAI_CROSS_LOOP)),
}
BACKENDS = [
    pytest.param("sqlite", marks=pytest.mark.sqlite),
    pytest.param("postgresql", marks=pytest.mark.postgresql),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]


def peer_dir(prefix: str) -> Path:
    """The unpacked sdist whose folder starts with ``prefix``; skips (fails in CI) if absent."""
    base = os.environ.get("CONVOSTORE_PEERS_DIR")
    found = sorted(Path(base).glob(f"{prefix}*/")) if base else []
    if not found:
        reason = "the peers' sdists are not downloaded (run `make peers`, or `make pytest312`)"
        if in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return found[-1]


def documented_exceptions() -> dict[tuple[str, str], tuple[set[str], str]]:
    """(peer, test id) -> (backends, reason), from the table in docs/integrations.md."""
    text = DOC.read_text()
    section = text.split("<!-- peer-exceptions -->")[1].split("<!-- /peer-exceptions -->")[0]
    rows: dict[tuple[str, str], tuple[set[str], str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("peer", "") or set(cells[0]) <= {"-"}:
            continue
        peer, test, backends, reason = (c.strip("`") for c in cells)
        everywhere = {"sqlite", "postgresql", "mariadb"}
        names = everywhere if backends == "all" else set(backends.split(", "))
        rows[(peer, test)] = (names, reason)
    return rows


def readme_examples(readme: Path) -> dict[str, str]:
    """The README's python examples, by markdown-pytest name, hidden set-up blocks included."""
    blocks: dict[str, str] = {}
    pattern = re.compile(
        r"<!--\s*name:\s*(?P<a>\w+)\s*-->\s*```python\n(?P<code>.*?)```"
        r"|<!--\s*name:\s*(?P<b>\w+)\s*```python\n(?P<hidden>.*?)```\s*-->",
        re.S,
    )
    for match in pattern.finditer(readme.read_text()):
        name = match.group("a") or match.group("b")
        code = match.group("code") if match.group("a") else match.group("hidden")
        blocks[name] = blocks.get(name, "") + code
    return blocks


def test_readme_examples_run_with_only_the_import_changed(tmp_path: Path) -> None:
    examples = readme_examples(peer_dir("axio_context_sqlite-") / "README.md")
    assert len(examples) >= 4, examples.keys()
    for name, code in examples.items():
        if AXIO_IMPORT not in code:
            continue  # a block that imports nothing from the package (e.g. only axio)
        ours = code.replace(AXIO_IMPORT, OUR_AXIO_IMPORT)
        # Run as markdown-pytest would: a fresh process, nothing but the example.
        result = subprocess.run(
            [sys.executable, "-c", ours], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{name}:\n{result.stderr}"


def run_suite(peer: str, backend: str, tmp_path: Path) -> dict[str, str]:
    """Run ``peer``'s own tests against our drop-ins on ``backend``: test id -> outcome."""
    prefix, paths, _ = SUITES[peer]
    root = peer_dir(prefix)
    report = tmp_path / f"{peer}-{backend}.xml"
    # The plugin's folder, not our repository: the peer's own ``tests`` package (the SDK's
    # tests import from it) must not be shadowed by ours.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests" / "frameworks")}
    env.pop("CONVOSTORE_PEER_URL", None)
    if backend != "sqlite":
        env["CONVOSTORE_PEER_URL"] = server_admin_url(backend).render_as_string(hide_password=False)
    own_config = peer in ("axio-context-sqlite", "openai-agents")
    config = ["-c", str(root / "pyproject.toml")] if own_config else []
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "peer_swap",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(root),
        *config,
        "-o",
        "asyncio_mode=auto",
        "-W",
        "ignore::DeprecationWarning",
        f"--junitxml={report}",
        "-q",
        *(str(root / p) for p in paths),
    ]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert report.exists(), result.stdout + result.stderr
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcome = next((k for k in ("failure", "error", "skipped") if k in kinds), "passed")
        outcomes[test_id] = outcome
    return outcomes


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("peer", sorted(SUITES))
def test_peer_suite_passes_but_for_the_documented_exceptions(
    peer: str, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    require_backend(request.config, backend)
    outcomes = run_suite(peer, backend, tmp_path)
    assert len(outcomes) >= SUITES[peer][2], outcomes
    expected = {
        test
        for (name, test), (backends, _reason) in documented_exceptions().items()
        if name == peer and backend in backends
    }
    not_passed = {test for test, outcome in outcomes.items() if outcome != "passed"}
    assert not_passed == expected, {t: outcomes.get(t, "missing") for t in not_passed ^ expected}
