"""The stored payload format: JSON, compressed above a threshold, behind one header byte.

A stored payload is ``header byte + body``:

========  ==========================================================
header    body
========  ==========================================================
``0x01``  UTF-8 JSON, uncompressed
``0x02``  UTF-8 JSON compressed with zlib (deflate, zlib container)
``0x03``  UTF-8 JSON compressed as one zstd frame (content size set)
``0x10``  one of the above, encrypted (:mod:`convostore.encryption`)
========  ==========================================================

The encoder writes ``0x01`` up to the threshold and the chosen codec above it (zstd by
default: see ``docs/compression.md`` for the measurements). The decoder reads every header,
so the default can change without rewriting old rows.

Only exact JSON values are accepted: ``dict`` with ``str`` keys, ``list`` and ``tuple``
(read back as lists), ``str``, ``int`` (64-bit), finite ``float``, ``bool`` and ``None``.
Anything else, including NaN, infinities, integers beyond 64 bits, sets, bytes, datetimes,
enums and UUIDs, raises :class:`~convostore.errors.SerializationError`: nothing is ever
silently changed on the way to disk.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import threading
import zlib
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson
import zstandard

from convostore.errors import CorruptEnvelopeError, KeyNotFoundError, SerializationError

__all__ = [
    "DEFAULT_MAX_SIZE",
    "DEFAULT_THRESHOLD",
    "Codec",
    "Encoded",
    "decode",
    "decode_axio_payload",
    "encode",
    "encoded",
    "parse_envelope",
    "payload_size",
]

DEFAULT_THRESHOLD: Final = 512
"""Payloads longer than this many bytes of JSON are compressed."""

DEFAULT_MAX_SIZE: Final = 64 * 1024 * 1024
"""The largest JSON document (in bytes, uncompressed) that is written or read back."""

Codec = Literal["zstd", "zlib"]

PLAIN: Final = 0x01
ZLIB: Final = 0x02
ZSTD: Final = 0x03
ENCRYPTED: Final = 0x10
NONCE_SIZE: Final = 12
"""Bytes of the random nonce in an encrypted envelope (AES-GCM)."""
TAG_SIZE: Final = 16
"""Bytes of the authentication tag that ends an encrypted envelope."""
_HEADERS: Final = {"zlib": ZLIB, "zstd": ZSTD}

ZSTD_LEVEL: Final = 3
ZLIB_LEVEL: Final = 6

# Non-JSON types that orjson would otherwise turn into something else are handed to
# ``_refuse`` instead; the walk in ``_check_exact_json`` catches the rest (enums, UUIDs, NaN).
_ORJSON_OPTIONS: Final = (
    orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


@dataclass(frozen=True, slots=True)
class Encoded:
    """A payload already encoded by :func:`encode`, stored by ``CompressedJSON`` as it is.

    Encoding before the transaction starts keeps compression out of the database's write
    lock, and rejects a bad value before anything is sent.
    """

    data: bytes
    json: bytes | None = None
    """The uncompressed JSON, kept by :func:`encoded` for :meth:`value`."""
    search_text: str | None = None
    """The words search finds the value by (:func:`convostore.search.feed`), if given."""

    def value(self) -> Any:
        """The value exactly as it will read back from the database (tuples as lists).

        Parses the kept JSON when there is one, which skips decompressing ``data``.
        """
        return orjson.loads(self.json) if self.json is not None else decode(self.data)


def encoded(
    value: Any,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    max_size: int = DEFAULT_MAX_SIZE,
    codec: Codec = "zstd",
    search_text: str | None = None,
) -> Encoded:
    """Like :func:`encode`, returning an :class:`Encoded` that also keeps the JSON (and
    ``search_text``, the value's words for the search index, when given)."""
    raw = _dumps(value, max_size)
    return Encoded(_pack(raw, threshold, codec), raw, search_text)


def encode(
    value: Any,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    max_size: int = DEFAULT_MAX_SIZE,
    codec: Codec = "zstd",
) -> bytes:
    """Encode a JSON value into the stored payload format.

    Raises:
        SerializationError: ``value`` is not exactly JSON, or its JSON is over ``max_size``.
    """
    return _pack(_dumps(value, max_size), threshold, codec)


def _dumps(value: Any, max_size: int) -> bytes:
    try:
        raw = orjson.dumps(value, default=_refuse, option=_ORJSON_OPTIONS)
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise SerializationError(f"value is not JSON-serializable: {exc}") from exc
    # orjson succeeded, so the value is acyclic and shallow enough to walk without guards.
    _check_exact_json(value)
    if len(raw) > max_size:
        raise SerializationError(
            f"payload of {len(raw)} bytes exceeds the maximum of {max_size} bytes"
        )
    return raw


def _pack(raw: bytes, threshold: int, codec: Codec) -> bytes:
    if len(raw) > threshold:
        if codec == "zstd":
            body = _zstd_compressor().compress(raw)
        else:
            body = zlib.compress(raw, ZLIB_LEVEL)
        if len(body) < len(raw):
            return bytes((_HEADERS[codec],)) + body
    return b"\x01" + raw


def decode(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Any:
    """Decode a stored payload back into its JSON value.

    Raises:
        SerializationError: The bytes are corrupt, use an unknown header, or would expand
            beyond ``max_size`` (checked before anything is expanded).
        KeyNotFoundError: The bytes are an encrypted envelope
            (:func:`convostore.encryption.open_payload` opens it first).
    """
    if not data:
        raise SerializationError("stored payload is empty")
    header, body = data[0], memoryview(data)[1:]
    if header == PLAIN:
        if len(body) > max_size:
            raise SerializationError(
                f"payload of {len(body)} bytes exceeds the maximum of {max_size} bytes"
            )
        raw: bytes | memoryview = body
    elif header == ZSTD:
        raw = _zstd_decompress(body, max_size)
    elif header == ZLIB:
        raw = _inflate(body, max_size, wbits=zlib.MAX_WBITS)
    elif header == ENCRYPTED:
        # Opened by convostore.encryption before it gets here, when there is a keyring; a
        # truncated or malformed envelope is corrupt data, not a missing key.
        key_id, _ = parse_envelope(data)
        raise KeyNotFoundError(
            f"the payload is encrypted with key {key_id!r} and no keyring was given to open it"
        )
    else:
        raise SerializationError(f"stored payload has unknown codec header 0x{header:02x}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SerializationError(f"stored payload is not valid JSON: {exc}") from exc


def parse_envelope(data: bytes) -> tuple[str, int]:
    """The key id of an encrypted envelope and the offset where its ciphertext starts.

    An envelope is ``0x10``, the key id's length (1-255), the ASCII key id, a
    :data:`NONCE_SIZE`-byte nonce, then the ciphertext and its :data:`TAG_SIZE`-byte tag.

    Raises:
        CorruptEnvelopeError: ``data`` is shorter than an envelope can be, or its key id is
            empty or not ASCII.
    """
    if len(data) < 2 or data[0] != ENCRYPTED:
        raise CorruptEnvelopeError("an encrypted payload is truncated")
    length = data[1]
    start = 2 + length + NONCE_SIZE
    if length == 0 or len(data) < start + TAG_SIZE:
        raise CorruptEnvelopeError("an encrypted payload is truncated")
    try:
        key_id = bytes(data[2 : 2 + length]).decode("ascii")
    except UnicodeDecodeError:
        raise CorruptEnvelopeError("an encrypted payload has a malformed key id") from None
    return key_id, start


def payload_size(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> int:
    """The size in bytes of the JSON inside a stored payload, without parsing it.

    A zstd frame that declares its content size is not expanded; any other compressed body
    is, under the same ``max_size`` cap as :func:`decode`. Bytes without a known header
    count as they are (a foreign or corrupt value still takes that much room).

    Raises:
        SerializationError: A compressed body is corrupt or expands beyond ``max_size``.
    """
    if not data:
        return 0
    header, body = data[0], memoryview(data)[1:]
    if header == PLAIN:
        return len(body)
    if header == ZSTD:
        try:
            declared = zstandard.frame_content_size(body)
        except zstandard.ZstdError as exc:
            raise SerializationError(f"stored zstd payload is corrupt: {exc}") from exc
        if 0 <= declared <= max_size:
            return int(declared)
        return len(_zstd_decompress(body, max_size))
    if header == ZLIB:
        return len(_inflate(body, max_size, wbits=zlib.MAX_WBITS))
    return len(data)


def decode_axio_payload(text: str, *, max_size: int = DEFAULT_MAX_SIZE) -> Any:
    """Decode a value stored by axio-context-sqlite (``plain:…``, ``gzip:`` + base64, or JSON).

    Integers come back exact whatever their size; ``NaN``, ``Infinity`` and numbers too
    large for a float are refused.

    Raises:
        SerializationError: The text is corrupt, is not exactly JSON, or would expand
            beyond ``max_size``.
    """
    if text.startswith("gzip:"):
        try:
            compressed = base64.b64decode(text[5:], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SerializationError(f"axio payload is not valid base64: {exc}") from exc
        raw: bytes | str = _inflate(memoryview(compressed), max_size, wbits=31)
    elif text.startswith("plain:"):
        raw = text[6:]
    else:
        raw = text
    # axio wrote these with the stdlib's json.dumps, which writes integers of any size and
    # NaN/Infinity. orjson would read big integers back as floats, so the stdlib parses
    # them: exact integers, and non-finite numbers refused rather than carried over.
    try:
        return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise SerializationError(f"axio payload is not valid JSON: {exc}") from exc


def _refuse(value: object) -> None:
    raise TypeError(f"{type(value).__name__} is not a JSON type")


def _refuse_constant(name: str) -> float:
    raise SerializationError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise SerializationError(f"{text} is out of the range of a JSON number")
    return number


def _check_exact_json(value: Any) -> None:
    stack = [value]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if kind is float:
            if not math.isfinite(item):
                raise SerializationError(f"{item!r} is not a JSON number")
        elif kind is dict:
            for key, child in item.items():
                if type(key) is not str:
                    raise SerializationError(f"JSON object keys must be str, not {type(key)}")
                push(child)
        elif kind is list or kind is tuple:
            extend(item)
        else:
            raise SerializationError(f"{kind.__name__} is not a JSON type")


_local = threading.local()


def _zstd_compressor() -> zstandard.ZstdCompressor:
    # zstandard contexts are not thread-safe; one per thread is reused across calls.
    compressor: zstandard.ZstdCompressor | None = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
        _local.compressor = compressor
    return compressor


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = zstandard.ZstdDecompressor()
        _local.decompressor = decompressor
    return decompressor


def _zstd_decompress(body: memoryview, max_size: int) -> bytes:
    try:
        declared = zstandard.frame_content_size(body)
        if declared > max_size:
            raise SerializationError(
                f"payload declares {declared} bytes, over the maximum of {max_size}"
            )
        # With a declared size the output buffer is exactly that size, so a frame whose
        # header understates its content fails instead of growing; without one, the
        # buffer is capped at max_size. The encoder writes exactly one frame, so bytes
        # after it mean corruption, not a second frame to ignore.
        raw: bytes = _zstd_decompressor().decompress(
            body, max_output_size=max_size, allow_extra_data=False
        )
    except zstandard.ZstdError as exc:
        raise SerializationError(
            f"stored zstd payload is corrupt or expands beyond {max_size} bytes: {exc}"
        ) from exc
    if len(raw) > max_size:
        raise SerializationError(f"payload expands beyond the maximum of {max_size} bytes")
    return raw


def _inflate(body: memoryview, max_size: int, *, wbits: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    try:
        raw = inflater.decompress(body, max_size + 1)
    except zlib.error as exc:
        raise SerializationError(f"stored deflate payload is corrupt: {exc}") from exc
    if len(raw) > max_size:
        raise SerializationError(f"payload expands beyond the maximum of {max_size} bytes")
    if not inflater.eof:
        raise SerializationError("stored deflate payload is truncated")
    if inflater.unused_data:
        raise SerializationError("stored deflate payload has trailing bytes")
    return raw
