"""LangGraph: a checkpointer (``BaseCheckpointSaver``) on convostore's schema, on any backend.

::

    from convostore.integrations.langgraph import ConvostoreSaver

    async with ConvostoreSaver.from_url("postgresql://localhost/app") as saver:
        graph = builder.compile(checkpointer=saver)
        await graph.ainvoke(inputs, {"configurable": {"thread_id": "t1"}})

    saver = ConvostoreSaver(engine)  # an engine from convostore.connect(); you dispose of it

What LangGraph's own savers do, on SQLite, PostgreSQL (directly or behind PgBouncer with
``?pgbouncer=transaction``) and MySQL/MariaDB alike, with every optional capability:
``delete_for_runs``, ``copy_thread`` and ``prune`` (``"keep_latest"`` or ``"delete"``).

Storage (tables of revision 0006): ``langgraph_checkpoints`` holds each checkpoint without
its channel values, ``langgraph_checkpoint_blobs`` each channel's value once per version
(a step stores only the channels it changed), ``langgraph_checkpoint_writes`` the pending
writes of each checkpoint's tasks. Every payload is the output of the saver's serializer
(LangGraph's ``JsonPlusSerializer`` unless ``serde=`` says otherwise), stored in a
``CompressedJSON`` column: compressed above a threshold, and encrypted on an engine with a
keyring (:mod:`convostore.encryption`). Serializing and compressing happen before the
transaction starts.

Every call is one transaction of convostore's :class:`~convostore.sql.runner.TransactionRunner`:
transient conflicts are retried, the engine's deadline bounds the call, and database
errors surface as :class:`~convostore.errors.ConvostoreError` subclasses.

Order: LangGraph orders a thread's checkpoints by checkpoint id (a UUIDv6, so creation
order); so does this saver, comparing ids byte for byte on every backend. ``list`` filters
metadata in Python after decoding it (metadata may be encrypted, and nothing queries inside
a compressed payload), paging through the matching scope, except ``run_id``, which has a
column. ``delete_for_runs`` and ``list(None, ...)`` read every thread: they are
administrative calls, and no index serves them.

``delete_for_runs`` leaves the channel values of the deleted checkpoints in place (a value
may be shared with checkpoints that stay); ``prune`` and ``delete_thread`` remove what no
kept checkpoint reads. Like LangGraph's own savers, ``prune(strategy="keep_latest")`` does
not walk ``DeltaChannel`` histories: keep the whole thread for graphs that use them.

The sync methods (``get_tuple``, ``list``, ``put``, ..., which ``graph.invoke`` calls) run
on one background event loop per process, on a second engine for the same URL and keyring
(an asyncio driver's connection belongs to the loop that opened it), opened the first time
sync code uses the saver.

Requires ``langgraph`` (``pip install convostore[langgraph]``).
"""

from __future__ import annotations

import base64
import binascii
import builtins
import random
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    SerializerProtocol,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from sqlalchemy import URL, Row
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import migrate as migrations
from convostore.errors import ConfigurationError, ConflictError, SerializationError, ValidationError
from convostore.integrations._sync_bridge import SyncBridge
from convostore.rules import (
    LANGGRAPH_CHANNEL_LENGTH,
    LANGGRAPH_CHECKPOINT_ID_LENGTH,
    LANGGRAPH_NS_LENGTH,
    LANGGRAPH_TASK_ID_LENGTH,
    LANGGRAPH_TASK_PATH_LENGTH,
    LANGGRAPH_THREAD_ID_LENGTH,
)
from convostore.settings import redact
from convostore.sql.dml import Executor
from convostore.sql.engine import create_engine
from convostore.sql.repositories import langgraph as repo
from convostore.sql.runner import TransactionRunner

__all__ = ["ConvostoreSaver", "SaverOpening"]

T = TypeVar("T")

_PAGE = 100
"""Checkpoints read per transaction by ``list`` when it filters metadata or has no limit."""

_EMPTY = ["empty", ""]
"""How a channel with no value at a version is stored (LangGraph's ``("empty", b"")``)."""


@dataclass(frozen=True, slots=True)
class _Scope:
    thread_id: str
    checkpoint_ns: str


