"""The stored payload format: exact round-trips, refusals, corrupt bytes and bombs.

Every value is checked by type as well as by equality, because ``1 == 1.0 == True`` and
``0.0 == -0.0`` in Python: an equality check alone would miss a silent change.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import gzip
import json
import struct
import tracemalloc
import uuid
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from convostore import codec
from convostore.errors import SerializationError

MiB = 1024 * 1024
BOMB_SIZE = 50 * MiB
SMALL_MAX = 1 * MiB
# A refused bomb may allocate up to about max_size, never anything near the 50 MiB it
# would expand to.
PEAK_LIMIT = 4 * SMALL_MAX


def typed(value: Any) -> Any:
    """A comparable form of a JSON value that keeps types and the sign of zero."""
    kind = type(value)
    if kind is float:
        return ("float", value.hex())
    if kind is list:
        return ("list", [typed(item) for item in value])
    if kind is dict:
        return ("dict", [(key, typed(item)) for key, item in value.items()])
    return (kind.__name__, value)


ROUND_TRIP = [
    pytest.param("", id="empty-str"),
    pytest.param("hello", id="str"),
    pytest.param(0, id="zero"),
    pytest.param(-17, id="negative-int"),
    pytest.param(2**63 - 1, id="int64-max"),
    pytest.param(-(2**63), id="int64-min"),
    pytest.param(2**64 - 1, id="uint64-max"),
    pytest.param(1.5, id="float"),
    pytest.param(0.1, id="float-inexact"),
    pytest.param(-0.0, id="negative-zero"),
    pytest.param(5e-324, id="smallest-subnormal"),
    pytest.param(2.2250738585072014e-308, id="smallest-normal"),
    pytest.param(1.7976931348623157e308, id="largest-float"),
    pytest.param(-1.7976931348623157e308, id="most-negative-float"),
    pytest.param(1.0, id="integral-float"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param(None, id="null"),
    pytest.param([], id="empty-list"),
    pytest.param({}, id="empty-dict"),
    pytest.param([1, 1.0, True, None, "1"], id="mixed-list"),
    pytest.param({"b": 1, "a": [2, {"c": None}]}, id="nested-dict-order"),
    pytest.param("😀 emoji", id="emoji"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("𝄞 \U0010ffff", id="astral"),
    pytest.param('quote " backslash \\ newline \n tab \t \x1f', id="escapes"),
    pytest.param({"\x00": "😀", "𝄞": ["\U0001f600"]}, id="unicode-keys"),
    pytest.param(["x" * 5000, {"k": "y" * 5000}], id="compressible"),
]


@pytest.mark.parametrize("value", ROUND_TRIP)
@pytest.mark.parametrize(
    ("threshold", "kind"),
    [(codec.DEFAULT_THRESHOLD, "zstd"), (0, "zstd"), (0, "zlib")],
    ids=["default", "always-zstd", "always-zlib"],
)
def test_round_trip_is_exact(value: Any, threshold: int, kind: codec.Codec) -> None:
    stored = codec.encode(value, threshold=threshold, codec=kind)
    assert typed(codec.decode(stored)) == typed(value)


def test_tuples_are_read_back_as_lists() -> None:
    assert typed(codec.decode(codec.encode((1, ("a", None))))) == typed([1, ["a", None]])


def test_nesting_within_orjsons_depth_limit_round_trips() -> None:
    value: Any = "leaf"
    for _ in range(200):
        value = [value]
    assert codec.decode(codec.encode(value)) == value


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"])), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None)
@given(value=json_values, threshold=st.sampled_from([0, 512]))
def test_any_json_value_round_trips_exactly(value: Any, threshold: int) -> None:
    assert typed(codec.decode(codec.encode(value, threshold=threshold))) == typed(value)


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    LOW = 1


class Name(enum.StrEnum):
    ALICE = "alice"


class Tag(str):
    pass


class Ratio(float):
    pass


@dataclasses.dataclass
class Point:
    x: int


def _cyclic_list() -> list[Any]:
    items: list[Any] = [1]
    items.append(items)
    return items


def _cyclic_dict() -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    mapping["self"] = mapping
    return mapping


def _too_deep() -> list[Any]:
    value: list[Any] = []
    for _ in range(300):
        value = [value]
    return value


REFUSED = [
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("inf"), id="inf"),
    pytest.param(float("-inf"), id="-inf"),
    pytest.param({"deep": [1, {"x": float("nan")}]}, id="nested-nan"),
    pytest.param(2**64, id="uint64-max+1"),
    pytest.param(-(2**63) - 1, id="int64-min-1"),
    pytest.param(2**100, id="huge-int"),
    pytest.param([2**70], id="nested-huge-int"),
    pytest.param({1, 2}, id="set"),
    pytest.param(frozenset({1}), id="frozenset"),
    pytest.param(b"bytes", id="bytes"),
    pytest.param(bytearray(b"x"), id="bytearray"),
    pytest.param(datetime(2024, 1, 1, tzinfo=UTC), id="datetime"),
    pytest.param(date(2024, 1, 1), id="date"),
    pytest.param(uuid.UUID(int=1), id="uuid"),
    pytest.param(Decimal("1.5"), id="decimal"),
    pytest.param(1j, id="complex"),
    pytest.param(Colour.RED, id="enum"),
    pytest.param(Level.LOW, id="int-enum"),
    pytest.param(Name.ALICE, id="str-enum"),
    pytest.param({"k": [Level.LOW]}, id="nested-int-enum"),
    pytest.param(object(), id="object"),
    pytest.param(Point(1), id="dataclass"),
    pytest.param(Tag("x"), id="str-subclass"),
    pytest.param(["ok", Tag("x")], id="nested-str-subclass"),
    pytest.param(Ratio(0.5), id="float-subclass"),
    pytest.param({1: "a"}, id="int-key"),
    pytest.param({None: "a"}, id="none-key"),
    pytest.param({("a",): 1}, id="tuple-key"),
    pytest.param({Name.ALICE: 1}, id="str-enum-key"),
    pytest.param({Tag("k"): 1}, id="str-subclass-key"),
    pytest.param(_cyclic_list(), id="cyclic-list"),
    pytest.param(_cyclic_dict(), id="cyclic-dict"),
    pytest.param(_too_deep(), id="deeper-than-orjson-allows"),
    pytest.param("\ud800", id="lone-high-surrogate"),
    pytest.param(["a\udc00b"], id="lone-low-surrogate"),
    pytest.param({"\ud83d": 1}, id="surrogate-key"),
]


@pytest.mark.parametrize("value", REFUSED)
def test_non_json_values_are_refused(value: Any) -> None:
    with pytest.raises(SerializationError):
        codec.encode(value)


# -- threshold and size limits ------------------------------------------------------------


def _json_of_length(length: int) -> str:
    """A string whose JSON encoding is exactly ``length`` bytes (quotes included)."""
    return "a" * (length - 2)


def test_payload_at_the_threshold_is_stored_plain() -> None:
    stored = codec.encode(_json_of_length(codec.DEFAULT_THRESHOLD))
    assert stored[0] == codec.PLAIN
    assert stored[1:] == b'"' + b"a" * (codec.DEFAULT_THRESHOLD - 2) + b'"'


def test_payload_above_the_threshold_is_compressed_with_zstd() -> None:
    stored = codec.encode(_json_of_length(codec.DEFAULT_THRESHOLD + 1))
    assert stored[0] == codec.ZSTD
    assert len(stored) < codec.DEFAULT_THRESHOLD
    assert zstandard.frame_content_size(stored[1:]) == codec.DEFAULT_THRESHOLD + 1


def test_zlib_codec_writes_its_header() -> None:
    stored = codec.encode(_json_of_length(2000), codec="zlib")
    assert stored[0] == codec.ZLIB
    assert zlib.decompress(stored[1:]) == json.dumps(_json_of_length(2000)).encode()


def test_threshold_is_configurable() -> None:
    value = _json_of_length(100)
    assert codec.encode(value)[0] == codec.PLAIN
    assert codec.encode(value, threshold=99)[0] == codec.ZSTD
    assert codec.encode(value, threshold=100)[0] == codec.PLAIN
    assert codec.encode(_json_of_length(2000), threshold=5000)[0] == codec.PLAIN


@pytest.mark.parametrize("kind", ["zstd", "zlib"])
def test_incompressible_payload_above_threshold_stays_plain(kind: codec.Codec) -> None:
    # A few bytes of JSON: any compressed frame would be larger than the JSON itself.
    stored = codec.encode("ab", threshold=0, codec=kind)
    assert stored == b'\x01"ab"'


def test_encode_refuses_json_over_max_size() -> None:
    assert codec.decode(codec.encode(_json_of_length(100), max_size=100)) == _json_of_length(100)
    with pytest.raises(SerializationError, match="exceeds the maximum"):
        codec.encode(_json_of_length(101), max_size=100)


def test_decode_refuses_plain_payload_over_max_size() -> None:
    stored = codec.encode(_json_of_length(100))
    assert codec.decode(stored, max_size=100) == _json_of_length(100)
    with pytest.raises(SerializationError, match="exceeds the maximum"):
        codec.decode(stored, max_size=99)


def test_decoder_reads_every_header_whatever_the_encoder_default() -> None:
    raw = json.dumps({"k": "v" * 1000}).encode()
    written = [
        b"\x01" + raw,
        b"\x02" + zlib.compress(raw, 9),
        b"\x03" + zstandard.ZstdCompressor(level=19).compress(raw),
    ]
    for stored in written:
        assert codec.decode(stored) == {"k": "v" * 1000}


# -- corrupt stored bytes -------------------------------------------------------------------


def _zstd(raw: bytes, *, content_size: bool = True) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_content_size=content_size).compress(raw)


_VALID_ZSTD = _zstd(json.dumps(["x" * 3000]).encode())
_VALID_ZLIB = zlib.compress(json.dumps(["x" * 3000]).encode())

CORRUPT = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\x00{}", id="header-0x00"),
    pytest.param(b"\x04{}", id="unknown-header"),
    pytest.param(b"{}", id="no-header-bare-json"),
    pytest.param(b"\x01", id="plain-empty-body"),
    pytest.param(b"\x01{not json", id="plain-invalid-json"),
    pytest.param(b'\x01"\xff"', id="plain-invalid-utf8"),
    pytest.param(b"\x01[1] [2]", id="plain-trailing-json"),
    pytest.param(b"\x01NaN", id="plain-nan"),
    pytest.param(b"\x03", id="zstd-empty-body"),
    pytest.param(b"\x03" + _VALID_ZSTD[:-4], id="zstd-truncated"),
    pytest.param(b"\x03" + _VALID_ZSTD[:8], id="zstd-header-only"),
    pytest.param(b"\x03garbage-garbage", id="zstd-garbage"),
    pytest.param(b"\x03" + _VALID_ZSTD + b"xx", id="zstd-trailing-bytes"),
    pytest.param(b"\x03" + _VALID_ZSTD + _VALID_ZSTD, id="zstd-two-frames"),
    pytest.param(b"\x03" + _zstd(b"{not json"), id="zstd-invalid-json"),
    pytest.param(b"\x02", id="zlib-empty-body"),
    pytest.param(b"\x02garbage-garbage", id="zlib-garbage"),
    pytest.param(b"\x02" + _VALID_ZLIB[:-6], id="zlib-truncated"),
    pytest.param(b"\x02" + _VALID_ZLIB + b"xx", id="zlib-trailing-bytes"),
    pytest.param(b"\x02" + zlib.compress(b"[1,"), id="zlib-invalid-json"),
    pytest.param(b"\x02" + gzip.compress(b"[1]"), id="zlib-header-gzip-body"),
]


@pytest.mark.parametrize("stored", CORRUPT)
def test_corrupt_stored_bytes_raise_serialization_error(stored: bytes) -> None:
    with pytest.raises(SerializationError):
        codec.decode(stored)


# -- decompression bombs ---------------------------------------------------------------------

# 50 MiB of valid JSON that compresses to a few kilobytes.
_BOMB_JSON = b'"' + b"a" * (BOMB_SIZE - 2) + b'"'


@pytest.fixture(scope="module")
def zstd_bomb() -> bytes:
    return _zstd(_BOMB_JSON)


@pytest.fixture(scope="module")
def zstd_bomb_without_size() -> bytes:
    frame = _zstd(_BOMB_JSON, content_size=False)
    assert zstandard.frame_content_size(frame) == -1
    return frame


@pytest.fixture(scope="module")
def deflate_bomb() -> bytes:
    return zlib.compress(_BOMB_JSON, 1)


@pytest.fixture
def peak_memory() -> Iterator[Callable[[], int]]:
    """The peak of memory traced while the test runs, in bytes."""
    tracemalloc.start()
    try:
        yield lambda: tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _lie_about_content_size(frame: bytes, declared: int) -> bytes:
    """Rewrite a zstd frame header's Frame_Content_Size field (RFC 8878, 3.1.1.1)."""
    assert frame[:4] == b"\x28\xb5\x2f\xfd"
    descriptor = frame[4]
    fcs_flag, single_segment, dict_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    assert fcs_flag in (2, 3), "the frame should carry a 4- or 8-byte content size"
    assert not single_segment, "a window descriptor keeps the window independent of the size"
    start = 5 + 1 + (0, 1, 2, 4)[dict_flag]
    field = struct.pack("<I", declared) if fcs_flag == 2 else struct.pack("<Q", declared)
    patched = frame[:start] + field + frame[start + len(field) :]
    assert zstandard.frame_content_size(patched) == declared
    return patched


