"""The statements of the LangGraph checkpointer (:mod:`convostore.integrations.langgraph`).

Tables of revision 0006: ``langgraph_checkpoints`` (each checkpoint without its channel
values), ``langgraph_checkpoint_blobs`` (each channel's value once per version) and
``langgraph_checkpoint_writes`` (the pending writes of each checkpoint's tasks). The saver
checks arguments, serializes payloads and decides what runs in one transaction; every
statement it runs is here, the hot ones (put, get, the writes and blobs of a read) built
once per dialect family and cached. Like every repository, these functions run on an
:data:`~convostore.sql.dml.Executor` and never commit. Nothing here imports LangGraph.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from sqlalchemy import (
    Row,
    Select,
    Table,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    tuple_,
)

from convostore.sql.dml import Executor, cached, family_of, insert_ignore, params_for, upsert
from convostore.sql.engine import Family
from convostore.sql.repositories.admin import table_of
from convostore.sql.tables import (
    LangGraphBlobRecord,
    LangGraphCheckpointRecord,
    LangGraphWriteRecord,
)

__all__ = [
    "CHECKPOINTS",
    "blob_versions",
    "blobs_of",
    "checkpoint",
    "checkpoints_page",
    "copy_thread",
    "delete_blob",
    "delete_runs",
    "delete_thread",
    "keep_only_checkpoint",
    "latest_per_namespace",
    "put_checkpoint",
    "put_writes",
    "thread_has_checkpoints",
    "writes_of",
]

CHECKPOINTS: Final = table_of(LangGraphCheckpointRecord)
BLOBS: Final = table_of(LangGraphBlobRecord)
WRITES: Final = table_of(LangGraphWriteRecord)

_CHECKPOINT_KEY: Final = ["thread_id", "checkpoint_ns", "checkpoint_id"]
_REPLACED: Final = (
    "parent_checkpoint_id",
    "run_id",
    "checkpoint",
    "checkpoint_metadata",
    "created_at",
)
_WRITE_KEY: Final = ["thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx"]
_BLOB_KEY: Final = ["thread_id", "checkpoint_ns", "channel", "version"]


def _in_scope(table: Table, thread_id: str, checkpoint_ns: str) -> tuple[Any, ...]:
    return (table.c.thread_id == thread_id, table.c.checkpoint_ns == checkpoint_ns)


# The statements of every put and get_tuple are built once per dialect family (building a
# statement costs SQLAlchemy more than running a small one: see convostore.sql.dml.cached).
def _put_checkpoint(kind: Family) -> Any:
    def build() -> Any:
        values = params_for(CHECKPOINTS, [*_CHECKPOINT_KEY, *_REPLACED])
        return upsert(
            kind,
            CHECKPOINTS,
            values,
            key=_CHECKPOINT_KEY,
            update=lambda new: {name: new[name] for name in _REPLACED},
        )

    return cached(("langgraph", "put", kind), build)


def _put_blobs(kind: Family) -> Any:
    def build() -> Any:
        return insert_ignore(kind, BLOBS, params_for(BLOBS, [*_BLOB_KEY, "value"]), key=_BLOB_KEY)

    return cached(("langgraph", "blobs", kind), build)


def _get_checkpoint(by_id: bool) -> Any:
    def build() -> Any:
        c = CHECKPOINTS.c
        stmt = select(CHECKPOINTS).where(
            c.thread_id == bindparam("thread_id"), c.checkpoint_ns == bindparam("checkpoint_ns")
        )
        if by_id:
            return stmt.where(c.checkpoint_id == bindparam("checkpoint_id"))
        return stmt.order_by(c.checkpoint_id.desc()).limit(1)

    return cached(("langgraph", "get", by_id), build)


def _get_writes() -> Any:
    def build() -> Any:
        c = WRITES.c
        return select(WRITES).where(
            c.thread_id == bindparam("thread_id"),
            c.checkpoint_ns == bindparam("checkpoint_ns"),
            c.checkpoint_id.in_(bindparam("ids", expanding=True)),
        )

    return cached(("langgraph", "writes"), build)


def _get_blobs() -> Any:
    def build() -> Any:
        c = BLOBS.c
        return select(c.channel, c.version, c.value).where(
            c.thread_id == bindparam("thread_id"),
            c.checkpoint_ns == bindparam("checkpoint_ns"),
            tuple_(c.channel, c.version).in_(bindparam("pairs", expanding=True)),
        )

    return cached(("langgraph", "blobs"), build)


async def put_checkpoint(
    executor: Executor, row: Mapping[str, Any], blobs: Sequence[Mapping[str, Any]]
) -> None:
    """Store a checkpoint row (replacing one stored under the same id) and channel values.

    One executemany for the values: a value already stored at that version stays (the
    same version is the same value).
    """
    kind = family_of(executor)
    await executor.execute(_put_checkpoint(kind), dict(row))
    if blobs:
        await executor.execute(_put_blobs(kind), [dict(blob) for blob in blobs])


async def put_writes(
    executor: Executor,
    regular: Sequence[Mapping[str, Any]],
    special: Sequence[Mapping[str, Any]],
) -> None:
    """Store pending writes: a ``regular`` one already stored (same task and index) is
    kept, a ``special`` one (LangGraph's errors, interrupts, resumes) replaces it."""
    kind = family_of(executor)
    if regular:
        await executor.execute(
            insert_ignore(kind, WRITES, {}, key=_WRITE_KEY), [dict(row) for row in regular]
        )
    if special:
        replace = upsert(
            kind,
            WRITES,
            {},
            key=_WRITE_KEY,
            update=lambda new: {n: new[n] for n in ("channel", "task_path", "value")},
        )
        await executor.execute(replace, [dict(row) for row in special])


async def checkpoint(
    executor: Executor, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None
) -> Row[Any] | None:
    """The checkpoint row ``checkpoint_id`` of the scope, or its latest (``None``)."""
    params = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns}
    if checkpoint_id:
        params["checkpoint_id"] = checkpoint_id
    found: Row[Any] | None = (
        await executor.execute(_get_checkpoint(bool(checkpoint_id)), params)
    ).one_or_none()
    return found


