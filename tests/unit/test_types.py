"""Column types: CompressedJSON and UTCDateTime, alone and through real engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, insert, select, text
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.dialects.mysql.mariadb import MariaDBDialect
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from convostore import codec, migrate
from convostore.database import SQLAlchemyDatabase
from convostore.errors import SerializationError
from convostore.sql.engine import create_engine
from convostore.sql.retry import translate_errors
from convostore.sql.tables import ContextMessageRecord, ContextSessionRecord
from convostore.sql.types import CompressedJSON, UTCDateTime

DIALECT_CLASSES: dict[str, type[Dialect]] = {
    "sqlite": sqlite.dialect,
    "postgresql": postgresql.dialect,
    "mysql": mysql.dialect,
    "mariadb": MariaDBDialect,
}
DIALECTS = {name: cls() for name, cls in DIALECT_CLASSES.items()}
NOW = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a new SQLite file migrated to head."""
    url = URL.create("sqlite+aiosqlite", database=str(tmp_path / "types.db"))
    await migrate.upgrade(url)
    engine = create_engine(url)
    yield engine
    await engine.dispose()


async def _add_session(session: AsyncSession, session_id: str = "s") -> None:
    await session.execute(
        insert(ContextSessionRecord).values(
            project="p", session_id=session_id, input_tokens=0, output_tokens=0,
            next_position=0, preview=None, created_at=NOW, updated_at=NOW,
        )
    )  # fmt: skip


def _message(content: Any, *, position: int = 0, created_at: Any = NOW) -> dict[str, Any]:
    return {
        "project": "p",
        "session_id": "s",
        "position": position,
        "role": "user",
        "content": content,
        "created_at": created_at,
    }


# -- CompressedJSON --------------------------------------------------------------------------


def test_compressed_json_is_cacheable() -> None:
    assert CompressedJSON.cache_ok is True
    assert UTCDateTime.cache_ok is True


@pytest.mark.parametrize(
    "column_type",
    [
        CompressedJSON(),
        CompressedJSON(threshold=100),
        CompressedJSON(max_size=1024),
        CompressedJSON(threshold=0, max_size=2**40),
    ],
    ids=repr,
)
def test_compressed_json_repr_evaluates_to_the_same_configuration(
    column_type: CompressedJSON,
) -> None:
    rebuilt = eval(repr(column_type), {"CompressedJSON": CompressedJSON})
    assert isinstance(rebuilt, CompressedJSON)
    assert (rebuilt.threshold, rebuilt.max_size) == (column_type.threshold, column_type.max_size)
    assert repr(rebuilt) == repr(column_type)


def test_compressed_json_repr_of_the_defaults_is_bare() -> None:
    assert repr(CompressedJSON()) == "CompressedJSON()"
    assert repr(CompressedJSON(threshold=100)) == "CompressedJSON(threshold=100)"
    assert repr(UTCDateTime()) == "UTCDateTime()"


@pytest.mark.parametrize("dialect", DIALECTS.values(), ids=DIALECTS.keys())
def test_compressed_json_none_passes_through(dialect: Dialect) -> None:
    column_type = CompressedJSON()
    assert column_type.process_bind_param(None, dialect) is None
    assert column_type.process_result_value(None, dialect) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [("sqlite", "BLOB"), ("postgresql", "BYTEA"), ("mysql", "LONGBLOB"), ("mariadb", "LONGBLOB")],
)
def test_compressed_json_column_per_dialect(name: str, expected: str) -> None:
    dialect = DIALECTS[name]
    impl = CompressedJSON().load_dialect_impl(dialect)
    if name in ("mysql", "mariadb"):
        assert isinstance(impl, mysql.LONGBLOB)
    else:
        assert not isinstance(impl, mysql.LONGBLOB)
    assert CompressedJSON().compile(dialect=dialect) == expected


def test_compressed_json_binds_the_codec_format() -> None:
    dialect = DIALECTS["sqlite"]
    small = CompressedJSON().process_bind_param({"a": 1}, dialect)
    assert small == b'\x01{"a":1}'
    big = CompressedJSON().process_bind_param(["x" * 600], dialect)
    assert big is not None
    assert big[0] == codec.ZSTD
    assert CompressedJSON(threshold=1000).process_bind_param(["x" * 600], dialect) == (
        b'\x01["' + b"x" * 600 + b'"]'
    )


def test_compressed_json_stores_pre_encoded_payloads_as_they_are() -> None:
    encoded = codec.Encoded(codec.encode(["x" * 600]))
    assert CompressedJSON().process_bind_param(encoded, DIALECTS["sqlite"]) == encoded.data


