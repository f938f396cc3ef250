"""``bench/ui.py --quick`` runs end to end (a smoke test: it never looks at a time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.sqlite
def test_quick_ui_benchmark_prints_a_table(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ui.py"), "--quick"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "| transcript, last page |" in completed.stdout