async def checkpoints_page(
    executor: Executor,
    *,
    thread_id: str | None,
    checkpoint_ns: str | None,
    checkpoint_id: str | None,
    before_id: str | None,
    run_id: str | None,
    after: tuple[str, str, str] | None,
    limit: int,
) -> list[Row[Any]]:
    """Checkpoint rows newest first (by checkpoint id, then thread and namespace, all
    descending), each given condition applied; ``after``: the (checkpoint id, thread,
    namespace) of the last row of the previous page."""
    c = CHECKPOINTS.c
    where: list[Any] = []
    if thread_id is not None:
        where.append(c.thread_id == thread_id)
    if checkpoint_ns is not None:
        where.append(c.checkpoint_ns == checkpoint_ns)
    if checkpoint_id is not None:
        where.append(c.checkpoint_id == checkpoint_id)
    if before_id is not None:
        where.append(c.checkpoint_id < before_id)
    if run_id is not None:
        where.append(c.run_id == run_id)
    if after is not None:
        where.append(
            tuple_(c.checkpoint_id, c.thread_id, c.checkpoint_ns)
            < tuple_(*(literal(part) for part in after))
        )
    stmt: Select[Any] = (
        select(CHECKPOINTS)
        .where(*where)
        .order_by(c.checkpoint_id.desc(), c.thread_id.desc(), c.checkpoint_ns.desc())
        .limit(limit)
    )
    return list((await executor.execute(stmt)).all())


async def writes_of(
    executor: Executor, thread_id: str, checkpoint_ns: str, checkpoint_ids: Sequence[str]
) -> list[Row[Any]]:
    """The pending-write rows of the scope's checkpoints ``checkpoint_ids``."""
    params = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "ids": list(checkpoint_ids)}
    return list((await executor.execute(_get_writes(), params)).all())


async def blobs_of(
    executor: Executor, thread_id: str, checkpoint_ns: str, pairs: Sequence[tuple[str, str]]
) -> list[tuple[str, str, Any]]:
    """The stored (``channel``, ``version``, ``value``) of the scope's ``pairs``."""
    params = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "pairs": list(pairs)}
    rows = (await executor.execute(_get_blobs(), params)).all()
    return [(row.channel, row.version, row.value) for row in rows]


