"""OpenTelemetry: one span per public call, scope attributes only, retries, rows, metrics.

Spans and metrics are read back from the SDK's in-memory exporter and reader, installed
once for this process (OpenTelemetry's global providers can be set only once).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import event

from convostore import (
    ContextMessage,
    InsufficientBalance,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    create_engine,
    telemetry,
)

SECRET_TEXT = "payload-that-must-not-leak"
PASSWORD = "pw-Otel-0815"

_exporter = InMemorySpanExporter()
_reader = InMemoryMetricReader()


@pytest.fixture(scope="module", autouse=True)
def providers() -> None:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[_reader]))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _exporter.clear()
    yield _exporter
    _exporter.clear()


def attributes_of(exporter: InMemorySpanExporter) -> list[tuple[str, dict[str, Any]]]:
    return [(span.name, dict(span.attributes or {})) for span in exporter.get_finished_spans()]


async def test_one_span_per_call_with_the_scope(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    store = SQLAlchemyContextStore(url=str(tmp_path / "x.db"), project="/p", session_id="s1")
    try:
        await store.append(ContextMessage(role="user", content=[{"text": SECRET_TEXT}]))
        await store.append_many([ContextMessage(role="assistant")] * 3)
        history = await store.get_history()
        await store.get_context_tokens()
    finally:
        await store.close()
    assert len(history) == 4
    recorded = attributes_of(spans)
    assert [name for name, _ in recorded] == [
        "convostore.append",
        "convostore.append_many",
        "convostore.get_history",
        "convostore.get_context_tokens",
    ]
    for _, attributes in recorded:
        assert attributes["db.system"] == "sqlite"
        assert attributes["convostore.project"] == "/p"
        assert attributes["convostore.session_id"] == "s1"
        assert attributes["convostore.retries"] == 0
    assert [a.get("convostore.rows") for _, a in recorded] == [1, 3, 4, None]
    assert all(span.kind is SpanKind.CLIENT for span in spans.get_finished_spans())


async def test_failures_are_marked_without_their_message(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    db = SQLAlchemyDatabase(f"sqlite://{tmp_path}/a.db", agent_name="bot")
    try:
        await db.add_message("t1", "alice", "user", message=SECRET_TEXT)
        with pytest.raises(InsufficientBalance):
            await db.debit("alice", 5)
    finally:
        await db.close()
    (added, debit) = spans.get_finished_spans()
    assert dict(added.attributes or {})["convostore.thread_id"] == "t1"
    assert dict(added.attributes or {})["convostore.user_id"] == "alice"
    assert dict(added.attributes or {})["convostore.agent_name"] == "bot"
    assert debit.status.status_code is StatusCode.ERROR
    assert debit.status.description == "InsufficientBalance"
    assert dict(debit.attributes or {})["error.type"] == "InsufficientBalance"
    assert debit.events == ()  # no exception event, so no message


async def test_nothing_secret_in_any_span(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    url = f"postgresql://u:{PASSWORD}@127.0.0.1:1/db"
    store = SQLAlchemyContextStore(url=url, session_id="s")
    with pytest.raises(Exception):  # noqa: B017, PT011 - a connection refused, any type
        await store.get_history()
    await store.close()
    store = SQLAlchemyContextStore(url=str(tmp_path / "y.db"), session_id="s")
    await store.append(ContextMessage(role="user", content=[{"text": SECRET_TEXT}]))
    await store.get_messages()
    await store.close()
    shown = repr([(s.name, s.attributes, s.status, s.events) for s in spans.get_finished_spans()])
    assert PASSWORD not in shown
    assert SECRET_TEXT not in shown


async def test_retries_are_counted(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    store = SQLAlchemyContextStore(url=str(path), project="p", session_id="s")
    await store.add_context_tokens(1, 1)
    impatient = create_engine(str(path))
    first_error = asyncio.Event()

    def no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 0")
        cursor.close()

    event.listen(impatient.sync_engine, "connect", no_busy_wait)
    event.listen(impatient.sync_engine, "handle_error", lambda _context: first_error.set())
    retried = SQLAlchemyContextStore(impatient, project="p", session_id="s")
    blocker = create_engine(str(path), deadline=0)
    try:
        async with blocker.connect() as conn:
            # Another connection holds SQLite's write lock until the first attempt failed.
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
            pending = asyncio.create_task(retried.add_context_tokens(1, 1))
            async with asyncio.timeout(20):
                await first_error.wait()
            await conn.exec_driver_sql("ROLLBACK")
        await pending
        assert await store.get_context_tokens() == (2, 2)
    finally:
        await store.close()
        await impatient.dispose()
        await blocker.dispose()
    (span,) = [
        s
        for s in spans.get_finished_spans()
        if s.name == "convostore.add_context_tokens"
        and dict(s.attributes or {})["convostore.retries"]
    ]
    retries: Any = dict(span.attributes or {})["convostore.retries"]
    assert retries >= 1
    assert _metric_sum("convostore.call.retries") >= 1


def _metric_sum(name: str) -> float:
    data = _reader.get_metrics_data()
    total = 0.0
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    total += sum(getattr(p, "value", 0) for p in metric.data.data_points)
    return total


async def test_durations_are_measured(spans: InMemorySpanExporter) -> None:
    store = SQLAlchemyContextStore(url="sqlite://:memory:", session_id="m")
    await store.get_history()
    await store.close()
    data = _reader.get_metrics_data()
    assert data is not None
    names = {
        metric.name
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert "convostore.call.duration" in names


def test_nothing_is_traced_without_opentelemetry() -> None:
    # Every call is wrapped once for its deadline budget (convostore.deadlines.one_budget);
    # the span wrapper comes inside it only where OpenTelemetry is installed.
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import convostore\n"
        "from convostore import telemetry, SQLAlchemyContextStore\n"
        "assert not telemetry.enabled()\n"
        "assert not hasattr(SQLAlchemyContextStore.append.__wrapped__, '__wrapped__')\n"
        "assert not any(m.startswith('opentelemetry.') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert telemetry.enabled()
    budget = getattr(SQLAlchemyContextStore.append, "__wrapped__", None)
    assert hasattr(budget, "__wrapped__")
