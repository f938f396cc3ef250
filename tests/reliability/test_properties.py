"""Property tests of the stored payload format and the ``CompressedJSON`` column.

Exact means exact: values are compared with their types (``1``, ``1.0`` and ``True``
differ, so do ``0.0`` and ``-0.0``), through the codec, through the column type on every
dialect, and through a real column of every selected backend.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import decimal
import enum
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import URL
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Dialect

from convostore import ContextMessage, SQLAlchemyContextStore, codec, create_engine
from convostore.errors import CorruptEnvelopeError, KeyNotFoundError, SerializationError
from convostore.sql.types import CompressedJSON
from tests.reliability.helpers import same_json, tagged
from tests.reliability.strategies import INT64_MIN, UINT64_MAX, content_blocks, json_values

DIALECTS: list[Dialect] = [
    sqlite.dialect(),
    postgresql.dialect(),  # type: ignore[no-untyped-call]
    mysql.dialect(),
]
THRESHOLDS = st.sampled_from([0, 1, 64, codec.DEFAULT_THRESHOLD, 10**9])
CODECS = st.sampled_from(["zstd", "zlib"])


def as_lists(value: Any) -> Any:
    """What a value reads back as: tuples become lists."""
    if isinstance(value, tuple | list):
        return [as_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: as_lists(item) for key, item in value.items()}
    return value


@given(value=json_values(), threshold=THRESHOLDS, kind=CODECS)
def test_codec_round_trips_any_json_exactly(value: Any, threshold: int, kind: codec.Codec) -> None:
    stored = codec.encode(value, threshold=threshold, codec=kind)
    assert stored[0] in (codec.PLAIN, codec.ZLIB, codec.ZSTD)
    assert same_json(codec.decode(stored), value)


@given(value=json_values(), threshold=THRESHOLDS, dialect=st.sampled_from(DIALECTS))
def test_compressed_json_column_round_trips_any_json_exactly(
    value: Any, threshold: int, dialect: Dialect
) -> None:
    column = CompressedJSON(threshold=threshold)
    bound = column.process_bind_param(value, dialect)
    if value is None:
        assert bound is None  # SQL NULL, read back as None
        return
    assert isinstance(bound, bytes)
    # Drivers hand BLOBs back as bytes or memoryview.
    assert same_json(column.process_result_value(memoryview(bound), dialect), value)


@given(
    value=st.recursive(
        json_values(5),
        lambda children: st.lists(children, max_size=4).map(tuple),
        max_leaves=10,
    )
)
def test_tuples_are_accepted_and_read_back_as_lists(value: Any) -> None:
    assert tagged(codec.decode(codec.encode(value))) == tagged(as_lists(value))


class Colour(enum.Enum):
    RED = 1


class MyStr(str):
    pass


class MyInt(int):
    pass


class MyDict(dict[str, Any]):
    pass


@dataclasses.dataclass
class Point:
    x: int


NOT_JSON: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(
        [
            float("nan"),
            float("inf"),
            float("-inf"),
            {1, 2},
            frozenset({1}),
            b"bytes",
            bytearray(b"x"),
            memoryview(b"x"),
            1j,
            decimal.Decimal("1.5"),
            datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
            datetime.date(2024, 1, 1),
            uuid.UUID(int=1),
            Colour.RED,
            MyStr("x"),
            MyInt(1),
            MyDict(a=1),
            Point(1),
            object(),
            {1: "int key"},
            {None: "None key"},
            {("t",): "tuple key"},
            "\ud800 lone surrogate",
        ]
    ),
    st.integers(min_value=UINT64_MAX + 1),
    st.integers(max_value=INT64_MIN - 1),
)


@st.composite
def json_with_one_bad_leaf(draw: st.DrawFn) -> Any:
    """A JSON value with one non-JSON value planted somewhere inside it."""
    bad = draw(NOT_JSON)
    depth = draw(st.integers(min_value=0, max_value=4))
    value = bad
    for _ in range(depth):
        siblings = draw(st.lists(json_values(4), max_size=2))
        if draw(st.booleans()):
            position = draw(st.integers(min_value=0, max_value=len(siblings)))
            value = [*siblings[:position], value, *siblings[position:]]
        else:
            value = {**{f"k{i}": s for i, s in enumerate(siblings)}, "bad": value}
    return value


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(value=json_with_one_bad_leaf(), threshold=THRESHOLDS)
def test_anything_not_json_is_refused_wherever_it_hides(value: Any, threshold: int) -> None:
    with pytest.raises(SerializationError):
        codec.encode(value, threshold=threshold)
    with pytest.raises(SerializationError):
        CompressedJSON(threshold=threshold).process_bind_param(value, sqlite.dialect())


@given(
    header=st.one_of(st.sampled_from([codec.PLAIN, codec.ZLIB, codec.ZSTD]), st.integers(0, 255)),
    body=st.binary(max_size=200),
)
def test_arbitrary_stored_bytes_decode_or_raise_serialization_error(
    header: int, body: bytes
) -> None:
    """Whatever a corrupted row holds, reading it gives a value or SerializationError.

    The one other answer is for bytes that are a whole envelope (a key id, nonce and tag):
    without a keyring those are encrypted, not corrupt, and say which key they need.
    """
    data = bytes([header]) + body
    try:
        codec.decode(data, max_size=1024)
    except SerializationError:
        pass
    except KeyNotFoundError:
        key_id, _ = codec.parse_envelope(data)
        assert header == codec.ENCRYPTED
        assert key_id


@pytest.mark.parametrize(
    "data",
    [b"\x10", b"\x10\x00", b"\x10\x02k1", b"\x10\x02k1" + bytes(27), b"\x10\x01\xff" + bytes(28)],
)
def test_bare_or_truncated_envelopes_are_corrupt_data(data: bytes) -> None:
    with pytest.raises(CorruptEnvelopeError):
        codec.decode(data)
    with pytest.raises(SerializationError):
        codec.decode(data)


@given(value=json_values(), data=st.data())
def test_payloads_over_max_size_are_refused_both_ways(value: Any, data: st.DataObject) -> None:
    stored = codec.encode(value, threshold=0)
    size = len(codec.encode(value, threshold=10**9)) - 1  # the JSON text, without the header
    assume(size > 0)
    limit = data.draw(st.integers(min_value=0, max_value=size - 1))
    with pytest.raises(SerializationError):
        codec.encode(value, max_size=limit)
    with pytest.raises(SerializationError):
        codec.decode(stored, max_size=limit)
    assert same_json(codec.decode(stored, max_size=size), value)


# --- through a real column on every backend ---------------------------------------------------


def test_content_round_trips_through_every_backend(clean_url: URL, backend: str) -> None:
    """Random content blocks, appended and read back through the façade, come back exact."""
    loop = asyncio.new_event_loop()
    engine = loop.run_until_complete(_make_engine(clean_url))
    counter = iter(range(10**6))
    examples = 40 if backend == "sqlite" else 15

    @settings(max_examples=examples, deadline=None, database=None)
    @given(messages=st.lists(content_blocks(), min_size=1, max_size=3))
    def check(messages: list[list[dict[str, Any]]]) -> None:
        store = SQLAlchemyContextStore(engine, session_id=f"p{next(counter)}", project="props")
        sent = [ContextMessage(role="tool", content=content) for content in messages]
        loop.run_until_complete(store.append_many(sent))
        got = loop.run_until_complete(store.get_history())
        assert [same_json(g.content, s.content) for g, s in zip(got, sent, strict=True)] == [
            True
        ] * len(sent)

    try:
        check()
    finally:
        loop.run_until_complete(engine.dispose())
        loop.close()


async def _make_engine(url: URL) -> Any:
    return create_engine(url)
