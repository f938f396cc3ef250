"""Key rotation killed with SIGKILL, on every backend: nothing lost, and a re-run finishes.

``convostore rotate-keys`` runs in a child process with one row per transaction. The test
watches the database (not a clock): once the child has moved some more rows onto the new
key it is killed with SIGKILL, wherever it is (mid-transaction, mid-commit, between
batches). After every kill each row still reads back exactly as written with the old and
new keys, and no committed batch is undone; a last run completes the rotation, after
which the old key is no longer needed.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import URL, text

from convostore import ContextMessage, SQLAlchemyContextStore
from convostore.encryption import KEY_ENV, KEYS_ENV
from convostore.sql.engine import create_engine, sqlite_path
from convostore.sql.rotation import rotate
from tests.backends.encrypted import (
    K1,
    K2,
    PROJECT,
    context_keys,
    payload_keys,
    read_all,
    ring,
    write,
)

ROOT = Path(__file__).resolve().parents[2]
SESSIONS = ["s-plain", "s-old"]
ROWS_PER_SESSION = 600
KILLS = 3
# How many more rows the child must have moved before each kill.
STEP = 25

pytestmark = pytest.mark.slow


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def start_rotation(url: URL) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        KEYS_ENV: f"k1:{_b64(K1)},k2:{_b64(K2)}",
        KEY_ENV: "k2",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "convostore.cli",
            "rotate-keys",
            "--url",
            url.render_as_string(hide_password=False),
            "--batch-size",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


async def populate(url: URL) -> None:
    plain = create_engine(url)
    old = create_engine(url, encryption=ring("k1", current="k1"))
    try:
        for engine, session in ((plain, "s-plain"), (old, "s-old")):
            await write(engine, session, 0, 6)
            store = SQLAlchemyContextStore(engine, project=PROJECT, session_id=session)
            for chunk in range(0, ROWS_PER_SESSION, 100):
                await store.append_many(
                    [
                        ContextMessage(role="user", content=[{"type": "text", "text": f"m{i}"}])
                        for i in range(chunk, chunk + 100)
                    ]
                )
    finally:
        await plain.dispose()
        await old.dispose()


async def test_rotation_killed_mid_run_loses_nothing_and_resumes(db_url: URL) -> None:
    await populate(db_url)
    total = 2 * (6 + ROWS_PER_SESSION)
    both = ring("k1", "k2", current="k2")
    engine = create_engine(db_url, encryption=both)
    try:
        expected = await read_all(engine, SESSIONS)
        moved = 0
        for _ in range(KILLS):
            child = start_rotation(db_url)
            try:
                while child.poll() is None:
                    done = (await context_keys(engine))["k2"]
                    if done >= moved + STEP:
                        break
                assert child.poll() is None, (
                    f"the rotation ended before it could be killed: {child.communicate()}"
                )
                child.send_signal(signal.SIGKILL)
                child.wait()
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
                assert child.stdout is not None
                assert child.stderr is not None
                child.stdout.close()
                child.stderr.close()
            assert child.returncode == -signal.SIGKILL
            keys = await context_keys(engine)
            # Every committed batch stays; the killed one is all or nothing.
            assert keys["k2"] >= moved + STEP
            assert keys["k2"] < total
            assert sum(keys.values()) == total
            moved = keys["k2"]
            # Every row reads back exactly as it was written.
            assert await read_all(engine, SESSIONS) == expected
        report = await rotate(engine, both, batch_size=50)
        assert report.rewritten["context_messages.content"] == total - moved
        assert report.changed_meanwhile == 0
        assert set(await payload_keys(engine)) == {"k2"}
    finally:
        await engine.dispose()
    path = sqlite_path(db_url)
    if path is not None:
        check = create_engine(db_url)
        try:
            async with check.connect() as conn:
                assert (await conn.execute(text("PRAGMA integrity_check"))).all() == [("ok",)]
        finally:
            await check.dispose()
    only_new = create_engine(db_url, encryption=ring("k2", current="k2"))
    try:
        assert await read_all(only_new, SESSIONS) == expected
    finally:
        await only_new.dispose()
