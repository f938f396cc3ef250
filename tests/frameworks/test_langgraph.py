"""ConvostoreSaver under real LangGraph graphs (no model calls), on every SQL backend.

Interrupts resumed by another process, state history and time travel, ``update_state``,
subgraphs, sync graphs, many threads written at once by several processes, encryption of
every stored payload, and the saver's own refusals.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import queue
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph")

import itertools

from langgraph.types import Command
from sqlalchemy import Table, func, make_url, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import connect, transfer
from convostore.encryption import Keyring, install, key_id_of
from convostore.errors import ConflictError, ValidationError
from convostore.integrations.langgraph import ConvostoreSaver
from convostore.sql.rotation import rotate, sealed_columns
from convostore.sql.tables import LangGraphBlobRecord, LangGraphCheckpointRecord
from tests.conftest import WITH_PGBOUNCER, _servers, empty_tables, require_backend, run_sync
from tests.frameworks.conftest import SQL_BACKENDS, open_engine
from tests.frameworks.langgraph_graphs import (
    approval_graph,
    count_in_child,
    counter_graph,
    first_message,
    nested_graph,
    resume_in_child,
)

JOIN_TIMEOUT_S = 120
LANGGRAPH_RECORDS = ("langgraph_checkpoint", "langgraph_blob", "langgraph_write")
PAYLOAD_COLUMNS = {
    "langgraph_checkpoints": ("checkpoint", "checkpoint_metadata"),
    "langgraph_checkpoint_blobs": ("value",),
    "langgraph_checkpoint_writes": ("value",),
}


def _url_of(backend: str, tmp_path: Path) -> str:
    """A URL another process can open: the SQLite file of :func:`open_engine`, or this
    session's server database (password included)."""
    if backend == "sqlite":
        return str(tmp_path / "integrations.db")
    url = _servers[backend].url
    assert url is not None
    return url.render_as_string(hide_password=False)


