"""Crash safety on SQLite: a writer killed with SIGKILL loses no acknowledged write.

A writer process (``crash_writer.py``) appends in a loop and prints each write once its
call has returned. The test reads a random number of those acknowledgements, kills the
writer with SIGKILL wherever it happens to be (mid-statement, mid-commit, between calls),
reads whatever else it had printed, and then checks the file: ``PRAGMA integrity_check``
is ``ok``, every acknowledged write is there, positions are gap-free and batches whole, and
a new writer continues from where the killed one stopped. WAL with ``synchronous=NORMAL``
promises exactly this for process crashes (an OS crash or power loss may lose the last
transactions; that needs ``synchronous=FULL``, see docs/guarantees.md).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from convostore import codec
from tests.conftest import require_backend

WRITER = Path(__file__).with_name("crash_writer.py")
ROOT = Path(__file__).resolve().parents[2]
KILLS = 10


def kill_seed() -> int:
    """The seed that picks after how many acknowledged writes each kill lands.

    Fixed, so every run (CI's and a newcomer's) kills at the same points; set
    ``CONVOSTORE_CRASH_SEED`` to another number, or to ``random`` for a fresh one each run
    (failures name the seed to replay).
    """
    value = os.environ.get("CONVOSTORE_CRASH_SEED", "20")
    return random.randrange(2**32) if value == "random" else int(value)


@dataclass
class Acknowledged:
    """What killed writers reported as done, summed over every run so far."""

    positions: int = 0  # every position below this was acknowledged
    thread_idx: int = -1
    balance: int = 0
    lines: list[str] = field(default_factory=list)

    def record(self, line: str) -> None:
        kind, *values = line.split()
        if kind == "a":
            first, size = map(int, values)
            self.positions = max(self.positions, first + size)
        elif kind == "t":
            self.thread_idx = max(self.thread_idx, int(values[0]))
        elif kind == "c":
            self.balance = max(self.balance, int(values[0]))
        else:
            raise AssertionError(f"unexpected writer output {line!r}")


def rest_of_output(writer: subprocess.Popen[str]) -> str:
    """What a killed writer printed that the test has not read yet.

    Read through the same file object as the lines before it: ``communicate()`` would read
    the pipe itself and miss the lines ``readline()`` had already buffered, so whether
    acknowledged writes went uncounted depended on where the kill landed.
    """
    assert writer.stdout is not None
    assert writer.stderr is not None
    rest = writer.stdout.read()
    writer.stderr.read()
    writer.wait()
    writer.stdout.close()
    writer.stderr.close()
    return rest


def start_writer(path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def check_file(path: Path, acked: Acknowledged) -> tuple[int, int, int]:
    """Check the file after a crash; return (messages, thread messages, balance)."""
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        rows = conn.execute(
            "SELECT position, content FROM context_messages WHERE project = 'crash'"
            " AND session_id = 's' ORDER BY position"
        ).fetchall()
        counter = conn.execute(
            "SELECT next_position FROM context_tokens WHERE project = 'crash' AND session_id = 's'"
        ).fetchall()
        idxs = [
            idx
            for (idx,) in conn.execute(
                "SELECT idx FROM messages WHERE agent_name = 'crash-agent' AND thread_id = 't'"
                " ORDER BY idx"
            )
        ]
        next_idx = conn.execute(
            "SELECT next_idx FROM threads WHERE agent_name = 'crash-agent' AND thread_id = 't'"
        ).fetchall()
        balance_rows = conn.execute(
            "SELECT available_balance FROM users WHERE agent_name = 'crash-agent' AND user_id = 'u'"
        ).fetchall()

    # Context messages: gap-free from 0, each where its writer put it, batches whole.
    assert [position for position, _ in rows] == list(range(len(rows)))
    contents = [codec.decode(bytes(blob))[0] for _, blob in rows]
    assert [c["seq"] for c in contents] == list(range(len(rows)))
    if contents:
        last = contents[-1]
        assert last["batch"] + last["size"] == len(rows), "a batch was cut in half"
    if rows:
        assert counter == [(len(rows),)], "counter and rows disagree"
    assert len(rows) >= acked.positions, "an acknowledged append is missing"

    # Thread messages: gap-free idx, counter in step, every acknowledged one present.
    assert idxs == list(range(len(idxs)))
    if idxs:
        assert next_idx == [(len(idxs),)], "counter and rows disagree"
    assert len(idxs) > acked.thread_idx, "an acknowledged message is missing"

    # Balance: every acknowledged credit counted, at most one more (in flight at the kill).
    balance = balance_rows[0][0] if balance_rows else 0
    assert acked.balance <= balance <= acked.balance + 1
    return len(rows), len(idxs), balance


@pytest.mark.sqlite
@pytest.mark.slow
def test_sigkilled_writers_lose_no_acknowledged_write(
    sqlite_file: Path, request: pytest.FixtureRequest
) -> None:
    require_backend(request.config, "sqlite")
    seed = kill_seed()
    rng = random.Random(seed)
    acked = Acknowledged()
    for attempt in range(KILLS):
        writer = start_writer(sqlite_file)
        assert writer.stdout is not None
        try:
            first = writer.stdout.readline().strip()
            assert first == "ready", (first, writer.stderr.read() if writer.stderr else "")
            wanted = rng.randint(5, 200)
            for _ in range(wanted):
                line = writer.stdout.readline().strip()
                if not line:
                    writer.wait(timeout=60)
                    stderr = writer.stderr.read() if writer.stderr else ""
                    raise AssertionError(f"writer died early (seed {seed}): {stderr}")
                acked.record(line)
        finally:
            writer.send_signal(signal.SIGKILL)
            # Lines already in the pipe were printed after their call returned: acknowledged.
            rest = rest_of_output(writer)
        for line in rest.splitlines():
            acked.record(line)
        assert writer.returncode == -signal.SIGKILL
        try:
            check_file(sqlite_file, acked)
        except AssertionError as exc:
            raise AssertionError(f"after kill {attempt + 1} (seed {seed}): {exc}") from exc

    # A new writer continues where the last one stopped, and finishes cleanly.
    before = check_file(sqlite_file, acked)
    writer = start_writer(sqlite_file, "3")
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    for line in out.splitlines()[1:]:
        acked.record(line)
    after = check_file(sqlite_file, acked)
    assert after[0] == before[0] + 1 + 2 + 3
    assert after[1:] == (before[1] + 3, before[2] + 3)


GROUP_WRITER = Path(__file__).with_name("group_writer.py")


def check_group_file(path: Path, acked: dict[str, int]) -> None:
    """Every session gap-free and in step with its counter; every acknowledged append there."""
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        counters = dict(
            conn.execute(
                "SELECT session_id, next_position FROM context_tokens WHERE project = 'group-crash'"
            ).fetchall()
        )
        for session_id, count in counters.items():
            rows = conn.execute(
                "SELECT position, content FROM context_messages WHERE project = 'group-crash'"
                " AND session_id = ? ORDER BY position",
                (session_id,),
            ).fetchall()
            assert [p for p, _ in rows] == list(range(count)), session_id
            assert [codec.decode(bytes(blob))[0]["seq"] for _, blob in rows] == list(range(count))
    for session_id, position in acked.items():
        assert counters.get(session_id, 0) > position, (session_id, position, "lost")


@pytest.mark.sqlite
@pytest.mark.slow
def test_sigkill_during_group_commits_loses_no_acknowledged_append(
    sqlite_file: Path, request: pytest.FixtureRequest
) -> None:
    require_backend(request.config, "sqlite")
    seed = kill_seed()
    rng = random.Random(seed)
    acked: dict[str, int] = {}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    for attempt in range(5):
        writer = subprocess.Popen(
            [sys.executable, str(GROUP_WRITER), str(sqlite_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert writer.stdout is not None
        lines: list[str] = []
        try:
            first = writer.stdout.readline().strip()
            assert first == "ready", (first, writer.stderr.read() if writer.stderr else "")
            for _ in range(rng.randint(50, 400)):
                line = writer.stdout.readline().strip()
                if not line:
                    writer.wait(timeout=60)
                    stderr = writer.stderr.read() if writer.stderr else ""
                    raise AssertionError(f"writer died early (seed {seed}): {stderr}")
                lines.append(line)
        finally:
            writer.send_signal(signal.SIGKILL)
            rest = rest_of_output(writer)
        lines.extend(rest.splitlines())
        assert writer.returncode == -signal.SIGKILL
        for line in lines:
            _, session_id, position = line.split()
            acked[session_id] = max(acked.get(session_id, -1), int(position))
        try:
            check_group_file(sqlite_file, acked)
        except AssertionError as exc:
            raise AssertionError(f"after kill {attempt + 1} (seed {seed}): {exc}") from exc
    assert len(acked) == 16
