"""Export of a whole database in the versioned JSONL format (``docs/cli.md``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore.errors import DatabaseError
from convostore.settings import redact
from convostore.sql.dml import Executor
from convostore.sql.repositories.admin import TransferRepository
from convostore.transfer._format import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    KINDS_IN_ORDER,
    Kind,
    NoProgress,
    Progress,
    TransferReport,
    iso,
)
from convostore.transfer._snapshot import count_records, snapshot_runner


async def export_jsonl(
    engine: AsyncEngine,
    out: IO[bytes],
    *,
    progress: Progress | None = None,
) -> TransferReport:
    """Write the whole database to ``out`` in the JSONL export format.

    All records come from one consistent snapshot, in a fixed order (by record type, then by
    key), so two exports of the same data are byte-identical apart from the header's
    ``exported_at``.

    Raises:
        DatabaseError: The database failed while the export ran (``out`` then holds a
            partial export, which an import rejects as truncated).
    """
    progress = progress or NoProgress()
    report = TransferReport("export", redact(engine.url), "")
    written_any = False

    async def work(executor: Executor) -> dict[str, int]:
        nonlocal written_any
        if written_any:
            # The runner retries transient conflicts, but what already went to ``out``
            # cannot be taken back. (Reads of a snapshot do not conflict in practice.)
            raise DatabaseError("the export was interrupted after it had started writing")
        repo = TransferRepository(executor)
        await repo.begin_snapshot()
        counts = await count_records(repo)
        header = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "exported_at": iso(datetime.now(UTC)),
            "counts": counts,
        }
        written_any = True
        out.write(orjson.dumps(header) + b"\n")
        for kind in KINDS_IN_ORDER:
            progress.start(f"exporting {kind.name} records", counts[kind.name])
            written = 0
            async for rows in repo.stream_records(kind.table, kind.fields, kind.key):
                chunk = bytearray()
                for row in rows:
                    chunk += _dump_record(kind, row._mapping)
                out.write(chunk)
                written += len(rows)
                progress.advance(len(rows))
            report.counts[kind.name] = {"source": written}
        return counts

    counts = await snapshot_runner(engine).run(work)
    report.verified = all(report.counts[k]["source"] == counts[k] for k in counts)
    return report


def _dump_record(kind: Kind, row: Mapping[Any, Any]) -> bytes:
    record: dict[str, Any] = {"type": kind.name}
    for name in kind.fields:
        value = row[name]
        record[name] = iso(value) if name in kind.timestamps else value
    return orjson.dumps(record) + b"\n"
