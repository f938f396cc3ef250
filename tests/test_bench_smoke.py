"""The benchmark scripts run end to end (``bench/bench.py --quick`` on SQLite, and
``bench/partitioned.py`` on a small PostgreSQL database).

A smoke test only: it checks the script exits cleanly and prints its table, never a timing.
Under Python 3.11 axio-context-sqlite is not installed and its column is left out.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_backend, server_admin_url

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


def test_large_table_benchmark_runs(request: pytest.FixtureRequest) -> None:
    """``bench/partitioned.py`` end to end, at 200k messages instead of 10 million."""
    require_backend(request.config, "postgresql")
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "partitioned.py"),
            "--url",
            server_admin_url("postgresql").render_as_string(hide_password=False),
            "--messages",
            "200000",
            "--partitions",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "PostgreSQL, 4 hash partitions" in completed.stdout
    assert "| `get_messages(limit=50, reverse=True)` | " in completed.stdout
