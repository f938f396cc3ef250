"""The transaction runner of what reads a whole database in one transaction."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from convostore.sql.repositories.admin import TransferRepository
from convostore.sql.runner import TransactionRunner
from convostore.transfer._format import KINDS_IN_ORDER


def snapshot_runner(engine: AsyncEngine) -> TransactionRunner:
    """A runner for one transaction that reads a whole database (export, stats).

    Without the engine's per-call deadline: that bounds single calls of the façades, and
    reading every row of a large database is one transaction that may take minutes. What
    writes in batches (imports, prune) keeps the deadline for each batch.
    """
    runner = TransactionRunner(engine)
    runner.deadline = None
    return runner


async def count_records(repo: TransferRepository) -> dict[str, int]:
    """Rows per record type of the export format."""
    return {kind.name: await repo.count(kind.table) for kind in KINDS_IN_ORDER}
