"""Import of the JSONL export format: records already present are skipped."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore.errors import ValidationError
from convostore.settings import redact
from convostore.transfer._format import (
    BY_NAME,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    RECORD_TYPES,
    NoProgress,
    Progress,
    TransferReport,
    check_row,
    parse_time,
)
from convostore.transfer._writer import Writer


async def import_jsonl(
    engine: AsyncEngine,
    lines: Iterable[bytes],
    *,
    source: str = "",
    progress: Progress | None = None,
) -> TransferReport:
    """Import a file in the JSONL export format; records already present are skipped.

    Args:
        engine: The destination, at head.
        lines: The file's lines (a binary file object works).
        source: How to name the file in the report.
        progress: Receives one unit per record written.

    Raises:
        ValidationError: The header or a record is not valid; the message names the line.
            Records before it have been imported (running the import again is safe).
    """
    progress = progress or NoProgress()
    report = TransferReport("import", source, redact(engine.url))
    iterator = iter(lines)
    header = _read_header(next(iterator, b""))
    counts = header.get("counts") if isinstance(header.get("counts"), dict) else None
    total = sum(v for v in counts.values() if isinstance(v, int)) if counts else None
    writer = Writer(engine, progress)
    await writer.begin()
    progress.start("importing records", total)
    for number, line in enumerate(iterator, 2):
        if not line.strip():
            continue
        name, row = _parse_record(line, number)
        await writer.add(name, row)
    await writer.finish(report)
    if counts is not None:
        for name in RECORD_TYPES:
            expected = counts.get(name, 0)
            if expected != writer.read.get(name, 0):
                raise ValidationError(
                    f"the header announces {expected} {name} records but the file holds "
                    f"{writer.read.get(name, 0)}: is the file truncated?"
                )
    return report


def _read_header(line: bytes) -> dict[str, Any]:
    try:
        header = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"line 1: not a convostore export (invalid JSON: {exc})") from exc
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise ValidationError(f"line 1: not a convostore export (no {EXPORT_FORMAT!r} header)")
    version = header.get("version")
    if version != EXPORT_VERSION:
        raise ValidationError(
            f"line 1: export format version {version!r} is not supported "
            f"(this convostore reads version {EXPORT_VERSION})"
        )
    return header


def _parse_record(line: bytes, number: int) -> tuple[str, dict[str, Any]]:
    where = f"line {number}"
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"{where}: invalid JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise ValidationError(f"{where}: a record must be a JSON object")
    kind = BY_NAME.get(record.get("type"))  # type: ignore[arg-type]
    if kind is None:
        raise ValidationError(
            f"{where}: unknown record type {record.get('type')!r}; "
            f"expected one of {list(RECORD_TYPES)}"
        )
    where = f"{where} ({kind.name})"
    missing = [name for name in kind.fields if name not in record and name not in kind.optional]
    if missing:
        raise ValidationError(f"{where}: missing fields {missing}")
    row = {name: record.get(name) for name in kind.fields}
    if "updated_at" in kind.optional and row["updated_at"] is None:
        row["updated_at"] = row["created_at"]
    for name in kind.timestamps:
        row[name] = parse_time(row[name], f"{where} {name}")
    check_row(kind.name, row, where)
    return kind.name, row
