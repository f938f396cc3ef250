"""The documentation site builds with ``mkdocs build --strict``.

Strict mode turns every warning into a failure: a link to a missing page or anchor, a page
left out of the nav, a cross-reference in a docstring that resolves nowhere, a malformed
Google-style docstring section. The build needs the ``docs`` extra; without it the test is
skipped locally, never in CI.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import convostore

ROOT = Path(__file__).resolve().parents[1]
DOCS_EXTRA = ("mkdocs", "material", "mkdocstrings_handlers.python", "griffe_inherited_docstrings")


def missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:  # the parent package of a dotted name is missing
        return True


MISSING = [module for module in DOCS_EXTRA if missing(module)]


@pytest.mark.skipif(
    bool(MISSING) and os.environ.get("CI") != "true",
    reason=f"the docs extra is not installed ({', '.join(MISSING)}): pip install -e '.[docs]'",
)
def test_site_builds_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "reference" / "database" / "index.html").is_file()


def test_reference_index_lists_every_public_name() -> None:
    """Each name of ``convostore.__all__`` links to its documentation from the index page."""
    page = (ROOT / "docs" / "reference" / "index.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\[`(\w+)`\]\[convostore\.", page))
    assert sorted(set(convostore.__all__) - linked) == []
