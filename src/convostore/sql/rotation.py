"""Key rotation: move every stored value onto the keyring's current key, in short batches.

:func:`rotate` (the ``convostore rotate-keys`` command) walks each table that has a payload
column (:class:`~convostore.sql.types.CompressedJSON`), a sealable text
(:class:`~convostore.sql.types.SealableText`) or a preview
(:class:`~convostore.sql.types.ClearOnlyText`), in primary-key order, ``batch_size`` rows per
transaction. Each value not yet where it should be is rewritten with a compare-and-set
``UPDATE ... WHERE <key> AND <column> = <the bytes read>``: a value a writer changed in the
meantime is left alone (and counted), never overwritten with older content.

Killed at any point, nothing is lost: each batch commits whole or not at all, and every
value is readable with the old or the new key in between. Running it again continues: it
reads past what is already done and rewrites only what is left.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import LargeBinary, Table, Text, column, table
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import encryption
from convostore.encryption import Keyring
from convostore.errors import ConfigurationError, ConvostoreError
from convostore.sql.dml import Executor
from convostore.sql.engine import family
from convostore.sql.repositories import admin
from convostore.sql.runner import TransactionRunner
from convostore.sql.tables import Base
from convostore.sql.types import ClearOnlyText, CompressedJSON, SealableText
from convostore.transfer.reindex import drop_feeds

__all__ = ["DEFAULT_BATCH_SIZE", "Progress", "RotationReport", "rotate", "sealed_columns"]

DEFAULT_BATCH_SIZE = 500

Progress = Callable[[str, int, int], None]
"""Called after each committed batch: ``(table, rows read so far, values rewritten so far)``."""


@dataclass
class RotationReport:
    """What :func:`rotate` did, per ``table.column`` and in total."""

    rows: int = 0
    """Rows read."""
    rewritten: dict[str, int] = field(default_factory=dict)
    """Values rewritten, by ``table.column``."""
    changed_meanwhile: int = 0
    """Values a writer replaced between the read and the update (left as the writer wrote
    them; run again to cover them if that writer used another key)."""

    @property
    def total(self) -> int:
        """Every value rewritten."""
        return sum(self.rewritten.values())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``--json`` output)."""
        return {
            "rows": self.rows,
            "rewritten": dict(self.rewritten),
            "total": self.total,
            "changed_meanwhile": self.changed_meanwhile,
        }


@dataclass(frozen=True)
class _Walk:
    table: Table
    key: tuple[str, ...]
    payloads: tuple[str, ...]
    texts: tuple[str, ...]
    previews: tuple[str, ...]


def sealed_columns() -> dict[str, tuple[str, ...]]:
    """The columns rotation rewrites, by table name (payloads, sealable texts, previews)."""
    return {w.table.name: (*w.payloads, *w.texts, *w.previews) for w in _walks()}


def _walks() -> list[_Walk]:
    walks = []
    for t in Base.metadata.sorted_tables:
        kinds: dict[type[Any], list[str]] = {
            CompressedJSON: [],
            SealableText: [],
            ClearOnlyText: [],
        }
        for col in t.columns:
            for kind, names in kinds.items():
                if isinstance(col.type, kind):
                    names.append(col.name)
        if any(kinds.values()):
            walks.append(
                _Walk(
                    t,
                    tuple(c.name for c in t.primary_key.columns),
                    tuple(kinds[CompressedJSON]),
                    tuple(kinds[SealableText]),
                    tuple(kinds[ClearOnlyText]),
                )
            )
    return walks


async def rotate(
    engine: AsyncEngine,
    keyring: Keyring,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    encrypt_plain: bool = True,
    decrypt: bool = False,
    progress: Progress | None = None,
) -> RotationReport:
    """Re-encrypt every stored value onto ``keyring.current``.

    Values under another key are re-encrypted; plain payloads are encrypted too unless
    ``encrypt_plain=False``. With ``keyring.clear_text=False`` the ``message`` texts are
    sealed and previews set to ``NULL`` as well. With ``decrypt=True`` everything is
    written back in plain instead (previews are not restored: they come back with the
    next append). The keyring need not be installed on ``engine``: this reads and writes
    the stored bytes themselves.

    Run it after every writer has the new keyring: a writer still on the old current key
    keeps writing old-key values, which a later run picks up.

    Raises:
        ConfigurationError: ``keyring`` has no current key (and ``decrypt`` is off), or
            ``decrypt`` with ``clear_text=False``, or a batch size below 1.
        KeyNotFoundError: A value is under a key the keyring does not have; the batches
            before it are committed, nothing after it is touched.
        DecryptionError: A value fails authentication (as above).
    """
    if batch_size < 1:
        raise ConfigurationError("batch_size must be at least 1")
    if decrypt and not keyring.clear_text:
        raise ConfigurationError("decrypt=True writes clear text: use a clear_text=True keyring")
    if not decrypt and keyring.current is None:
        raise ConfigurationError("the keyring has no current key to rotate to")
    runner = TransactionRunner(engine)
    report = RotationReport()
    rewrite = _Rewrite(keyring, encrypt_plain=encrypt_plain, decrypt=decrypt)
    # MySQL/MariaDB compare text by a case- and pad-insensitive collation: the
    # compare-and-set compares the bytes instead.
    exact = family(engine) == "mysql"
    for walk in _walks():
        raw = table(
            walk.table.name,
            *(column(name, walk.table.c[name].type) for name in walk.key),
            *(column(name, LargeBinary()) for name in walk.payloads),
            *(column(name, Text()) for name in (*walk.texts, *walk.previews)),
        )
        after: tuple[Any, ...] | None = None
        rows = 0
        while True:
            # A retried batch starts from the same key: it reads again what it writes.
            start = after
            batch, done, missed = await runner.run(
                partial(
                    _batch,
                    raw=raw,
                    walk=walk,
                    rewrite=rewrite,
                    after=start,
                    size=batch_size,
                    exact=exact,
                )
            )
            # Counted once the batch has committed: a retried batch must not count twice.
            for name, count in done.items():
                report.rewritten[name] = report.rewritten.get(name, 0) + count
            report.changed_meanwhile += missed
            if not batch:
                break
            rows += len(batch)
            report.rows += len(batch)
            after = batch[-1]
            if progress is not None:
                progress(walk.table.name, rows, report.total)
            if len(batch) < batch_size:
                break
    if not decrypt and not keyring.clear_text:
        # The search index holds every message's words in clear: nothing of it may stay.
        report.rewritten["search_text"] = await drop_feeds(engine, batch_size=batch_size)
    return report