class ConvostoreSaver(BaseCheckpointSaver[str]):
    """LangGraph's checkpointer, stored by convostore (see the module's docstring).

    Args:
        engine: An engine from :func:`convostore.connect` (or your own), which the caller
            disposes of. Give this or ``url``.
        url: Open an engine for this URL (any form convostore accepts); :meth:`aclose`
            disposes of it. :meth:`from_url` does this inside a context manager.
        migrate: As for :func:`convostore.connect`, when the saver first uses the engine
            (SQLite is migrated by default, servers are only checked).
        serde: LangGraph's serializer for checkpoints, metadata and writes (default:
            ``JsonPlusSerializer``).

    Raises:
        ConfigurationError: Both ``engine`` and ``url`` were given.
    """

    def __init__(
        self,
        engine: AsyncEngine | None = None,
        *,
        url: str | URL | None = None,
        migrate: bool | None = None,
        serde: SerializerProtocol | None = None,
    ) -> None:
        if engine is not None and url is not None:
            raise ConfigurationError("give engine or url, not both")
        super().__init__(serde=serde)
        self._owns_engine = engine is None
        self._runner = TransactionRunner(engine if engine is not None else create_engine(url))
        self._migrate = migrate
        self._twin: ConvostoreSaver | None = None

    @classmethod
    def from_url(
        cls,
        url: str | URL | None = None,
        *,
        migrate: bool | None = None,
        serde: SerializerProtocol | None = None,
    ) -> SaverOpening:
        """A saver on a new engine for ``url``, disposed of when the block ends.

        ``async with ConvostoreSaver.from_url(url) as saver:`` for async graphs,
        ``with ConvostoreSaver.from_url(url) as saver:`` for sync ones.
        """
        return SaverOpening(lambda: cls(url=url, migrate=migrate, serde=serde))

    @property
    def engine(self) -> AsyncEngine:
        """The engine this saver runs on."""
        return self._runner.engine

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={redact(self.engine.url)!r})"

    # --- setup and teardown --------------------------------------------------------------

    async def asetup(self) -> None:
        """Migrate the database to head (LangGraph's savers create their tables here)."""
        await migrations.prepare(self.engine, migrate=True)

    def setup(self) -> None:
        """Sync :meth:`asetup`."""
        _bridge.run(self._sync().asetup())

    async def aclose(self) -> None:
        """Dispose of the engine this saver opened (``url=``), and of its sync twin."""
        self._close_twin()
        if self._owns_engine:
            await self.engine.dispose()

    def close(self) -> None:
        """Sync :meth:`aclose`, for a saver used only from sync code."""
        self._close_twin()
        if self._owns_engine:
            _bridge.run(self.engine.dispose())

    # --- async: on the caller's loop -----------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names (its ``checkpoint_id``, else the latest of its
        thread and namespace), with its channel values and pending writes; ``None`` if
        there is none."""
        scope = _scope(config)
        checkpoint_id = get_checkpoint_id(config)
        await self._ready()

        async def work(db: Executor) -> CheckpointTuple | None:
            row = await repo.checkpoint(
                db, scope.thread_id, scope.checkpoint_ns, checkpoint_id or None
            )
            if row is None:
                return None
            return (await self._tuples(db, [row]))[0]

        return await self._runner.run(work, read=True)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints, newest first: of ``config``'s thread (and namespace, and checkpoint,
        when it names them; every thread for ``None``), whose metadata has every key and
        value of ``filter``, older than ``before``'s checkpoint, at most ``limit``."""
        if limit is not None and limit <= 0:
            return
        thread_id = namespace = checkpoint_id = before_id = None
        if config is not None:
            configurable = config["configurable"]
            thread_id = _thread_id(configurable["thread_id"])
            if configurable.get("checkpoint_ns") is not None:
                namespace = _namespace(configurable["checkpoint_ns"])
            checkpoint_id = get_checkpoint_id(config) or None
        if before is not None:
            before_id = get_checkpoint_id(before) or None
        wanted = dict(filter or {})
        run_id = wanted.get("run_id")
        await self._ready()
        left = limit
        after: tuple[str, str, str] | None = None
        while True:
            size = _PAGE if left is None or wanted else min(left, _PAGE)
            page: dict[str, Any] = {
                "thread_id": thread_id,
                "checkpoint_ns": namespace,
                "checkpoint_id": checkpoint_id,
                "before_id": before_id,
                "run_id": run_id if isinstance(run_id, str) else None,
                "after": after,
                "limit": size,
            }

            async def work(
                db: Executor, page: dict[str, Any] = page
            ) -> tuple[builtins.list[CheckpointTuple], Any]:
                rows = await repo.checkpoints_page(db, **page)
                kept = [
                    row for row in rows if _matches(self._load(row.checkpoint_metadata), wanted)
                ]
                return await self._tuples(db, kept), rows

            tuples, rows = await self._runner.run(work, read=True)
            for found in tuples:
                yield found
                if left is not None:
                    left -= 1
                    if left == 0:
                        return
            if len(rows) < size:
                return
            last = rows[-1]
            after = (last.checkpoint_id, last.thread_id, last.checkpoint_ns)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint, and the values of the channels in ``new_versions``; a
        checkpoint stored again under the same id is replaced."""
        configurable = config["configurable"]
        scope = _scope(config)
        parent_id = configurable.get("checkpoint_id")
        stored = dict(checkpoint)
        values: dict[str, Any] = stored.pop("channel_values", {})
        checkpoint_id = _checked("checkpoint id", checkpoint["id"], LANGGRAPH_CHECKPOINT_ID_LENGTH)
        full_metadata = get_checkpoint_metadata(config, metadata)
        run_id = full_metadata.get("run_id")
        row = {
            "thread_id": scope.thread_id,
            "checkpoint_ns": scope.checkpoint_ns,
            "checkpoint_id": checkpoint_id,
            "parent_checkpoint_id": parent_id or None,
            "run_id": (
                _checked("run_id", str(run_id), LANGGRAPH_THREAD_ID_LENGTH)
                if run_id is not None
                else None
            ),
            "checkpoint": self._dump(stored),
            "checkpoint_metadata": self._dump(full_metadata),
            "created_at": datetime.now(UTC),
        }
        blobs = [
            {
                "thread_id": scope.thread_id,
                "checkpoint_ns": scope.checkpoint_ns,
                "channel": _checked("channel", channel, LANGGRAPH_CHANNEL_LENGTH),
                "version": _version(version),
                "value": self._dump(values[channel]) if channel in values else _EMPTY,
            }
            for channel, version in new_versions.items()
        ]
        await self._ready()

        await self._runner.run(lambda db: repo.put_checkpoint(db, row, blobs))
        return {
            "configurable": {
                "thread_id": configurable["thread_id"],
                "checkpoint_ns": scope.checkpoint_ns,
                "checkpoint_id": checkpoint_id,
            }
        }

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store the pending writes of task ``task_id`` on ``config``'s checkpoint.

        A regular write already stored (same task and index) is kept, as a retried task
        writes the same values; LangGraph's special writes (errors, interrupts, resumes)
        replace the stored one.
        """
        scope = _scope(config)
        checkpoint_id = _checked(
            "checkpoint id", config["configurable"]["checkpoint_id"], LANGGRAPH_CHECKPOINT_ID_LENGTH
        )
        task = _checked("task_id", task_id, LANGGRAPH_TASK_ID_LENGTH)
        path = _checked("task_path", task_path, LANGGRAPH_TASK_PATH_LENGTH, empty=True)
        rows = [
            {
                "thread_id": scope.thread_id,
                "checkpoint_ns": scope.checkpoint_ns,
                "checkpoint_id": checkpoint_id,
                "task_id": task,
                "idx": WRITES_IDX_MAP.get(channel, idx),
                "channel": _checked("channel", channel, LANGGRAPH_CHANNEL_LENGTH),
                "task_path": path,
                "value": self._dump(value),
            }
            for idx, (channel, value) in enumerate(writes)
        ]
        if not rows:
            return
        await self._ready()
        regular = [row for row in rows if row["idx"] >= 0]
        special = [row for row in rows if row["idx"] < 0]
        await self._runner.run(lambda db: repo.put_writes(db, regular, special))

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, channel value and write of a thread (all namespaces)."""
        thread = _thread_id(thread_id)
        await self._ready()

        await self._runner.run(lambda db: repo.delete_thread(db, thread))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints whose metadata names one of ``run_ids``, and their writes.

        Reads every thread (no index serves a run id across threads): an administrative call.
        """
        runs = sorted({str(run_id) for run_id in run_ids})
        if not runs:
            return
        await self._ready()

        await self._runner.run(lambda db: repo.delete_runs(db, runs))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, channel value and write of a thread to a new thread.

        Rows are copied as stored (still compressed, still encrypted), in one transaction.
        A source with no checkpoints copies nothing.

        Raises:
            ConflictError: The target thread already has checkpoints.
        """
        source = _thread_id(source_thread_id)
        target = _thread_id(target_thread_id)
        if source == target:
            raise ValidationError("copy_thread needs two different threads")
        await self._ready()

        async def work(db: Executor) -> None:
            if await repo.thread_has_checkpoints(db, target):
                raise ConflictError(f"thread {target!r} already has checkpoints")
            await repo.copy_thread(db, source, target)

        await self._runner.run(work)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Prune threads: ``"keep_latest"`` keeps the latest checkpoint of each namespace
        (with its writes and the channel values it reads), ``"delete"`` deletes them all.

        Raises:
            ValidationError: ``strategy`` is neither.
        """
        if strategy not in ("keep_latest", "delete"):
            raise ValidationError(
                f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'"
            )
        threads = sorted({_thread_id(thread_id) for thread_id in thread_ids})
        if strategy == "delete":
            for thread in threads:
                await self.adelete_thread(thread)
            return
        await self._ready()
        for thread in threads:

            async def work(db: Executor, thread: str = thread) -> None:
                for ns, kept_id in await repo.latest_per_namespace(db, thread):
                    await self._keep_only(db, _Scope(thread, ns), kept_id)

            await self._runner.run(work)

    # --- sync: on the background loop ----------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Sync :meth:`aget_tuple` (see the module's docstring)."""
        return _bridge.run(self._sync().aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Sync :meth:`alist` (read in full before the first item is returned)."""
        found = _bridge.run(
            _collect(self._sync().alist(config, filter=filter, before=before, limit=limit))
        )
        return iter(found)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Sync :meth:`aput`."""
        return _bridge.run(self._sync().aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Sync :meth:`aput_writes`."""
        _bridge.run(self._sync().aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        """Sync :meth:`adelete_thread`."""
        _bridge.run(self._sync().adelete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Sync :meth:`adelete_for_runs`."""
        _bridge.run(self._sync().adelete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Sync :meth:`acopy_thread`."""
        _bridge.run(self._sync().acopy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Sync :meth:`aprune`."""
        _bridge.run(self._sync().aprune(thread_ids, strategy=strategy))

    def get_next_version(self, current: str | None, channel: None) -> str:
        """The version after ``current``: an increasing counter and a random tiebreak, as
        LangGraph's own savers write them (``"<32 digits>.<16 digits>"``)."""
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            number = int(current.split(".")[0])
        return f"{number + 1:032}.{random.random():016}"

    # --- helpers -------------------------------------------------------------------------

    async def _ready(self) -> None:
        await migrations.prepare(self.engine, migrate=self._migrate)

    def _sync(self) -> ConvostoreSaver:
        """This saver on the background loop's twin engine (same URL, keyring, serde)."""
        if self._twin is None:
            twin = ConvostoreSaver(
                _bridge.twin_engine(self.engine), migrate=self._migrate, serde=self.serde
            )
            self._twin = twin
        return self._twin

    def _close_twin(self) -> None:
        if self._twin is not None:
            self._twin = None
            _bridge.forget(self.engine)

    def _dump(self, value: Any) -> builtins.list[str]:
        kind, data = self.serde.dumps_typed(value)
        return [kind, base64.b64encode(data).decode("ascii")]

    def _load(self, stored: Any) -> Any:
        try:
            kind, text = stored
            data = base64.b64decode(text, validate=True)
        except (TypeError, ValueError, binascii.Error) as exc:
            raise SerializationError("a stored LangGraph payload is not [type, base64]") from exc
        return self.serde.loads_typed((kind, data))

    async def _tuples(
        self, db: Executor, rows: Sequence[Row[Any]]
    ) -> builtins.list[CheckpointTuple]:
        """The tuples of checkpoint ``rows`` (all read in the caller's transaction)."""
        if not rows:
            return []
        checkpoints = [self._load(row.checkpoint) for row in rows]
        keys = [(row.thread_id, row.checkpoint_ns, row.checkpoint_id) for row in rows]
        writes: dict[tuple[str, str, str], builtins.list[Any]] = {key: [] for key in keys}
        blobs: dict[tuple[str, str, str, str], Any] = {}
        # One scope at a time (a page of list(None) may span threads), by cached statements.
        scopes: dict[tuple[str, str], builtins.list[int]] = {}
        for index, key in enumerate(keys):
            scopes.setdefault(key[:2], []).append(index)
        for (thread, ns), indexes in scopes.items():
            ids = [keys[i][2] for i in indexes]
            for write in await repo.writes_of(db, thread, ns, ids):
                writes[(thread, ns, write.checkpoint_id)].append(write)
            wanted = sorted(
                {
                    (channel, _version(version))
                    for i in indexes
                    for channel, version in checkpoints[i].get("channel_versions", {}).items()
                }
            )
            for first in range(0, len(wanted), _PAGE):
                chunk = wanted[first : first + _PAGE]
                for channel, version, value in await repo.blobs_of(db, thread, ns, chunk):
                    blobs[(thread, ns, channel, version)] = value
        return [
            self._tuple(row, checkpoint, blobs, writes[key])
            for row, checkpoint, key in zip(rows, checkpoints, keys, strict=True)
        ]

    def _tuple(
        self,
        row: Row[Any],
        checkpoint: dict[str, Any],
        blobs: Mapping[tuple[str, str, str, str], Any],
        writes: Sequence[Row[Any]],
    ) -> CheckpointTuple:
        values: dict[str, Any] = {}
        for channel, version in checkpoint.get("channel_versions", {}).items():
            stored = blobs.get((row.thread_id, row.checkpoint_ns, channel, _version(version)))
            if stored is not None and stored[0] != "empty":
                values[channel] = self._load(stored)
        ordered = sorted(writes, key=lambda w: writes_sort_key(w.task_path, w.task_id, w.idx))
        pending: builtins.list[PendingWrite] = [
            (w.task_id, w.channel, self._load(w.value)) for w in ordered
        ]
        configurable = {
            "thread_id": row.thread_id,
            "checkpoint_ns": row.checkpoint_ns,
        }
        return CheckpointTuple(
            config={"configurable": {**configurable, "checkpoint_id": row.checkpoint_id}},
            checkpoint={**checkpoint, "channel_values": values},
            metadata=self._load(row.checkpoint_metadata),
            parent_config=(
                {"configurable": {**configurable, "checkpoint_id": row.parent_checkpoint_id}}
                if row.parent_checkpoint_id
                else None
            ),
            pending_writes=pending,
        )

    async def _keep_only(self, db: Executor, scope: _Scope, kept_id: str) -> None:
        """Delete every checkpoint of ``scope`` but ``kept_id``, and what only they used."""
        stored = await repo.keep_only_checkpoint(db, scope.thread_id, scope.checkpoint_ns, kept_id)
        read = {
            (channel, _version(version))
            for channel, version in self._load(stored).get("channel_versions", {}).items()
        }
        for channel, version in await repo.blob_versions(db, scope.thread_id, scope.checkpoint_ns):
            if (channel, version) not in read:
                await repo.delete_blob(db, scope.thread_id, scope.checkpoint_ns, channel, version)


class SaverOpening:
    """What :meth:`ConvostoreSaver.from_url` returns: use it with ``async with`` or ``with``."""

    def __init__(self, make: Any) -> None:
        self._make = make
        self._saver: ConvostoreSaver | None = None

    async def __aenter__(self) -> ConvostoreSaver:
        self._saver = self._make()
        return self._saver

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._saver is not None:
            await self._saver.aclose()

    def __enter__(self) -> ConvostoreSaver:
        self._saver = self._make()
        return self._saver

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._saver is not None:
            self._saver.close()


def _checked(what: str, value: object, length: int, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, not {type(value).__name__}")
    if not value and not empty:
        raise ValidationError(f"{what} must not be empty")
    if len(value) > length:
        raise ValidationError(f"{what} is longer than {length} characters")
    return value


def _thread_id(value: object) -> str:
    # LangGraph accepts any thread id that prints (ints, UUIDs); it is stored as its text.
    text = value if isinstance(value, str) else str(value)
    return _checked("thread_id", text, LANGGRAPH_THREAD_ID_LENGTH)


def _namespace(value: object) -> str:
    return _checked("checkpoint_ns", value, LANGGRAPH_NS_LENGTH, empty=True)


def _version(value: object) -> str:
    return _checked("channel version", str(value), LANGGRAPH_CHECKPOINT_ID_LENGTH)


def _scope(config: RunnableConfig) -> _Scope:
    configurable = config["configurable"]
    return _Scope(
        _thread_id(configurable["thread_id"]), _namespace(configurable.get("checkpoint_ns", ""))
    )


def _matches(metadata: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return all(metadata.get(key) == value for key, value in wanted.items())


async def _collect(items: AsyncIterator[T]) -> list[T]:
    return [item async for item in items]


_bridge = SyncBridge("langgraph", "saver")