def test_compressed_json_enforces_its_max_size() -> None:
    column_type = CompressedJSON(max_size=10)
    with pytest.raises(SerializationError):
        column_type.process_bind_param("x" * 20, DIALECTS["sqlite"])
    stored = codec.encode("x" * 20)
    with pytest.raises(SerializationError):
        column_type.process_result_value(stored, DIALECTS["sqlite"])


def test_compressed_json_reads_memoryview_results() -> None:
    # Some drivers (asyncpg, psycopg) return buffers rather than bytes.
    stored = memoryview(codec.encode({"k": "v" * 1000}))
    assert CompressedJSON().process_result_value(stored, DIALECTS["postgresql"]) == {
        "k": "v" * 1000
    }


async def test_round_trip_through_sqlite_stores_header_bytes(sqlite_engine: AsyncEngine) -> None:
    values = [{"small": "😀\x00"}, ["x" * 5000]]
    async with AsyncSession(sqlite_engine) as session, session.begin():
        await _add_session(session)
        await session.execute(
            insert(ContextMessageRecord),
            [_message(value, position=i) for i, value in enumerate(values)],
        )
    async with sqlite_engine.connect() as conn:
        raw = await conn.execute(text("SELECT content FROM context_messages ORDER BY position"))
        stored = [row[0] for row in raw]
        decoded = (
            await conn.execute(
                select(ContextMessageRecord.content).order_by(ContextMessageRecord.position)
            )
        ).scalars()
        assert list(decoded) == values
    assert stored[0] == b'\x01{"small":"\xf0\x9f\x98\x80\\u0000"}'
    assert stored[1][0] == codec.ZSTD
    assert len(stored[1]) < 100


