"""Measure candidate payload codecs on a generated conversation workload.

Usage::

    python bench/codec_choice.py [--messages 1200] [--rounds 11] [--seed 20240601]

The workload is generated deterministically (``random.Random(seed)``, no network):

* user turns: ~100 bytes of text;
* assistant replies: 1-2 KB of English-like prose with some markdown;
* tool results: 4-8 KB of repetitive, pretty-printed JSON records from a tool, as the text
  of a ``tool_result`` block, the way tools hand their output to a model.

Each message is the content-block list axio stores. Every candidate applies the same
512-byte threshold as axio-context-sqlite: below it the JSON is stored as it is (with one
header byte for the binary formats), above it compressed. Times are the median of several
rounds, the systems visited in a rotating order each round so drift on a shared machine is
spread across all of them. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import base64
import gc
import gzip
import json
import platform
import random
import statistics
import string
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import zstandard

from convostore import codec

THRESHOLD = 512

_VOCABULARY = (
    "the of and to a in is it you that he was for on are with as I his they be at one have "
    "this from or had by hot word but what some we can out other were all there when up use "
    "your how said an each she which do their time if will way about many then them write "
    "would like so these her long make thing see him two has look more day could go come did "
    "number sound no most people my over know water than call first who may down side been "
    "now find any new work part take get place made live where after back little only round "
    "man year came show every good me give our under name very through just form sentence "
    "great think say help low line differ turn cause much mean before move right boy old too "
    "same tell does set three want air well also play small end put home read hand port large "
    "spell add even land here must big high such follow act why ask men change went light "
    "kind off need house picture try us again animal point mother world near build self earth "
    "function database query result error value config request response token session model "
    "context message thread user agent payload compress index table column migration retry"
)
WORDS = tuple(_VOCABULARY.split())
# Zipf-like weights: common words far more often than rare ones, as in real prose.
WEIGHTS = [1.0 / (rank + 1) for rank in range(len(WORDS))]


def _sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, WEIGHTS, k=rng.randint(6, 18))
    text = " ".join(words)
    if rng.random() < 0.15:
        text += f" `{rng.choice(WORDS)}_{rng.choice(WORDS)}()`"
    return text[0].upper() + text[1:] + rng.choice(".....?!")


def _prose(rng: random.Random, low: int, high: int) -> str:
    target = rng.randint(low, high)
    parts: list[str] = []
    size = 0
    while size < target:
        if parts and rng.random() < 0.1:
            part = "\n\n- " + _sentence(rng)
        elif parts and rng.random() < 0.15:
            part = "\n\n" + _sentence(rng)
        else:
            part = (" " if parts else "") + _sentence(rng)
        parts.append(part)
        size += len(part)
    return "".join(parts)[:target]


def _tool_result(rng: random.Random) -> str:
    """Pretty-printed JSON records, 4-8 KB once embedded as a JSON string in the message."""
    target = rng.randint(4000, 8000)
    records: list[dict[str, Any]] = []
    while True:
        record = {
            "id": rng.randint(1, 10**6),
            "path": "/srv/app/" + "/".join(rng.choices(WORDS[:60], k=3)) + ".py",
            "status": rng.choice(["ok", "ok", "ok", "modified", "error"]),
            "size": rng.randint(10, 100_000),
            "score": round(rng.random(), 4),
            "tags": rng.sample(WORDS[:40], 2),
        }
        text = json.dumps({"count": len(records) + 1, "results": [*records, record]}, indent=1)
        if records and len(json.dumps(text)) > target:
            return json.dumps({"count": len(records), "results": records}, indent=1)
        records.append(record)


def make_workload(count: int, seed: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """``count`` messages ``(kind, content blocks)``: user, assistant and tool in turn."""
    rng = random.Random(seed)
    messages: list[tuple[str, list[dict[str, Any]]]] = []
    for i in range(count):
        kind = ("user", "assistant", "tool")[i % 3]
        if kind == "user":
            content: list[dict[str, Any]] = [{"type": "text", "text": _prose(rng, 70, 130)}]
        elif kind == "assistant":
            content = [{"type": "text", "text": _prose(rng, 1000, 2000)}]
            if rng.random() < 0.5:
                tool_id = "toolu_" + "".join(rng.choices(string.ascii_letters, k=24))
                content.append(
                    {"type": "tool_use", "id": tool_id, "name": "search",
                     "input": {"query": _sentence(rng), "limit": rng.randint(5, 50)}}
                )  # fmt: skip
        else:
            tool_id = "toolu_" + "".join(rng.choices(string.ascii_letters, k=24))
            content = [
                {"type": "tool_result", "tool_use_id": tool_id,
                 "content": [{"type": "text", "text": _tool_result(rng)}]}
            ]  # fmt: skip
        messages.append((kind, content))
    return messages


# -- the candidates -----------------------------------------------------------------------------


@dataclass
class System:
    """A way to store a message: encode to what is stored, decode back."""

    name: str
    encode: Callable[[Any], bytes | str]
    decode: Callable[[Any], Any]


def _stdlib_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _binary(
    name: str,
    dumps: Callable[[Any], bytes],
    loads: Callable[[bytes], Any],
    compress: Callable[[bytes], bytes] | None,
    decompress: Callable[[bytes], bytes],
) -> System:
    # The same layout as convostore: one header byte, then plain or compressed JSON.
    def encode(value: Any) -> bytes:
        raw = dumps(value)
        if compress is None or len(raw) <= THRESHOLD:
            return b"\x01" + raw
        return b"\x02" + compress(raw)

    def decode(stored: bytes) -> Any:
        if stored[0] == 1:
            return loads(stored[1:])
        return loads(decompress(stored[1:]))

    return System(name, encode, decode)


def _axio_encode(value: Any) -> str:
    # axio-context-sqlite: json.dumps, then "plain:" below 512 bytes, else gzip level 6 +
    # base64, stored as TEXT.
    data = json.dumps(value)
    raw = data.encode()
    if len(raw) < THRESHOLD:
        return "plain:" + data
    return "gzip:" + base64.b64encode(gzip.compress(raw, compresslevel=6)).decode()


def _axio_decode(stored: str) -> Any:
    if stored.startswith("gzip:"):
        return json.loads(gzip.decompress(base64.b64decode(stored[5:])).decode())
    if stored.startswith("plain:"):
        return json.loads(stored[6:])
    return json.loads(stored)


def make_systems() -> list[System]:
    """Every candidate, axio's format first and convostore's actual codec last."""
    json_libs: list[tuple[str, Callable[[Any], bytes], Callable[[bytes], Any]]] = [
        ("json", _stdlib_dumps, json.loads),
        ("orjson", orjson.dumps, orjson.loads),
    ]
    compressors: list[tuple[str, Callable[[bytes], bytes] | None, Callable[[bytes], bytes]]] = [
        ("zlib-6", lambda raw: zlib.compress(raw, 6), zlib.decompress),
        ("gzip-6", lambda raw: gzip.compress(raw, 6, mtime=0), gzip.decompress),
    ]
    decompressor = zstandard.ZstdDecompressor()
    for level in (1, 3, 6):
        compressor = zstandard.ZstdCompressor(level=level, write_content_size=True)
        compressors.append((f"zstd-{level}", compressor.compress, decompressor.decompress))
    compressors.append(("none", None, bytes))

    systems = [System("axio (json + gzip-6 + base64)", _axio_encode, _axio_decode)]
    for json_name, dumps, loads in json_libs:
        for comp_name, compress, decompress in compressors:
            systems.append(
                _binary(f"{json_name} + {comp_name}", dumps, loads, compress, decompress)
            )
    systems.append(System("convostore codec.encode/decode", codec.encode, codec.decode))
    return systems


# -- measurement -------------------------------------------------------------------------------


def stored_size(stored: bytes | str) -> int:
    return len(stored.encode()) if isinstance(stored, str) else len(stored)


def _time_per_item(func: Callable[[Any], object], items: list[Any]) -> float:
    """Microseconds per call of ``func`` over ``items``."""
    start = time.perf_counter_ns()
    for item in items:
        func(item)
    return (time.perf_counter_ns() - start) / len(items) / 1000


def measure(
    systems: list[System], values: list[Any], rounds: int
) -> dict[str, tuple[float, float]]:
    """Median encode and decode µs per message of each system."""
    encode_times: dict[str, list[float]] = {s.name: [] for s in systems}
    decode_times: dict[str, list[float]] = {s.name: [] for s in systems}
    stored = {s.name: [s.encode(v) for v in values] for s in systems}
    gc.disable()
    try:
        for round_no in range(rounds):
            shift = round_no % len(systems)
            order = systems[shift:] + systems[:shift]
            if round_no % 2:
                order.reverse()
            for system in order:
                encode_times[system.name].append(_time_per_item(system.encode, values))
                decode_times[system.name].append(_time_per_item(system.decode, stored[system.name]))
    finally:
        gc.enable()
    return {
        name: (statistics.median(encode_times[name]), statistics.median(decode_times[name]))
        for name in encode_times
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=1200)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args(argv)

    workload = make_workload(args.messages, args.seed)
    values = [content for _, content in workload]
    systems = make_systems()
    for system in systems:
        for value in values:
            if system.decode(system.encode(value)) != value:
                raise SystemExit(f"{system.name} does not round-trip")

    sizes = {s.name: [stored_size(s.encode(v)) for v in values] for s in systems}
    times = measure(systems, values, args.rounds)

    axio = systems[0].name
    axio_bytes = statistics.fmean(sizes[axio])
    axio_enc, axio_dec = times[axio]
    json_sizes = [len(orjson.dumps(v)) for v in values]
    kinds = sorted({kind for kind, _ in workload})

    print(
        f"Workload: {len(values)} messages (seed {args.seed}), "
        f"{statistics.fmean(json_sizes):.0f} bytes of compact JSON per message on average; "
        f"median of {args.rounds} rounds."
    )
    print(
        f"Python {platform.python_version()}, orjson {orjson.__version__}, "
        f"zstandard {zstandard.__version__}, zlib {zlib.ZLIB_RUNTIME_VERSION}, "
        f"{platform.machine()}."
    )
    print()
    print(
        "| system | bytes/msg | vs axio | encode µs/msg | decode µs/msg "
        "| encode vs axio | decode vs axio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for system in systems:
        mean = statistics.fmean(sizes[system.name])
        enc, dec = times[system.name]
        print(
            f"| {system.name} | {mean:,.0f} | {mean / axio_bytes:.2f} | {enc:.1f} | {dec:.1f} "
            f"| {enc / axio_enc:.2f} | {dec / axio_dec:.2f} |"
        )
    print()
    print("Bytes per message by kind:")
    print()
    print("| system | " + " | ".join(kinds) + " |")
    print("|---|" + "---:|" * len(kinds))
    cells = []
    for kind in kinds:
        picked = [n for (k, _), n in zip(workload, json_sizes, strict=True) if k == kind]
        cells.append(f"{statistics.fmean(picked):,.0f}")
    print("| compact JSON, uncompressed | " + " | ".join(cells) + " |")
    for name in (axio, "orjson + zlib-6", "orjson + zstd-3", systems[-1].name):
        cells = []
        for kind in kinds:
            picked = [n for (k, _), n in zip(workload, sizes[name], strict=True) if k == kind]
            cells.append(f"{statistics.fmean(picked):,.0f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
