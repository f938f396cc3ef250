"""Column types shared by the tables and the migrations.

Revision files import this module (never the models), so everything here must stay
importable and stable: a migration written today renders these types by name.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, LargeBinary, String, Text, func, literal_column
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from convostore import codec, encryption
from convostore.errors import ConfigurationError, SerializationError
from convostore.sql.profile import profile_of, stored_profile

__all__ = [
    "ClearOnlyText",
    "CompressedJSON",
    "SealableText",
    "SearchText",
    "SearchVector",
    "UTCDateTime",
    "feeds_in_rows",
    "key_string",
    "long_text",
    "require_search_index",
    "search_text",
    "search_text_mysql",
    "writes_search_index",
]


class CompressedJSON(TypeDecorator[Any]):
    """A JSON value stored as compact bytes, compressed above a size threshold.

    The stored format (one header byte naming the codec, then the body) is described in
    :mod:`convostore.codec`. ``None`` is stored as SQL ``NULL``. Values that are not exactly
    JSON raise :class:`~convostore.errors.SerializationError` before any SQL is sent; so do
    corrupt stored bytes and payloads that would expand beyond ``max_size``.

    On an engine with a keyring (:mod:`convostore.encryption`) values are written in an
    encrypted envelope and read back from plain, old-key and current-key rows alike.

    Args:
        threshold: Compress JSON longer than this many bytes.
        max_size: Refuse to write or expand a JSON document larger than this.
    """

    impl = LargeBinary
    cache_ok = True

    def __init__(
        self,
        threshold: int = codec.DEFAULT_THRESHOLD,
        max_size: int = codec.DEFAULT_MAX_SIZE,
    ) -> None:
        super().__init__()
        self.threshold = threshold
        self.max_size = max_size

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            # Plain BLOB stops at 64 KiB; conversations carry megabytes.
            return dialect.type_descriptor(mysql.LONGBLOB())
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: Any, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        if isinstance(value, codec.Encoded):
            data = value.data
        else:
            data = codec.encode(value, threshold=self.threshold, max_size=self.max_size)
        # Sealed here rather than in codec.Encoded: every write path binds through this type.
        keyring = _keyring(dialect)
        if keyring is not None and keyring.current is not None:
            return keyring.seal(data)
        return data

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        data = bytes(value)
        if data[:1] == b"\x10":
            data = encryption.open_payload(data, _keyring(dialect))
        return codec.decode(data, max_size=self.max_size)

    def __repr__(self) -> str:
        args = []
        if self.threshold != codec.DEFAULT_THRESHOLD:
            args.append(f"threshold={self.threshold}")
        if self.max_size != codec.DEFAULT_MAX_SIZE:
            args.append(f"max_size={self.max_size}")
        return f"CompressedJSON({', '.join(args)})"


class SealableText(TypeDecorator[str]):
    """Unbounded text (as :func:`long_text`), sealed when the engine stores nothing in clear.

    On an engine whose keyring has ``clear_text=False`` a value is stored as
    :data:`convostore.encryption.TEXT_PREFIX` followed by its encrypted envelope in
    base64; such values read back as the text they hold on any engine with the key, and
    plain values read back as they are. So that a plain value is never mistaken for a
    sealed one, a value that itself starts with the prefix is sealed whenever the engine
    has a key to write with.
    """

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.LONGTEXT())
        return self.impl_instance

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        keyring = _keyring(dialect)
        if value is None or keyring is None or keyring.current is None:
            return value
        if not keyring.clear_text or value.startswith(encryption.TEXT_PREFIX):
            return encryption.seal_text(value, keyring)
        return value

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None or not value.startswith(encryption.TEXT_PREFIX):
            return value
        return encryption.open_text(value, _keyring(dialect))

    def __repr__(self) -> str:
        return "SealableText()"


class ClearOnlyText(TypeDecorator[str]):
    """A ``VARCHAR(length)`` of text derived from messages (a preview): ``NULL`` when the
    engine's keyring stores nothing in clear (``clear_text=False``)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is not None and not _clear_text(dialect):
            return None
        return value

    def __repr__(self) -> str:
        return f"ClearOnlyText({getattr(self.impl_instance, 'length', None)!r})"


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp with microseconds on every backend.

    PostgreSQL stores ``timestamptz``; SQLite and MySQL/MariaDB store the UTC wall time
    (``DATETIME(6)`` on MySQL/MariaDB). Values read back are always aware and in UTC.
    Naive datetimes are refused: their zone is unknown.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise SerializationError("naive datetime: give a timezone-aware value")
        value = value.astimezone(UTC)
        if dialect.name == "postgresql":
            return value
        return value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def __repr__(self) -> str:
        return "UTCDateTime()"