def test_zstd_frame_declaring_more_than_max_size_is_refused_before_expanding(
    zstd_bomb: bytes, peak_memory: Callable[[], int]
) -> None:
    assert zstandard.frame_content_size(zstd_bomb) == BOMB_SIZE
    with pytest.raises(SerializationError, match="declares"):
        codec.decode(b"\x03" + zstd_bomb, max_size=SMALL_MAX)
    assert peak_memory() < PEAK_LIMIT


def test_zstd_frame_without_content_size_is_cut_off_at_max_size(
    zstd_bomb_without_size: bytes, peak_memory: Callable[[], int]
) -> None:
    with pytest.raises(SerializationError, match="expands beyond"):
        codec.decode(b"\x03" + zstd_bomb_without_size, max_size=SMALL_MAX)
    assert peak_memory() < PEAK_LIMIT


@pytest.mark.parametrize("declared", [1000, SMALL_MAX], ids=["tiny", "exactly-max-size"])
def test_zstd_frame_whose_header_understates_its_size_is_refused(
    zstd_bomb: bytes, declared: int, peak_memory: Callable[[], int]
) -> None:
    liar = _lie_about_content_size(zstd_bomb, declared)
    with pytest.raises(SerializationError, match="corrupt"):
        codec.decode(b"\x03" + liar, max_size=SMALL_MAX)
    assert peak_memory() < PEAK_LIMIT