class _Rewrite:
    """What each stored value becomes, or ``None`` if it stays."""

    def __init__(self, keyring: Keyring, *, encrypt_plain: bool, decrypt: bool) -> None:
        self.keyring = keyring
        self.encrypt_plain = encrypt_plain
        self.decrypt = decrypt

    def payload(self, data: bytes) -> bytes | None:
        key_id = encryption.key_id_of(data)
        if self.decrypt:
            return None if key_id is None else self.keyring.open(data)
        if key_id == self.keyring.current:
            return None
        if key_id is None:
            return self.keyring.seal(data) if self.encrypt_plain else None
        return self.keyring.seal(self.keyring.open(data))

    def text(self, value: str) -> str | None:
        sealed = encryption.sealed_text_bytes(value)
        if sealed is None:
            if self.decrypt or self.keyring.clear_text:
                return None
            return encryption.seal_text(value, self.keyring)
        plain = encryption.open_text(value, self.keyring)
        if self.decrypt:
            return plain
        if encryption.key_id_of(sealed) == self.keyring.current:
            return None
        if self.keyring.clear_text and not plain.startswith(encryption.TEXT_PREFIX):
            return plain
        return encryption.seal_text(plain, self.keyring)

    def preview(self, value: str) -> bool:
        """Whether the preview is to be cleared."""
        return not self.decrypt and not self.keyring.clear_text


async def _batch(
    executor: Executor,
    *,
    raw: Any,
    walk: _Walk,
    rewrite: _Rewrite,
    after: tuple[Any, ...] | None,
    size: int,
    exact: bool,
) -> tuple[list[tuple[Any, ...]], dict[str, int], int]:
    """Rewrite one batch of rows after ``after``.

    Returns the keys of the rows read, the values rewritten by ``table.column``, and how
    many values a writer changed between the read and the update.
    """
    values_read = (*walk.payloads, *walk.texts, *walk.previews)
    rows = await admin.rotation_rows(executor, raw, walk.key, values_read, after, size)
    done: dict[str, int] = {}
    missed = 0
    width = len(walk.key)
    for row in rows:
        where = dict(zip(walk.key, row[:width], strict=True))
        values = row[width:]
        changes: list[tuple[str, Any, Any, bool]] = []
        for name, value in zip(walk.payloads, values, strict=False):
            if value is not None:
                new = _checked(rewrite.payload, bytes(value), walk, name, row[:width])
                if new is not None:
                    changes.append((name, bytes(value), new, False))
        texts = values[len(walk.payloads) :]
        for name, value in zip(walk.texts, texts, strict=False):
            if value is not None:
                new = _checked(rewrite.text, value, walk, name, row[:width])
                if new is not None:
                    changes.append((name, value, new, exact))
        for name, value in zip(walk.previews, texts[len(walk.texts) :], strict=True):
            if value is not None and rewrite.preview(value):
                changes.append((name, value, None, exact))
        for name, old, new, as_bytes in changes:
            if await admin.rewrite_if_unchanged(
                executor, raw, where, name, old, new, as_bytes=as_bytes
            ):
                column_name = f"{walk.table.name}.{name}"
                done[column_name] = done.get(column_name, 0) + 1
            else:
                missed += 1
    return [tuple(row[:width]) for row in rows], done, missed


def _checked(
    convert: Callable[[Any], Any], value: Any, walk: _Walk, name: str, key: Sequence[Any]
) -> Any:
    try:
        return convert(value)
    except ConvostoreError as exc:
        raise type(exc)(f"{walk.table.name}.{name} of row {tuple(key)!r}: {exc}") from exc