@pytest.fixture(params=SQL_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    require_backend(request.config, name)
    return name


@pytest.fixture
async def engine(backend: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = await open_engine(backend, tmp_path)
    yield engine
    await engine.dispose()


def _config(thread_id: object, **extra: Any) -> Any:
    return {"configurable": {"thread_id": thread_id, **extra}}


def _lineage(history: list[Any]) -> list[Any]:
    """The configs from the newest snapshot of ``history`` back to its root, by parents."""
    by_config = {s.config["configurable"]["checkpoint_id"]: s for s in history}
    chain, current = [], history[0]
    while current is not None:
        chain.append(current.config)
        parent = current.parent_config
        current = by_config[parent["configurable"]["checkpoint_id"]] if parent else None
    return chain


def _run_children(target: Any, argument_lists: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``target(*arguments, results)`` in one spawned process per argument tuple."""
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[Any] = ctx.Queue()
    processes = [ctx.Process(target=target, args=(*args, results)) for args in argument_lists]
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
    failures = [outcome for outcome, _ in outcomes if outcome != "ok"]
    assert not failures, "\n".join(failures)
    return [value for _, value in outcomes]


@pytest.mark.slow
async def test_an_interrupt_is_resumed_by_another_process(
    engine: AsyncEngine, backend: str, tmp_path: Path
) -> None:
    graph = approval_graph(ConvostoreSaver(engine))
    config = _config("refund-1")
    result = await graph.ainvoke({"messages": [first_message()]}, config)
    assert [i.value for i in result["__interrupt__"]] == [{"question": "approve the refund?"}]
    paused = await graph.aget_state(config)
    assert paused.next == ("review",)

    [contents] = _run_children(resume_in_child, [(_url_of(backend, tmp_path), "refund-1", "yes")])

    expected = ["I was charged twice.", "Refund 30?", "answer: yes", "Done."]
    assert contents == expected
    done = await graph.aget_state(config)
    assert done.next == ()
    assert [m.content for m in done.values["messages"]] == expected


async def test_history_time_travel_and_update_state(engine: AsyncEngine) -> None:
    graph = counter_graph(ConvostoreSaver(engine))
    config = _config("counter")
    await graph.ainvoke({"count": 0, "target": 3, "log": []}, config)

    history = [snapshot async for snapshot in graph.aget_state_history(config)]
    assert [s.values.get("count") for s in history] == [3, 2, 1, 0, None]
    assert [s.metadata["step"] for s in history if s.metadata] == [3, 2, 1, 0, -1]
    for child, parent in itertools.pairwise(history):
        assert child.parent_config == parent.config

    # Replay from the checkpoint where the count was 1: a fork, the original kept.
    at_one = history[2]
    replayed = await graph.ainvoke(None, at_one.config)
    assert replayed["log"] == ["step-1", "step-2", "step-3"]
    after = [s async for s in graph.aget_state_history(config)]
    assert {s.config["configurable"]["checkpoint_id"] for s in history} < {
        s.config["configurable"]["checkpoint_id"] for s in after
    }
    assert at_one.config in _lineage(after)

    # Edit the past, then run on from the edit.
    edited = await graph.aupdate_state(at_one.config, {"target": 5, "log": ["edited"]})
    assert (await graph.aget_state(edited)).values["target"] == 5
    finished = await graph.ainvoke(None, edited)
    assert finished["count"] == 5
    assert finished["log"] == ["step-1", "edited", "step-2", "step-3", "step-4", "step-5"]
    latest = await graph.aget_state(config)
    assert latest.values["count"] == 5
    update = [s async for s in graph.aget_state_history(config) if s.config == edited]
    assert update[0].metadata is not None
    assert update[0].metadata["source"] == "update"


async def test_a_subgraph_interrupts_and_resumes(engine: AsyncEngine) -> None:
    saver = ConvostoreSaver(engine)
    graph = nested_graph(saver)
    config = _config("nested")
    result = await graph.ainvoke({"messages": [first_message()]}, config)
    assert "__interrupt__" in result

    state = await graph.aget_state(config, subgraphs=True)
    assert state.next == ("approval",)
    inner = state.tasks[0].state
    assert inner is not None
    assert not isinstance(inner, dict)
    assert inner.next == ("review",)
    namespaces = {t.config["configurable"]["checkpoint_ns"] async for t in saver.alist(config)}
    assert "" in namespaces
    assert any(ns.startswith("approval:") for ns in namespaces)

    done = await graph.ainvoke(Command(resume="no"), config)
    assert [m.content for m in done["messages"]] == [
        "I was charged twice.",
        "Refund 30?",
        "answer: no",
        "Done.",
    ]


def test_a_sync_graph_on_from_url(backend: str, tmp_path: Path) -> None:
    url = _url_of(backend, tmp_path)
    if backend != "sqlite":
        run_sync(empty_tables(make_url(url)))
    with ConvostoreSaver.from_url(url, migrate=True) as saver:
        saver.setup()
        graph = counter_graph(saver)
        config = _config("sync-counter")
        assert graph.invoke({"count": 0, "target": 2, "log": []}, config)["count"] == 2
        assert [s.values.get("count") for s in graph.get_state_history(config)] == [2, 1, 0, None]
        saver.copy_thread("sync-counter", "sync-copy")
        saver.prune(["sync-counter"], strategy="keep_latest")
        assert len(list(saver.list(_config("sync-counter")))) == 1
        assert len(list(saver.list(_config("sync-copy")))) == 4
        saver.delete_thread("sync-copy")
        assert saver.get_tuple(_config("sync-copy")) is None


@pytest.fixture(params=WITH_PGBOUNCER)
def any_backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    require_backend(request.config, name)
    return name


@pytest.mark.slow
async def test_processes_writing_many_threads_at_once_lose_and_mix_nothing(
    any_backend: str, tmp_path: Path
) -> None:
    processes, threads_each, target = 3, 4, 6
    engine = await open_engine(any_backend, tmp_path)
    try:
        url = _url_of(any_backend, tmp_path)
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(processes)
        threads = [[f"p{p}-t{t}" for t in range(threads_each)] for p in range(processes)]
        _run_children(count_in_child, [(url, mine, target, barrier) for mine in threads])

        saver = ConvostoreSaver(engine)
        for thread_id in [t for mine in threads for t in mine]:
            tuples = [t async for t in saver.alist(_config(thread_id))]
            # The input checkpoint, then one per step: none lost, none from another thread.
            assert [t.metadata["step"] for t in tuples] == list(range(target, -2, -1))
            assert {t.config["configurable"]["thread_id"] for t in tuples} == {thread_id}
            for child, parent in itertools.pairwise(tuples):
                assert child.parent_config == parent.config
            latest = tuples[0].checkpoint["channel_values"]
            assert latest["count"] == target
            assert latest["log"] == [f"step-{i}" for i in range(1, target + 1)]
    finally:
        await engine.dispose()


async def test_every_payload_is_encrypted_on_an_engine_with_a_keyring(
    engine: AsyncEngine,
) -> None:
    install(engine, Keyring({"k1": os.urandom(32)}, current="k1"))
    graph = approval_graph(ConvostoreSaver(engine))
    await graph.ainvoke({"messages": [first_message()]}, _config("sealed"))
    async with engine.connect() as conn:
        for table, names in PAYLOAD_COLUMNS.items():
            for name in names:
                stored = (await conn.execute(text(f"SELECT {name} FROM {table}"))).scalars().all()
                assert stored, table
                assert all(bytes(value)[:1] == b"\x10" for value in stored), (table, name)
    state = await graph.aget_state(_config("sealed"))
    assert state.values["messages"][0].content == "I was charged twice."


async def test_prune_keeps_only_the_values_the_latest_checkpoint_reads(
    engine: AsyncEngine,
) -> None:
    saver = ConvostoreSaver(engine)
    graph = counter_graph(saver)
    await graph.ainvoke({"count": 0, "target": 4, "log": []}, _config("pruned"))
    blobs = LangGraphBlobRecord.__table__

    async def blob_count() -> int:
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(blobs))).scalar_one())

    before = await blob_count()
    await saver.aprune(["pruned"])
    latest = await saver.aget_tuple(_config("pruned"))
    assert latest is not None
    assert latest.checkpoint["channel_values"]["count"] == 4
    assert len(latest.checkpoint["channel_values"]["log"]) == 4
    assert await blob_count() < before
    assert await blob_count() == len(latest.checkpoint["channel_versions"])


async def test_refusals(engine: AsyncEngine) -> None:
    saver = ConvostoreSaver(engine)
    graph = counter_graph(saver)
    await graph.ainvoke({"count": 0, "target": 1, "log": []}, _config("a"))
    await graph.ainvoke({"count": 0, "target": 1, "log": []}, _config("b"))
    with pytest.raises(ConflictError):
        await saver.acopy_thread("a", "b")
    with pytest.raises(ValidationError):
        await saver.aget_tuple(_config("x" * 129))
    with pytest.raises(ValidationError):
        await saver.aprune(["a"], strategy="everything")
    # Thread ids that are not strings are stored as their text, as LangGraph allows.
    await graph.ainvoke({"count": 0, "target": 1, "log": []}, _config(7))
    found = await saver.aget_tuple(_config("7"))
    assert found is not None
    assert found.checkpoint["channel_values"]["count"] == 1


async def test_rotate_keys_covers_the_checkpoint_tables(engine: AsyncEngine) -> None:
    old, new = os.urandom(32), os.urandom(32)
    install(engine, Keyring({"old": old}, current="old"))
    graph = approval_graph(ConvostoreSaver(engine))
    await graph.ainvoke({"messages": [first_message()]}, _config("rotated"))

    report = await rotate(engine, Keyring({"old": old, "new": new}, current="new"))

    for table in PAYLOAD_COLUMNS:
        assert table in sealed_columns()
        assert any(name.startswith(f"{table}.") for name in report.rewritten), table
    async with engine.connect() as conn:
        for table, names in PAYLOAD_COLUMNS.items():
            for name in names:
                stored = (await conn.execute(text(f"SELECT {name} FROM {table}"))).scalars()
                assert {key_id_of(bytes(value)) for value in stored} == {"new"}, (table, name)
    install(engine, Keyring({"new": new}, current="new"), replace=True)
    state = await approval_graph(ConvostoreSaver(engine)).aget_state(_config("rotated"))
    assert state.values["messages"][0].content == "I was charged twice."


async def test_export_and_import_carry_checkpoints_across_backends(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    source = await connect(str(tmp_path / "source.db"))
    try:
        saver = ConvostoreSaver(source)
        graph = nested_graph(saver)
        config = _config("exported")
        await graph.ainvoke({"messages": [first_message()]}, config)  # paused in a subgraph
        first = io.BytesIO()
        report = await transfer.export_jsonl(source, first)
        assert all(report.counts[name]["source"] for name in LANGGRAPH_RECORDS)
    finally:
        await source.dispose()

    imported = await transfer.import_jsonl(engine, first.getvalue().splitlines())
    assert imported.verified
    assert {name: imported.counts[name]["inserted"] for name in LANGGRAPH_RECORDS} == {
        name: report.counts[name]["source"] for name in LANGGRAPH_RECORDS
    }
    again = await transfer.import_jsonl(engine, first.getvalue().splitlines())
    assert all(again.counts[name]["inserted"] == 0 for name in LANGGRAPH_RECORDS)
    second = io.BytesIO()
    await transfer.export_jsonl(engine, second)
    assert first.getvalue().splitlines()[1:] == second.getvalue().splitlines()[1:]

    # The imported thread resumes where the exported one paused.
    done = await nested_graph(ConvostoreSaver(engine)).ainvoke(Command(resume="ok"), config)
    assert [m.content for m in done["messages"]][-2:] == ["answer: ok", "Done."]


async def test_retention_prunes_threads_whose_newest_checkpoint_is_old(
    engine: AsyncEngine,
) -> None:
    saver = ConvostoreSaver(engine)
    graph = counter_graph(saver)
    for thread_id in ("stale", "fresh"):
        await graph.ainvoke({"count": 0, "target": 2, "log": []}, _config(thread_id))
    checkpoints: Table = LangGraphCheckpointRecord.__table__  # type: ignore[assignment]
    async with engine.begin() as conn:
        await conn.execute(
            update(checkpoints)
            .where(checkpoints.c.thread_id == "stale")
            .values(created_at=datetime.now(UTC) - timedelta(days=10))
        )

    dry = await transfer.prune(engine, older_than=timedelta(days=1), dry_run=True)
    assert (dry.langgraph_threads, dry.langgraph_checkpoints) == (1, 4)
    scoped = await transfer.prune(engine, older_than=timedelta(days=1), project="/elsewhere")
    assert scoped.langgraph_threads == 0
    report = await transfer.prune(engine, older_than=timedelta(days=1))
    assert (report.langgraph_threads, report.langgraph_checkpoints) == (1, 4)

    assert await saver.aget_tuple(_config("stale")) is None
    async with engine.connect() as conn:
        for table in PAYLOAD_COLUMNS:
            threads = (
                await conn.execute(text(f"SELECT DISTINCT thread_id FROM {table}"))
            ).scalars()
            assert set(threads) == {"fresh"}, table
    fresh = await saver.aget_tuple(_config("fresh"))
    assert fresh is not None
    assert fresh.checkpoint["channel_values"]["count"] == 2


def test_the_saver_benchmark_runs(tmp_path: Path) -> None:
    """``bench/langgraph_saver.py --quick`` on SQLite: it runs and prints its table (no
    timing is checked)."""
    root = Path(__file__).resolve().parents[2]
    completed = subprocess.run(
        [sys.executable, str(root / "bench" / "langgraph_saver.py"), "--quick"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "| bytes on disk per checkpoint |" in completed.stdout
