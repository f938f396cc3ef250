"""Retention: delete sessions and threads whose last activity is older than a cutoff."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, Table
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore.errors import ValidationError
from convostore.sql.dml import Executor
from convostore.sql.repositories.admin import (
    Key,
    TransferRepository,
    stale_langgraph_threads,
    stale_sessions,
    stale_threads,
)
from convostore.sql.runner import TransactionRunner
from convostore.transfer._format import (
    BATCH_SIZE,
    CONTEXT_MESSAGES,
    MESSAGES,
    SESSIONS,
    THREADS,
    NoProgress,
    Progress,
    iso,
)

_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """Parse ``30d``, ``12h``, ``90m``, ``2w`` or ``45s`` into a :class:`~datetime.timedelta`.

    Raises:
        ValidationError: The text is not a number followed by one of ``s m h d w``.
    """
    match = _AGE.match(text)
    if not match:
        raise ValidationError(f"invalid age {text!r}: use a number and a unit, e.g. 30d or 12h")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass
class PruneReport:
    """What :func:`prune` removed (or, with ``dry_run``, would remove)."""

    cutoff: datetime
    dry_run: bool
    sessions: int = 0
    context_messages: int = 0
    threads: int = 0
    messages: int = 0
    langgraph_threads: int = 0
    langgraph_checkpoints: int = 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``--json`` output)."""
        return {
            "cutoff": iso(self.cutoff),
            "dry_run": self.dry_run,
            "sessions": self.sessions,
            "context_messages": self.context_messages,
            "threads": self.threads,
            "messages": self.messages,
            "langgraph_threads": self.langgraph_threads,
            "langgraph_checkpoints": self.langgraph_checkpoints,
        }


@dataclass(frozen=True)
class _Scope:
    """One kind of container that prune removes: sessions or threads, with their rows."""

    label: str
    parent: Table
    children: Table
    key: tuple[str, str]


_SESSIONS = _Scope("sessions", SESSIONS, CONTEXT_MESSAGES, ("project", "session_id"))
_THREADS = _Scope("threads", THREADS, MESSAGES, ("agent_name", "thread_id"))


async def prune(
    engine: AsyncEngine,
    *,
    older_than: timedelta,
    project: str | None = None,
    agent: str | None = None,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> PruneReport:
    """Delete sessions and threads whose last activity is older than ``older_than``.

    A session's last activity is its newest message (or its creation, if it has none); a
    thread's is its ``updated_at``, which every new message moves; a LangGraph thread's
    (:mod:`convostore.integrations.langgraph`) is its newest checkpoint. With ``project``
    only that project's sessions are considered, with ``agent`` only that agent's threads
    (``""``: the default agent), with neither everything, LangGraph threads included.
    Users are kept, with their balances. Each batch of ``batch_size`` sessions or threads
    is its own transaction.
    """
    progress = progress or NoProgress()
    cutoff = (now or datetime.now(UTC)) - older_than
    report = PruneReport(cutoff=cutoff, dry_run=dry_run)
    runner = TransactionRunner(engine)
    if agent is None:
        parents, children = await _prune(
            runner, _SESSIONS, stale_sessions(cutoff, project), dry_run, batch_size, progress
        )
        report.sessions += parents
        report.context_messages += children
    if project is None:
        parents, children = await _prune(
            runner, _THREADS, stale_threads(cutoff, agent), dry_run, batch_size, progress
        )
        report.threads += parents
        report.messages += children
    if project is None and agent is None:
        threads, checkpoints = await _prune_langgraph(runner, cutoff, dry_run, batch_size, progress)
        report.langgraph_threads += threads
        report.langgraph_checkpoints += checkpoints
    return report


async def _prune_langgraph(
    runner: TransactionRunner,
    cutoff: datetime,
    dry_run: bool,
    batch_size: int,
    progress: Progress,
) -> tuple[int, int]:
    """(LangGraph threads, checkpoints) removed, or that would be with ``dry_run``."""

    async def listing(executor: Executor) -> list[str]:
        return [
            key[0]
            for key in await TransferRepository(executor).keys(stale_langgraph_threads(cutoff))
        ]

    threads = await runner.run(listing)
    progress.start("pruning LangGraph threads", len(threads))
    checkpoints = 0
    for start in range(0, len(threads), batch_size):
        batch = threads[start : start + batch_size]

        async def work(executor: Executor, batch: list[str] = batch) -> int:
            repo = TransferRepository(executor)
            if dry_run:
                return await repo.count_langgraph_checkpoints(batch)
            return await repo.delete_stale_langgraph(batch, cutoff)

        checkpoints += await runner.run(work)
        progress.advance(len(batch))
    return len(threads), checkpoints


async def _prune(
    runner: TransactionRunner,
    scope: _Scope,
    stale: Select[Any],
    dry_run: bool,
    batch_size: int,
    progress: Progress,
) -> tuple[int, int]:
    """(containers, rows) removed, or that would be with ``dry_run``."""

    async def listing(executor: Executor) -> list[Key]:
        return await TransferRepository(executor).keys(stale)

    keys = await runner.run(listing)
    progress.start(f"pruning {scope.label}", len(keys))
    parents = children = 0
    for start in range(0, len(keys), batch_size):
        batch = keys[start : start + batch_size]

        # Each batch returns its counts rather than adding them up, so a retried batch
        # is counted once.
        async def work(executor: Executor, batch: list[Key] = batch) -> tuple[int, int]:
            repo = TransferRepository(executor)
            if dry_run:
                rows = await repo.count_children(scope.children, scope.key, batch)
                return len(batch), rows
            # Re-check staleness under the delete: a container written to since the
            # listing is kept.
            still = await repo.still_stale(stale, scope.parent, scope.key, batch)
            if not still:
                return 0, 0
            rows = await repo.delete_keys(scope.children, scope.key, still)
            return await repo.delete_keys(scope.parent, scope.key, still), rows

        done, rows = await runner.run(work)
        parents += done
        children += rows
        progress.advance(len(batch))
    return parents, children