def test_zstd_frame_without_content_size_within_max_size_decodes() -> None:
    value = ["x" * 5000]
    assert codec.decode(b"\x03" + _zstd(json.dumps(value).encode(), content_size=False)) == value


def test_zlib_bomb_is_cut_off_at_max_size(
    deflate_bomb: bytes, peak_memory: Callable[[], int]
) -> None:
    with pytest.raises(SerializationError, match="expands beyond"):
        codec.decode(b"\x02" + deflate_bomb, max_size=SMALL_MAX)
    assert peak_memory() < PEAK_LIMIT


def test_default_max_size_is_enforced_on_decode(zstd_bomb: bytes) -> None:
    # A frame declaring one byte more than the default limit: refused from its header alone.
    frame = _lie_about_content_size(zstd_bomb, codec.DEFAULT_MAX_SIZE + 1)
    with pytest.raises(SerializationError, match="declares"):
        codec.decode(b"\x03" + frame)


# -- axio-context-sqlite's text format ----------------------------------------------------------


def axio_compress(data: str) -> str:
    """The text axio-context-sqlite stores for a JSON string (its own rules, rebuilt here)."""
    raw = data.encode()
    if len(raw) < 512:
        return "plain:" + data
    return "gzip:" + base64.b64encode(gzip.compress(raw, compresslevel=6)).decode()