class SearchText(TypeDecorator[str]):
    """The words a message is found by (:func:`convostore.search.feed`), in clear text.

    Unbounded text, like :func:`long_text`. An engine made with ``search_index=False``, or
    whose keyring stores nothing in clear, writes ``NULL`` (:func:`writes_search_index`):
    the message is then not indexed.
    """

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        # Not through dialect.type_descriptor(), which on PostgreSQL adapts Text to its
        # VARCHAR string type.
        if dialect.name in ("mysql", "mariadb"):
            return search_text_mysql()
        return Text()

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return _feed_to_write(value, dialect)

    def __repr__(self) -> str:
        return "SearchText()"


def _feed_to_write(value: str | None, dialect: Dialect) -> str | None:
    # The feed as given, or NULL on an engine that writes none (writes_search_index).
    return value if value is not None and writes_search_index(dialect) else None


def _keyring(dialect: Dialect) -> encryption.Keyring | None:
    # The engine's profile (convostore.sql.profile); none on a dialect convostore never
    # saw (a migration rendering offline): no keyring.
    profile = stored_profile(dialect)
    return None if profile is None else profile.keyring


def _clear_text(dialect: Dialect) -> bool:
    profile = stored_profile(dialect)
    return profile is None or profile.clear_text


def writes_search_index(target: Any) -> bool:
    """Whether an engine (or its dialect) writes the search feed: not with
    ``search_index=False``, nor with a keyring that stores nothing in clear (see
    :attr:`~convostore.sql.profile.EngineProfile.writes_search_index`)."""
    profile = stored_profile(getattr(target, "dialect", target))
    return profile is None or profile.writes_search_index


def feeds_in_rows(target: Any) -> bool:
    """Whether an engine's appends compute the search feed and write it with the row:
    as :func:`writes_search_index`, but never on SQLite, whose index catches up after the
    append (:mod:`convostore.sql.search_index`)."""
    dialect = getattr(target, "dialect", target)
    return dialect.name != "sqlite" and writes_search_index(dialect)


def require_search_index(target: Any, what: str) -> None:
    """Refuse ``what`` (a feature that reads the search index) on an engine that writes none.

    Raises:
        ConfigurationError: The engine was made with ``search_index=False``, or its keyring
            stores nothing in clear.
    """
    profile = profile_of(target)
    if not profile.search_index:
        raise ConfigurationError(
            f"{what} needs the search index, and this engine was created with "
            "search_index=False: messages it writes are not indexed"
        )
    encryption.require_clear_text(target, what)


class SearchVector(TypeDecorator[str]):
    """PostgreSQL's form of :class:`SearchText`: a ``tsvector`` made from the feed as it is
    written (``to_tsvector('simple', feed)``), so ranking reads it instead of parsing text.
    Whether the feed is written at all is decided as for :class:`SearchText`."""

    impl = postgresql.TSVECTOR
    cache_ok = True

    def bind_expression(self, bindvalue: Any) -> Any:
        return func.to_tsvector(literal_column("'simple'::regconfig"), bindvalue)

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return _feed_to_write(value, dialect)

    def __repr__(self) -> str:
        return "SearchVector()"


def search_text_mysql() -> mysql.LONGTEXT:
    """MySQL/MariaDB's ``search_text``: ``LONGTEXT`` compared byte for byte (the feed is
    already case-folded; the default collation would also equate a dotless i and an i)."""
    return mysql.LONGTEXT(charset="utf8mb4", collation="utf8mb4_bin")


def search_text() -> TypeEngine[str]:
    """The type of the ``search_text`` columns: :class:`SearchText`, a ``tsvector``
    (:class:`SearchVector`) on PostgreSQL."""
    return SearchText().with_variant(SearchVector(), "postgresql")


def key_string(length: int) -> String:
    """A ``VARCHAR(length)`` for ids that compares byte for byte on every backend.

    MySQL/MariaDB's default collations fold case and accents (so ``"Alice" == "alice"``),
    which would let one tenant's key match another's; the binary collation keeps ids exact
    as they are on SQLite and PostgreSQL.
    """
    return String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
    )


def long_text() -> Text:
    """Unbounded text: ``TEXT`` on SQLite and PostgreSQL, ``LONGTEXT`` on MySQL/MariaDB."""
    return Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
