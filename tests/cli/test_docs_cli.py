"""Every ``console`` example in docs/cli.md runs, in order, in one empty directory.

Blocks marked ``notest`` (servers, files the reader provides) are skipped; a ``jsonl``
block with ``file=NAME`` is written to ``NAME`` first, so the documented example file is
proven importable.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.cli.conftest import run_cli

PAGE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
BLOCK = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```", re.DOTALL | re.MULTILINE)


def test_console_examples_run(tmp_path: Path) -> None:
    ran = 0
    for match in BLOCK.finditer(PAGE.read_text(encoding="utf-8")):
        info = match.group("info").split()
        if not info or "notest" in info:
            continue
        if info[0] == "jsonl":
            names = [word[len("file=") :] for word in info if word.startswith("file=")]
            for name in names:
                (tmp_path / name).write_text(match.group("body"), encoding="utf-8")
            continue
        if info[0] != "console":
            continue
        for line in match.group("body").splitlines():
            if not line.startswith("$ "):
                continue
            words = shlex.split(line[2:])
            target = None
            if ">" in words:
                words, target = words[: words.index(">")], words[words.index(">") + 1]
            assert words[0] == "convostore", line
            result = run_cli(*words[1:])
            assert result.exit_code == 0, (line, result.stdout, result.stderr)
            if target is not None:
                (tmp_path / target).write_bytes(result.stdout_bytes)
            ran += 1
    assert ran >= 20
    assert (tmp_path / "backup.jsonl").read_bytes().splitlines()[1:] == (
        tmp_path / "backup-again.jsonl"
    ).read_bytes().splitlines()[1:]