AXIO_CONTENT = [
    {"type": "text", "text": "Hello 😀 \x00 𝄞"},
    {"type": "tool_use", "id": "t1", "name": "read", "input": {"path": "/tmp/x", "n": 2**70}},
    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "ok"}]},
]


def test_axio_plain_payload() -> None:
    stored = axio_compress(json.dumps(AXIO_CONTENT[:1]))
    assert stored.startswith("plain:")
    assert codec.decode_axio_payload(stored) == AXIO_CONTENT[:1]


def test_axio_gzip_payload() -> None:
    content = [*AXIO_CONTENT, {"type": "text", "text": "long " * 500}]
    stored = axio_compress(json.dumps(content))
    assert stored.startswith("gzip:")
    assert codec.decode_axio_payload(stored) == content


def test_axio_bare_json_payload() -> None:
    assert codec.decode_axio_payload(json.dumps(AXIO_CONTENT)) == AXIO_CONTENT


def test_axio_big_integers_come_back_exact() -> None:
    # The stdlib writes integers of any size; reading one back as a float would change it.
    decoded = codec.decode_axio_payload(axio_compress(json.dumps([2**70, -(2**65)])))
    assert typed(decoded) == typed([2**70, -(2**65)])


def test_axio_unicode_without_ascii_escaping() -> None:
    text = json.dumps({"t": "😀\x00𝄞"}, ensure_ascii=False)
    assert codec.decode_axio_payload("plain:" + text) == {"t": "😀\x00𝄞"}