async def delete_thread(executor: Executor, thread_id: str) -> None:
    """Delete every checkpoint, channel value and write of a thread (all namespaces)."""
    for table in (WRITES, BLOBS, CHECKPOINTS):
        await executor.execute(delete(table).where(table.c.thread_id == thread_id))


async def delete_runs(executor: Executor, run_ids: Sequence[str]) -> None:
    """Delete the checkpoints of ``run_ids`` and their writes (their channel values stay:
    a value may be shared with checkpoints that stay). Reads every thread."""
    c = CHECKPOINTS.c
    keys = (
        await executor.execute(
            select(c.thread_id, c.checkpoint_ns, c.checkpoint_id).where(c.run_id.in_(run_ids))
        )
    ).all()
    for key in keys:
        for table in (WRITES, CHECKPOINTS):
            await executor.execute(
                delete(table).where(
                    table.c.thread_id == key.thread_id,
                    table.c.checkpoint_ns == key.checkpoint_ns,
                    table.c.checkpoint_id == key.checkpoint_id,
                )
            )


async def thread_has_checkpoints(executor: Executor, thread_id: str) -> bool:
    """Whether the thread holds any checkpoint."""
    c = CHECKPOINTS.c
    found = await executor.execute(select(c.checkpoint_id).where(c.thread_id == thread_id).limit(1))
    return found.first() is not None


async def copy_thread(executor: Executor, source: str, target: str) -> None:
    """Copy every row of thread ``source`` to thread ``target``, as stored, server-side."""
    for table in (CHECKPOINTS, BLOBS, WRITES):
        names = [column.name for column in table.c]
        copied = [
            literal(target, table.c.thread_id.type).label("thread_id")
            if name == "thread_id"
            else table.c[name]
            for name in names
        ]
        await executor.execute(
            insert(table).from_select(names, select(*copied).where(table.c.thread_id == source))
        )


async def latest_per_namespace(executor: Executor, thread_id: str) -> list[tuple[str, str]]:
    """(namespace, latest checkpoint id) of each namespace of the thread."""
    c = CHECKPOINTS.c
    rows = (
        await executor.execute(
            select(c.checkpoint_ns, func.max(c.checkpoint_id))
            .where(c.thread_id == thread_id)
            .group_by(c.checkpoint_ns)
        )
    ).all()
    return [(str(ns), str(kept)) for ns, kept in rows]


async def keep_only_checkpoint(
    executor: Executor, thread_id: str, checkpoint_ns: str, kept_id: str
) -> Any:
    """Delete every checkpoint of the scope but ``kept_id``, and their writes; return the
    kept checkpoint's stored payload (to learn which channel values it reads)."""
    c = CHECKPOINTS.c
    where = _in_scope(CHECKPOINTS, thread_id, checkpoint_ns)
    await executor.execute(delete(CHECKPOINTS).where(*where, c.checkpoint_id != kept_id))
    await executor.execute(
        delete(WRITES).where(
            *_in_scope(WRITES, thread_id, checkpoint_ns), WRITES.c.checkpoint_id != kept_id
        )
    )
    return (
        await executor.execute(select(c.checkpoint).where(*where, c.checkpoint_id == kept_id))
    ).scalar_one()


async def blob_versions(
    executor: Executor, thread_id: str, checkpoint_ns: str
) -> list[tuple[str, str]]:
    """(channel, version) of every channel value stored in the scope."""
    c = BLOBS.c
    rows = (
        await executor.execute(
            select(c.channel, c.version).where(*_in_scope(BLOBS, thread_id, checkpoint_ns))
        )
    ).all()
    return [(str(channel), str(version)) for channel, version in rows]


async def delete_blob(
    executor: Executor, thread_id: str, checkpoint_ns: str, channel: str, version: str
) -> None:
    """Delete one channel value of the scope."""
    await executor.execute(
        delete(BLOBS).where(
            *_in_scope(BLOBS, thread_id, checkpoint_ns),
            BLOBS.c.channel == channel,
            BLOBS.c.version == version,
        )
    )
