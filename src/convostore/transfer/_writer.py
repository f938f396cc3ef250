"""Batched, idempotent, verified writes of imported records (every importer uses one)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore.errors import ConflictError
from convostore.sql.dml import Executor
from convostore.sql.repositories.admin import TransferRepository
from convostore.sql.runner import TransactionRunner
from convostore.transfer._format import (
    BATCH_SIZE,
    KINDS_IN_ORDER,
    SESSIONS,
    THREADS,
    Kind,
    Progress,
    TransferReport,
)
from convostore.transfer._snapshot import count_records

# How each record type bounds its thread's next_idx or its session's next_position from
# below: (scope fields, the field, what to add). A message at idx n needs next_idx > n.
_FLOORS: Mapping[str, tuple[tuple[str, str], str, int]] = {
    "thread": (("agent_name", "thread_id"), "next_idx", 0),
    "message": (("agent_name", "thread_id"), "idx", 1),
    "session": (("project", "session_id"), "next_position", 0),
    "context_message": (("project", "session_id"), "position", 1),
}
_PARENT_OF: Mapping[str, str] = {"message": "thread", "context_message": "session"}


class Writer:
    """Collects records, writes them a batch per transaction, and checks each batch arrived.

    Each batch is one :meth:`TransactionRunner.run` (retried on transient conflicts); rows
    whose key already exists are skipped, so an interrupted import can run again.
    """

    def __init__(self, engine: AsyncEngine, progress: Progress) -> None:
        self.runner = TransactionRunner(engine)
        self.progress = progress
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self.read: dict[str, int] = {}
        # Counter floors: (agent, thread) -> next_idx, (project, session) -> next_position.
        self.next_idx: dict[tuple[str, str], int] = {}
        self.next_position: dict[tuple[str, str], int] = {}
        self.before: dict[str, int] = {}

    async def count_rows(self) -> dict[str, int]:
        """Rows per record type in the destination."""

        async def work(executor: Executor) -> dict[str, int]:
            return await count_records(TransferRepository(executor))

        return await self.runner.run(work)

    async def begin(self) -> None:
        """Note the destination's row counts, to report what the import added."""
        self.before = await self.count_rows()

    def _floors(self, name: str) -> dict[tuple[str, str], int]:
        return self.next_idx if name in ("message", "thread") else self.next_position

    async def add(self, name: str, row: dict[str, Any]) -> None:
        """Queue one checked record of type ``name``; a full batch is written at once."""
        self.read[name] = self.read.get(name, 0) + 1
        if name in _FLOORS:
            (a, b), source, plus = _FLOORS[name]
            floors = self._floors(name)
            key = (row[a], row[b])
            floors[key] = max(floors.get(key, 0), row[source] + plus)
        batch = self.pending.setdefault(name, [])
        batch.append(row)
        if len(batch) >= BATCH_SIZE:
            await self.flush(name)

    async def flush(self, name: str | None = None) -> None:
        """Write what is queued (of type ``name``, or of every type)."""
        # Parents before children, so foreign keys always find their row.
        for kind in KINDS_IN_ORDER:
            if name is not None and kind.name != name:
                continue
            rows = self.pending.pop(kind.name, [])
            if rows:
                await self._write(kind, rows)

    async def _write(self, kind: Kind, rows: list[dict[str, Any]]) -> None:
        parent = _PARENT_OF.get(kind.name)
        if parent is not None:
            await self.flush(parent)
        floors = self._floors(kind.name)

        async def work(executor: Executor) -> int:
            return await TransferRepository(executor).insert_missing(
                kind.table, kind.key, rows, floors
            )

        missing = await self.runner.run(work)
        if missing:
            raise ConflictError(f"{missing} {kind.name} records were not written")
        self.progress.advance(len(rows))

    async def finish(self, report: TransferReport) -> None:
        """Flush everything, raise the counters to cover every row, and fill the report."""
        await self.flush()
        await self._raise_counters(THREADS, "next_idx", self.next_idx)
        await self._raise_counters(SESSIONS, "next_position", self.next_position)
        after = await self.count_rows()
        for kind in KINDS_IN_ORDER:
            read = self.read.get(kind.name, 0)
            inserted = after[kind.name] - self.before[kind.name]
            if read or inserted:
                report.counts[kind.name] = {
                    "source": read,
                    "inserted": inserted,
                    "skipped": max(read - inserted, 0),
                }
        report.verified = True

    async def _raise_counters(
        self, table: Table, counter: str, floors: Mapping[tuple[str, str], int]
    ) -> None:
        items = list(floors.items())
        for start in range(0, len(items), BATCH_SIZE):
            batch = items[start : start + BATCH_SIZE]

            async def work(executor: Executor, batch: list[Any] = batch) -> None:
                await TransferRepository(executor).raise_counters(table, counter, batch)

            await self.runner.run(work)
