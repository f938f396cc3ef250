"""Size of a database: rows per table, payload bytes and how well they compress."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import codec, encryption
from convostore.settings import redact
from convostore.sql.dml import Executor
from convostore.sql.repositories.admin import TransferRepository
from convostore.transfer._format import (
    CONTEXT_MESSAGES,
    MESSAGES,
    SESSIONS,
    THREADS,
    USERS,
    NoProgress,
    Progress,
)
from convostore.transfer._snapshot import snapshot_runner


@dataclass
class Stats:
    """Size of a database: rows per table, payload bytes and how well they compress."""

    url: str
    rows: dict[str, int]
    projects: int
    agents: int
    stored_bytes: int
    json_bytes: int

    @property
    def compression_ratio(self) -> float:
        """Decoded JSON size / stored payload size (1.0 for an empty database)."""
        return self.json_bytes / self.stored_bytes if self.stored_bytes else 1.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``--json`` output)."""
        return {
            "url": self.url,
            "rows": self.rows,
            "sessions": self.rows["context_tokens"],
            "threads": self.rows["threads"],
            "projects": self.projects,
            "agents": self.agents,
            "payload_stored_bytes": self.stored_bytes,
            "payload_json_bytes": self.json_bytes,
            "compression_ratio": round(self.compression_ratio, 3),
        }


_TABLES: Final = (USERS, THREADS, MESSAGES, SESSIONS, CONTEXT_MESSAGES)
_PAYLOADS: Final = (
    (MESSAGES, ("content", "extra_inputs", "extra_outputs")),
    (CONTEXT_MESSAGES, ("content",)),
)


async def stats(engine: AsyncEngine, *, progress: Progress | None = None) -> Stats:
    """Count rows and measure payloads (reading every stored payload's header, not its JSON).

    Encrypted payloads are opened with the engine's keyring (their stored size counts
    the envelope).

    Raises:
        SerializationError: A stored payload is corrupt or expands beyond the size that
            any read accepts (:data:`convostore.codec.DEFAULT_MAX_SIZE`).
        EncryptionError: A payload is encrypted under a key the engine does not have.
    """
    progress = progress or NoProgress()
    keyring = encryption.keyring_of(engine)

    async def work(executor: Executor) -> Stats:
        repo = TransferRepository(executor)
        await repo.begin_snapshot()
        rows = {str(table.name): await repo.count(table) for table in _TABLES}
        projects = await repo.count_distinct(SESSIONS, "project")
        agents = await repo.count_distinct(THREADS, "agent_name")
        progress.start("measuring payloads", rows["messages"] + rows["context_messages"])
        stored = decoded = 0
        for table, columns in _PAYLOADS:
            async for partition in repo.stream_payloads(table, columns):
                for row in partition:
                    for data in row:
                        if data is not None:
                            stored += len(data)
                            inner = encryption.open_payload(bytes(data), keyring)
                            decoded += codec.payload_size(inner)
                progress.advance(len(partition))
        return Stats(
            url=redact(engine.url),
            rows=rows,
            projects=projects,
            agents=agents,
            stored_bytes=stored,
            json_bytes=decoded,
        )

    return await snapshot_runner(engine).run(work)