AXIO_CORRUPT = [
    pytest.param("gzip:!!!not-base64!!!", id="corrupt-base64"),
    pytest.param("gzip:" + base64.b64encode(gzip.compress(b"[1]"))[:-3].decode(), id="cut-b64"),
    pytest.param("gzip:" + base64.b64encode(b"not gzip at all").decode(), id="not-gzip"),
    pytest.param("gzip:" + base64.b64encode(gzip.compress(b"[1]")[:-8]).decode(), id="truncated"),
    pytest.param("gzip:" + base64.b64encode(zlib.compress(b"[1]")).decode(), id="zlib-not-gzip"),
    pytest.param("gzip:" + base64.b64encode(gzip.compress(b"{bad")).decode(), id="gzip-bad-json"),
    pytest.param("gzip:", id="gzip-empty"),
    pytest.param("plain:", id="plain-empty"),
    pytest.param("plain:{", id="plain-bad-json"),
    pytest.param("", id="empty"),
    pytest.param("[NaN]", id="nan"),
    pytest.param("plain:[Infinity]", id="infinity"),
    pytest.param("[-Infinity]", id="-infinity"),
    pytest.param("[1e400]", id="overflowing-float"),
    pytest.param("[" * 100_000 + "]" * 100_000, id="too-deep"),
]


@pytest.mark.parametrize("text", AXIO_CORRUPT)
def test_corrupt_axio_payload_raises_serialization_error(text: str) -> None:
    with pytest.raises(SerializationError):
        codec.decode_axio_payload(text)


def test_axio_gzip_bomb_is_cut_off_at_max_size(peak_memory: Callable[[], int]) -> None:
    bomb = "gzip:" + base64.b64encode(gzip.compress(_BOMB_JSON, compresslevel=1)).decode()
    tracemalloc.reset_peak()
    with pytest.raises(SerializationError, match="expands beyond"):
        codec.decode_axio_payload(bomb, max_size=SMALL_MAX)
    assert peak_memory() < PEAK_LIMIT


@pytest.mark.parametrize("kind", ["zstd", "zlib"])
def test_payload_size_is_the_json_size(kind: codec.Codec) -> None:
    value = {"text": "abc " * 1000, "n": [1, 2, 3]}
    raw = orjson.dumps(value)
    stored = codec.encode(value, codec=kind)
    assert stored[0] != codec.PLAIN
    assert codec.payload_size(stored) == len(raw)
    assert codec.payload_size(codec.encode({"a": 1})) == len(b'{"a":1}')


def test_payload_size_of_a_zstd_frame_without_content_size_expands_it() -> None:
    raw = orjson.dumps(["x" * 5000])
    body = zstandard.ZstdCompressor(write_content_size=False).compress(raw)
    assert codec.payload_size(bytes((codec.ZSTD,)) + body) == len(raw)


@pytest.mark.parametrize(
    "stored",
    [
        bytes((codec.ZLIB,)) + b"not deflate",
        bytes((codec.ZSTD,)) + b"not zstd",
        # Bombs: each would expand past the cap given below.
        bytes((codec.ZLIB,)) + zlib.compress(b"[" + b"0," * 5000 + b"0]"),
        bytes((codec.ZSTD,))
        + zstandard.ZstdCompressor(write_content_size=False).compress(b"0" * 5000),
        bytes((codec.ZSTD,)) + zstandard.ZstdCompressor().compress(b"0" * 5000),
    ],
)
def test_payload_size_raises_serialization_error_never_a_codec_error(stored: bytes) -> None:
    with pytest.raises(SerializationError):
        codec.payload_size(stored, max_size=1000)