async def test_bad_value_through_the_facade_raises_serialization_error(tmp_path: Path) -> None:
    url = URL.create("sqlite+aiosqlite", database=str(tmp_path / "facade.db"))
    await migrate.upgrade(url)
    db = SQLAlchemyDatabase(url.render_as_string(hide_password=False), agent_name="a")
    try:
        with pytest.raises(SerializationError) as caught:
            await db.add_message("t", "u", "user", extra_inputs={"x": float("nan")})
        assert not isinstance(caught.value, StatementError)
        assert await db.get_messages("t", "u") == []
        async with db.engine.connect() as conn:
            counts = [
                (await conn.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one()
                for table in ("messages", "threads")
            ]
        assert counts == [0, 0]
    finally:
        await db.close()


async def test_bad_value_in_a_core_insert_raises_serialization_error(
    sqlite_engine: AsyncEngine,
) -> None:
    async with AsyncSession(sqlite_engine) as session:
        await _add_session(session)
        with pytest.raises(SerializationError) as caught, translate_errors():
            await session.execute(insert(ContextMessageRecord).values(_message(float("nan"))))
        assert caught.value.__cause__ is not None
        assert isinstance(caught.value.__cause__, StatementError)
        await session.rollback()
    async with sqlite_engine.connect() as conn:
        count = await conn.execute(text("SELECT COUNT(*) FROM context_messages"))
        assert count.scalar_one() == 0


async def test_without_translate_errors_sqlalchemy_wraps_the_error(
    sqlite_engine: AsyncEngine,
) -> None:
    # Why the façades wrap every statement: SQLAlchemy reports bind failures this way.
    async with AsyncSession(sqlite_engine) as session:
        with pytest.raises(StatementError) as caught:
            await session.execute(insert(ContextMessageRecord).values(_message({1, 2})))
        assert isinstance(caught.value.orig, SerializationError)


async def test_corrupt_stored_bytes_raise_serialization_error_on_select(
    sqlite_engine: AsyncEngine,
) -> None:
    async with AsyncSession(sqlite_engine) as session, session.begin():
        await _add_session(session)
        await session.execute(insert(ContextMessageRecord).values(_message(["ok"])))
    async with sqlite_engine.begin() as conn:
        await conn.execute(text("UPDATE context_messages SET content = x'03deadbeef'"))
    async with AsyncSession(sqlite_engine) as session:
        with pytest.raises(SerializationError), translate_errors():
            await session.scalar(select(ContextMessageRecord.content))


# -- UTCDateTime -----------------------------------------------------------------------------


class _NoOffset(tzinfo):
    """A tzinfo that does not know its offset: as good as naive."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


@pytest.mark.parametrize("dialect", DIALECTS.values(), ids=DIALECTS.keys())
@pytest.mark.parametrize(
    "value",
    [datetime(2024, 1, 1), datetime(2024, 1, 1, tzinfo=_NoOffset())],
    ids=["naive", "unknown-offset"],
)
def test_naive_datetimes_are_refused(value: datetime, dialect: Dialect) -> None:
    with pytest.raises(SerializationError, match="naive"):
        UTCDateTime().process_bind_param(value, dialect)


@pytest.mark.parametrize("dialect", DIALECTS.values(), ids=DIALECTS.keys())
def test_utc_datetime_none_passes_through(dialect: Dialect) -> None:
    assert UTCDateTime().process_bind_param(None, dialect) is None
    assert UTCDateTime().process_result_value(None, dialect) is None


def test_bind_converts_to_utc_keeping_microseconds() -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    value = datetime(2024, 1, 1, 12, 0, 0, 654321, tzinfo=india)
    stored_pg = UTCDateTime().process_bind_param(value, DIALECTS["postgresql"])
    assert stored_pg == value
    assert stored_pg is not None
    assert stored_pg.tzinfo is UTC
    for name in ("sqlite", "mysql", "mariadb"):
        # These columns hold the UTC wall time without a zone.
        assert UTCDateTime().process_bind_param(value, DIALECTS[name]) == datetime(
            2024, 1, 1, 6, 30, 0, 654321
        )


@pytest.mark.parametrize("dialect", DIALECTS.values(), ids=DIALECTS.keys())
def test_results_are_aware_utc(dialect: Dialect) -> None:
    naive = UTCDateTime().process_result_value(datetime(2024, 1, 1, 6, 30, 0, 1), dialect)
    assert naive == datetime(2024, 1, 1, 6, 30, 0, 1, tzinfo=UTC)
    assert naive is not None
    assert naive.tzinfo is UTC
    # asyncpg returns timestamptz in the session's zone.
    aware = UTCDateTime().process_result_value(
        datetime(2024, 1, 1, 8, 30, tzinfo=timezone(timedelta(hours=2))), dialect
    )
    assert aware is not None
    assert aware.tzinfo is UTC
    assert aware.hour == 6


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sqlite", "DATETIME"),
        ("postgresql", "TIMESTAMP WITH TIME ZONE"),
        ("mysql", "DATETIME(6)"),
        ("mariadb", "DATETIME(6)"),
    ],
)
def test_utc_datetime_column_per_dialect(name: str, expected: str) -> None:
    assert UTCDateTime().compile(dialect=DIALECTS[name]) == expected


async def test_naive_datetime_in_a_statement_raises_serialization_error(
    sqlite_engine: AsyncEngine,
) -> None:
    async with AsyncSession(sqlite_engine) as session:
        await _add_session(session)
        with pytest.raises(SerializationError), translate_errors():
            await session.execute(
                insert(ContextMessageRecord).values(_message([], created_at=datetime(2024, 1, 1)))
            )


# -- every SQL backend -----------------------------------------------------------------------


async def test_types_round_trip_on_every_backend(engine: AsyncEngine) -> None:
    """Megabyte payloads (beyond MySQL's 64 KiB BLOB) and microseconds, on each backend."""
    tokyo = timezone(timedelta(hours=9))
    stamps = [
        datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2024, 3, 1, 8, 0, 0, 1, tzinfo=tokyo),
    ]
    big = [{"type": "text", "text": f"line {i} " * 20} for i in range(20_000)]
    incompressible = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(30_000))
    values: list[Any] = [big, {"e": "😀\x00𝄞", "n": [2**64 - 1, -0.0, 5e-324]}, incompressible]
    async with AsyncSession(engine) as session, session.begin():
        await _add_session(session)
        await session.execute(
            insert(ContextMessageRecord),
            [
                _message(value, position=i, created_at=stamps[i % 2])
                for i, value in enumerate(values)
            ],
        )
    async with AsyncSession(engine) as session:
        rows = (
            await session.execute(
                select(ContextMessageRecord.content, ContextMessageRecord.created_at).order_by(
                    ContextMessageRecord.position
                )
            )
        ).all()
    assert [row.content for row in rows] == values
    assert str(rows[1].content["n"][1]) == "-0.0"
    assert [row.created_at for row in rows] == [stamps[0], stamps[1], stamps[0]]
    assert all(row.created_at.tzinfo is UTC for row in rows)
    assert rows[1].created_at.microsecond == 1
