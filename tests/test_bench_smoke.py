"""The benchmark script runs end to end (``bench/bench.py --quick`` on SQLite).

A smoke test only: it checks the script exits cleanly and prints its table, never a timing.
Under Python 3.11 axio-context-sqlite is not installed and its column is left out.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_prints_a_table(tmp_path: Path) -> None:
    output = tmp_path / "results.md"
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench.py"),
            "--quick",
            "--backend",
            "sqlite",
            "--output",
            str(output),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "### SQLite" in completed.stdout
    assert "| single append (msgs/s) | " in completed.stdout
    assert "raw aiosqlite" in completed.stdout
    assert output.read_text(encoding="utf-8").strip() == completed.stdout.strip()
