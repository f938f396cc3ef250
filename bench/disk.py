"""Bytes on disk per message on SQLite: convostore with and without the search index, axio.

    python bench/disk.py [--messages 200] [--variants]

Each system gets a fresh file and ``--messages`` single appends of the benchmark's
generated messages (``bench/bench.py``'s pool, seed 5: ~1.9 KB of JSON each, prose, tool
calls and tool results), one session. convostore with the index is caught up first (the
index is part of what it stores). Then ``VACUUM`` and a WAL checkpoint, and the file size
divided by the message count. axio-context-sqlite is measured where it is installed (the
Python 3.12 environment: ``make venv312``, then ``.venv312/bin/python bench/disk.py``).

``--variants`` also rebuilds copies of convostore's file to show what each choice costs:
the bytes of each table and index (SQLite's ``dbstat``), the FTS5 table with other
``detail`` / ``columnsize`` options, other page sizes, and other zstd levels.
Results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench

from convostore import SQLAlchemyContextStore, codec, connect, search, transfer


def per_message(path: Path, count: int) -> float:
    with sqlite3.connect(path) as conn:
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size / count


async def convostore_file(path: Path, samples: list[bench.Sample], *, index: bool) -> float:
    engine = await connect(str(path), search_index=index)
    try:
        store = SQLAlchemyContextStore(engine, project="/bench", session_id="s")
        for sample in samples:
            await store.append(sample.cs)
        if index:
            await transfer.backfill(engine)
    finally:
        await engine.dispose()
    return per_message(path, len(samples))


async def axio_file(path: Path, samples: list[bench.Sample], axio: Any) -> float:
    conn = await axio.connect(path)
    try:
        store = axio.SQLiteContextStore(conn, "s", project="/bench")
        for sample in samples:
            await store.append(sample.axio)
    finally:
        await conn.close()
    return per_message(path, len(samples))


def tables(path: Path, count: int) -> dict[str, float]:
    """Bytes per message of each table and index (shadow tables by their own name)."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
        ).fetchall()
    return {name: size / count for name, size in rows}


def rebuilt_index(path: Path, count: int, options: str) -> float:
    """The context index rebuilt from the payloads with other FTS5 options."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT d.doc_id, m.content FROM context_search_docs d JOIN context_messages m "
            "USING (project, session_id, position)"
        ).fetchall()
        conn.execute("DROP TABLE context_search_vocab")
        conn.execute("DROP TABLE context_search")
        conn.execute(
            "CREATE VIRTUAL TABLE context_search USING fts5(search_text, content='', "
            f"tokenize='unicode61 remove_diacritics 0'{options})"
        )
        conn.executemany(
            "INSERT INTO context_search (rowid, search_text) VALUES (?, ?)",
            [(doc, search.context_feed(codec.decode(content))) for doc, content in rows],
        )
    return per_message(path, count)


def recompressed(path: Path, count: int, compress: Callable[[bytes], bytes]) -> float:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT rowid, content FROM context_messages").fetchall()
        for rowid, content in rows:
            data = bytes(content)
            if data[0] != codec.ZSTD:
                continue
            raw = zstandard.ZstdDecompressor().decompress(data[1:])
            conn.execute(
                "UPDATE context_messages SET content = ? WHERE rowid = ?",
                (bytes([codec.ZSTD]) + compress(raw), rowid),
            )
    return per_message(path, count)


def paged(path: Path, count: int, size: int) -> float:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute(f"PRAGMA page_size={size}")
        conn.execute("VACUUM")
    return path.stat().st_size / count


def variant(source: Path, work: Path, name: str) -> Path:
    target = work / f"{name}.db"
    shutil.copy(source, target)
    return target


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--variants", action="store_true")
    args = parser.parse_args()
    try:
        axio = importlib.import_module("axio_context_sqlite")
        axio_message = importlib.import_module("axio.messages").Message
    except ImportError:
        axio, axio_message = None, None
    pool = bench.generate_pool(5, 600, axio_message)
    samples = [pool[i % len(pool)] for i in range(args.messages)]
    json_bytes = sum(len(codec.encode(s.blocks, threshold=1 << 30)) - 1 for s in samples)
    print(f"{args.messages} appends, {json_bytes / len(samples):,.0f} bytes of JSON each")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = {
            "convostore, index on": await convostore_file(work / "on.db", samples, index=True),
            "convostore, index off": await convostore_file(work / "off.db", samples, index=False),
        }
        if axio is not None:
            results["axio-context-sqlite"] = await axio_file(work / "axio.db", samples, axio)
        axio_bytes = results.get("axio-context-sqlite")
        print(f"| system | bytes per message | {bench.TIMES} axio |\n|---|---|---|")
        for name, value in results.items():
            ratio = f"{value / axio_bytes:.2f}" if axio_bytes else "n/a"
            print(f"| {name} | {value:,.0f} | {ratio} |")
        if not args.variants:
            return
        count = len(samples)
        print("\n| table or index (index on) | bytes per message |\n|---|---|")
        for name, value in tables(work / "on.db", count).items():
            print(f"| {name} | {value:,.0f} |")
        print("\n| variant (index on) | bytes per message |\n|---|---|")
        print(f"| as shipped | {results['convostore, index on']:,.0f} |")
        for label, options in (
            ("FTS5 columnsize=0", ", columnsize=0"),
            ("FTS5 detail=column", ", detail=column"),
            ("FTS5 detail=none", ", detail=none"),
        ):
            path = variant(work / "on.db", work, label.replace(" ", "_").replace("=", "_"))
            print(f"| {label} | {rebuilt_index(path, count, options):,.0f} |")
        for size in (1024, 2048, 8192, 16384):
            path = variant(work / "on.db", work, f"page{size}")
            print(f"| page_size {size} | {paged(path, count, size):,.0f} |")
        for level in (1, 9, 19):
            compressor = zstandard.ZstdCompressor(level=level, write_content_size=True)
            path = variant(work / "on.db", work, f"zstd{level}")
            print(f"| zstd level {level} | {recompressed(path, count, compressor.compress):,.0f} |")
        raws = []
        with sqlite3.connect(work / "on.db") as conn:
            for (content,) in conn.execute("SELECT content FROM context_messages"):
                data = bytes(content)
                if data[0] == codec.ZSTD:
                    raws.append(zstandard.ZstdDecompressor().decompress(data[1:]))
        trained = zstandard.train_dictionary(16 * 1024, raws * 4)
        with_dict = zstandard.ZstdCompressor(level=3, dict_data=trained, write_content_size=True)
        path = variant(work / "on.db", work, "dict")
        size = recompressed(path, count, with_dict.compress)
        print(f"| zstd level 3 + 16 KiB dictionary (not counted) | {size:,.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
