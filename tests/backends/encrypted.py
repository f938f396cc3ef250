"""What the encryption suites share: keys, a workload through both façades, raw reads."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from sqlalchemy import LargeBinary, Text, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import ContextMessage, SQLAlchemyContextStore, SQLAlchemyDatabase, encryption
from convostore.encryption import Keyring, decode_key, generate_key
from convostore.sql.rotation import sealed_columns
from convostore.sql.tables import Base
from convostore.sql.types import CompressedJSON

K1 = decode_key(generate_key())
K2 = decode_key(generate_key())
MARKER = "ZQXJ-marker-7731"
PROJECT = "/enc"
AGENT = "enc-agent"


def ring(*ids: str, current: str | None = None, clear_text: bool = True) -> Keyring:
    keys = {"k1": K1, "k2": K2}
    return Keyring({i: keys[i] for i in ids}, current=current, clear_text=clear_text)


def message(i: int, role: str = "user") -> ContextMessage:
    # Long enough to be compressed before it is encrypted.
    text = f"{MARKER} message {i} " + "lorem ipsum " * (i % 3) * 60
    return ContextMessage(role=role, content=[{"type": "text", "text": text}])


async def write(engine: AsyncEngine, session: str, start: int, count: int) -> None:
    """``count`` context messages and agent messages through every write path."""
    store = SQLAlchemyContextStore(engine, project=PROJECT, session_id=session)
    half = count // 2
    await store.append_many([message(i) for i in range(start, start + half)])
    # Concurrent single appends: group commit batches them into shared transactions.
    await asyncio.gather(
        *(store.append(message(i, "assistant")) for i in range(start + half, start + count))
    )
    db = SQLAlchemyDatabase(engine=engine, agent_name=AGENT)
    await asyncio.gather(
        *(
            db.add_message(
                session,
                "u",
                "user",
                message=f"{MARKER} text {i}",
                content=f"{MARKER} content {i}",
                extra_inputs={"i": i, "m": MARKER},
            )
            for i in range(start, start + 3)
        )
    )
    await db.add_messages(
        session, "u", [{"role": "agent", "message": f"{MARKER} reply", "kind": "final_response"}]
    )


async def read_all(engine: AsyncEngine, sessions: list[str]) -> dict[str, Any]:
    """Everything the façades read back, for comparisons."""
    out: dict[str, Any] = {}
    db = SQLAlchemyDatabase(engine=engine, agent_name=AGENT)
    for session in sessions:
        store = SQLAlchemyContextStore(engine, project=PROJECT, session_id=session)
        history = await store.get_history()
        messages = await db.get_messages(session, "u")
        out[session] = (
            [m.model_dump() for m in history],
            sorted(
                (m.message, m.content, m.role, m.kind, sorted(m.extra_inputs.items()))
                for m in messages
            ),
        )
    return out


async def raw_values(engine: AsyncEngine) -> dict[str, list[Any]]:
    """The stored value of every sealable column, by ``table.column``, as the database has it."""
    found: dict[str, list[Any]] = {}
    async with engine.connect() as conn:
        for name, columns in sealed_columns().items():
            table = Base.metadata.tables[name]
            for col in columns:
                kind = LargeBinary if isinstance(table.c[col].type, CompressedJSON) else Text
                rows = await conn.execute(select(type_coerce(table.c[col], kind)))
                found[f"{name}.{col}"] = [r[0] for r in rows if r[0] is not None]
    return found


async def payload_keys(engine: AsyncEngine) -> Counter[str | None]:
    """How many stored payloads are under each key id (``None``: plain)."""
    counts: Counter[str | None] = Counter()
    for values in (await raw_values(engine)).values():
        for value in values:
            if isinstance(value, bytes):
                counts[encryption.key_id_of(value)] += 1
    return counts


async def context_keys(engine: AsyncEngine) -> Counter[str | None]:
    """The key ids of the stored ``context_messages.content`` payloads."""
    table = Base.metadata.tables["context_messages"]
    async with engine.connect() as conn:
        rows = await conn.execute(select(type_coerce(table.c.content, LargeBinary)))
        return Counter(encryption.key_id_of(bytes(r[0])) for r in rows)
