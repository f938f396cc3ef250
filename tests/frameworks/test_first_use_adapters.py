"""Every adapter opening one new SQLite file from many places at once: all succeed, none lose.

From tasks of one process (each with its own engine, as separate services, sessions or
histories have), from threads (each with its own event loop) and from processes, every
writer stores :data:`ITEMS` items, one call each, under a key of its own; then every key
is counted. Before the fix the tasks of one process ran Alembic at the same time and broke
its process-wide state: ``create_session`` x5 on a new ADK service failed 4 times of 5
(``KeyError('config')``, ``KeyError('script')``), and concurrent first ``add_items`` on
OpenAI sessions failed 4 of 5, one session storing 1 of its 5 items.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import threading
from pathlib import Path

import pytest

from tests.frameworks.first_use_worker import COUNTERS, ITEMS, WRITERS, in_process, write_all

ADAPTERS = sorted(WRITERS)
FRAMEWORKS = {
    "adk": "google.adk",
    "axio": "axio",
    "langchain": "langchain_core",
    "openai_agents": "agents",
    "pydantic_ai": "pydantic_ai",
}
KEYS = 5
PROCESSES = 3
JOIN_TIMEOUT_S = 180


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    pytest.importorskip(FRAMEWORKS[name], reason=f"{FRAMEWORKS[name]} is not installed")
    return name


def new_file(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"


def counts(adapter: str, url: str, keys: list[str]) -> dict[str, int]:
    async def count() -> dict[str, int]:
        return {key: await COUNTERS[adapter](url, key) for key in keys}

    return asyncio.run(count())


def test_tasks(adapter: str, tmp_path: Path) -> None:
    url = new_file(tmp_path)
    keys = [f"k{i}" for i in range(KEYS)]
    asyncio.run(write_all(adapter, url, keys))
    assert counts(adapter, url, keys) == dict.fromkeys(keys, ITEMS)


def test_threads(adapter: str, tmp_path: Path) -> None:
    url = new_file(tmp_path)
    barrier = threading.Barrier(KEYS)
    errors: list[BaseException] = []

    def run(key: str) -> None:
        try:
            barrier.wait()
            asyncio.run(write_all(adapter, url, [key]))
        except BaseException as exc:
            errors.append(exc)

    keys = [f"t{i}" for i in range(KEYS)]
    threads = [threading.Thread(target=run, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
    assert not errors, [repr(e) for e in errors]
    assert counts(adapter, url, keys) == dict.fromkeys(keys, ITEMS)


@pytest.mark.slow
def test_processes(adapter: str, tmp_path: Path) -> None:
    url = new_file(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results: multiprocessing.Queue[str] = ctx.Queue()
    keys = {p: [f"p{p}-{i}" for i in range(2)] for p in range(PROCESSES)}
    processes = [
        ctx.Process(target=in_process, args=(adapter, url, keys[p], barrier, results))
        for p in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=JOIN_TIMEOUT_S) for _ in processes]
    except queue.Empty:
        pytest.fail("a process neither finished nor reported within the time limit")
    finally:
        for process in processes:
            process.join(JOIN_TIMEOUT_S)
            if process.is_alive():
                process.kill()
    assert outcomes == ["ok"] * PROCESSES, "\n".join(outcomes)
    every = [key for part in keys.values() for key in part]
    assert counts(adapter, url, every) == dict.fromkeys(every, ITEMS)
