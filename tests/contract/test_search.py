"""Search over history, on both interfaces, for every implementation.

The in-memory reference and every SQL backend (SQLite FTS5, PostgreSQL full-text, MariaDB
FULLTEXT) must find the same messages for the same query, scoped the same way, and page
through them without losing or repeating a hit. Ranks differ between backends (each scores
in its own way); what is asserted of them holds for all.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from convostore import ContextMessage, ContextStore, ValidationError
from convostore.models import ContextSearchHit
from tests.contract.conftest import MakeDatabase, MakeStore


def user(text: str) -> ContextMessage:
    return ContextMessage(role="user", content=[{"type": "text", "text": text}])


def positions(hits: list[ContextSearchHit]) -> list[tuple[str, int]]:
    return sorted((hit.session_id, hit.message.position) for hit in hits)


async def found(store: ContextStore, query: str, **kwargs: Any) -> list[tuple[str, int]]:
    return positions(await store.search(query, limit=1000, **kwargs))


async def test_every_word_must_match_and_case_accents_and_prefixes_are_folded(
    make_store: MakeStore,
) -> None:
    store = await make_store(session_id="s")
    await store.append_many(
        [
            user("How do I deploy the Café app to production?"),
            ContextMessage(
                role="assistant",
                content=[
                    {"type": "text", "text": "Deployment runs in Docker."},
                    {"type": "tool_use", "id": "t1", "name": "shell", "input": {"cmd": "zebra"}},
                ],
            ),
            ContextMessage(
                role="tool",
                content=[
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "an AI in Go said ok"}],
                    }
                ],
            ),
        ]
    )
    assert await found(store, "deploy") == [("s", 0)]
    assert await found(store, "DEPLOY*") == [("s", 0), ("s", 1)]
    assert await found(store, "cafe PRODUCTION") == [("s", 0)]
    assert await found(store, "café") == [("s", 0)]
    assert await found(store, "docker production") == []
    # Words of one and two letters, inside a tool result.
    assert await found(store, "ai go") == [("s", 2)]
    assert await found(store, "a") == []
    # Tool inputs are not searched.
    assert await found(store, "zebra") == []


async def test_query_syntax_is_never_passed_through(make_store: MakeStore) -> None:
    store = await make_store(session_id="s")
    await store.append(user("alpha beta gamma"))
    for query in ['"alpha" OR -beta (', "alpha AND NOT", "alpha:* & !beta", "+alpha -beta ~"]:
        hits = await store.search(query)
        assert positions(hits) in ([("s", 0)], []), query
    assert await found(store, '"alpha" OR -beta (') == []  # "or" is a word that is missing
    assert await found(store, "alpha; DROP TABLE messages") == []
    assert await found(store, "(alpha) [beta] {gamma}") == [("s", 0)]


async def test_search_is_scoped_to_the_project_and_optionally_one_session(
    make_store: MakeStore,
) -> None:
    mine = await make_store(session_id="a", project="/mine")
    await mine.append(user("shared secret word"))
    await mine.with_session("b").append(user("shared word again"))  # type: ignore[attr-defined]
    other_project = await make_store(session_id="a", project="/theirs")
    await other_project.append(user("shared secret word"))
    other_namespace = await make_store(session_id="a", project="/mine", namespace="other")
    await other_namespace.append(user("shared secret word"))

    assert await found(mine, "shared") == [("a", 0), ("b", 0)]
    assert await found(mine, "shared", session_id="b") == [("b", 0)]
    assert await found(mine, "secret", session_id="b") == []
    assert await found(other_project, "shared") == [("a", 0)]
    assert await found(other_namespace, "shared") == [("a", 0)]


async def test_pages_cover_every_hit_once_best_first(make_store: MakeStore) -> None:
    store = await make_store(session_id="s")
    # Same length, different counts of the word: more occurrences rank higher everywhere.
    texts = [" ".join(["needle"] * (n % 5 + 1) + ["hay"] * (5 - n % 5)) for n in range(23)]
    await store.append_many([user(t) for t in texts])
    await store.append(user("nothing to find here"))

    pages: list[list[ContextSearchHit]] = []
    before = None
    while True:
        page = await store.search("needle", limit=5, before=before)
        if not page:
            break
        pages.append(page)
        before = page[-1]
    hits = [hit for page in pages for hit in page]
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    assert positions(hits) == [("s", n) for n in range(23)]
    ranks = [hit.rank for hit in hits]
    assert ranks == sorted(ranks, reverse=True)
    counts = [hit.message.content[0]["text"].count("needle") for hit in hits]
    assert counts == sorted(counts, reverse=True)


async def test_pages_stay_exact_while_others_write_between_them(make_store: MakeStore) -> None:
    # Ranks come from each message alone: writes elsewhere (another project here, whose
    # words would shift table-wide statistics) move no cursor.
    store = await make_store(session_id="s", project="/mine")
    await store.append_many(
        [user(" ".join(["needle"] * (n % 4 + 1) + ["hay"] * (n % 7))) for n in range(40)]
    )
    other = await make_store(session_id="o", project="/theirs")
    seen: list[tuple[str, int]] = []
    before = None
    for page_number in range(20):
        page = await store.search("needle", limit=7, before=before)
        if not page:
            break
        seen.extend((hit.session_id, hit.message.position) for hit in page)
        before = page[-1]
        await other.append_many([user("needle " * (page_number + 1) + "x")] * 5)
    assert sorted(seen) == [("s", n) for n in range(40)]


async def test_a_message_ranks_the_same_in_its_session_and_its_project(
    make_store: MakeStore,
) -> None:
    store = await make_store(session_id="s")
    await store.append_many(
        [user("alpha beta alpha gamma"), user("alpha " * 5 + "beta"), user("beta alpha*")]
    )
    await store.with_session("t").append(user("alpha alpha"))  # type: ignore[attr-defined]
    for query in ("alpha", "alpha beta", "alph*", "alpha bet*"):
        everywhere = {(h.session_id, h.message.position): h.rank for h in await store.search(query)}
        mine = {
            (h.session_id, h.message.position): h.rank
            for h in await store.search(query, session_id="s")
        }
        assert mine == {key: rank for key, rank in everywhere.items() if key[0] == "s"}, query


async def test_snippets_highlight_the_matching_words(make_store: MakeStore) -> None:
    store = await make_store(session_id="s")
    long_text = " ".join(f"w{n}" for n in range(200)) + " The Deployment failed " + "tail " * 50
    await store.append(user(long_text))
    (hit,) = await store.search("deploy* failed")
    assert hit.snippet.startswith("…")
    assert hit.snippet.endswith("…")
    assert [hit.snippet[a:b] for a, b in hit.highlights] == ["Deployment", "failed"]
    assert "**Deployment** **failed**" in hit.highlighted()
    assert hit.message.content == [{"type": "text", "text": long_text}]


async def test_the_index_follows_every_write(make_store: MakeStore) -> None:
    store = await make_store(session_id="s")
    await store.append_many([user("first apple"), user("second apple"), user("third apple")])
    assert len(await store.search("apple")) == 3

    await store.pop()
    assert await found(store, "apple") == [("s", 0), ("s", 1)]

    fork = await store.fork()
    assert await found(store, "apple") == [
        (fork.session_id, 0),
        (fork.session_id, 1),
        ("s", 0),
        ("s", 1),
    ]
    early = await store.fork(at=1)
    assert (early.session_id, 1) not in await found(store, "apple")

    await store.replace_history([user("a banana now")])
    assert await found(store, "apple", session_id="s") == []
    assert await found(store, "banana") == [("s", 0)]

    await store.clear()
    assert await found(store, "banana") == []
    await fork.clear()
    await early.clear()
    assert await found(store, "apple") == []


async def test_concurrent_appends_are_all_found(make_store: MakeStore) -> None:
    stores = [await make_store(session_id=f"s{n}") for n in range(8)]
    await asyncio.gather(
        *(s.append(user(f"parallel write number{i}")) for s in stores for i in range(4))
    )
    hits = await stores[0].search("parallel", limit=100)
    assert len(hits) == 32
    assert len({(h.session_id, h.message.position) for h in hits}) == 32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": ""}, "no word"),
        ({"query": "*** ---"}, "no word"),
        ({"query": 42}, "must be a str"),
        ({"query": " ".join(f"w{n}" for n in range(17))}, "more than 16"),
        ({"query": "word " * 201}, "over 1000 characters"),
        ({"query": "x" * 65}, "over 64"),
        ({"query": "ok", "limit": 0}, "limit"),
        ({"query": "ok", "limit": 1001}, "limit"),
        ({"query": "ok", "limit": True}, "limit"),
        ({"query": "ok", "before": "cursor"}, "before"),
        ({"query": "ok", "session_id": ""}, "session_id"),
    ],
)
async def test_bad_arguments_are_refused(
    make_store: MakeStore, kwargs: dict[str, Any], message: str
) -> None:
    store = await make_store(session_id="s")
    arguments = dict(kwargs)  # the parameters are shared by every implementation's run
    query = arguments.pop("query")
    with pytest.raises(ValidationError, match=message):
        await store.search(query, **arguments)


# --- the agent database ---------------------------------------------------------------------


async def test_agent_messages_are_found_by_message_and_content(make_database: MakeDatabase) -> None:
    db = await make_database()
    await db.add_message("t1", "alice", "user", message="Where is my invoice?")
    await db.add_message(
        "t1", "alice", "agent", message="", content="The invoice was sent", kind="final_response"
    )
    await db.add_message(
        "t2", "bob", "user", message="invoice please", extra_inputs={"note": "zebra"}
    )
    await db.add_messages("t2", "bob", [{"role": "agent", "message": "here is the invoice"}])
    other = await make_database(agent_name="other")
    await other.add_message("t1", "alice", "user", message="invoice for other agent")

    def keys(hits: list[Any]) -> list[tuple[str, int]]:
        return sorted((h.message.thread_id, h.message.idx) for h in hits)

    assert keys(await db.search("invoice")) == [("t1", 0), ("t1", 1), ("t2", 0), ("t2", 1)]
    assert keys(await db.search("invoice", user_id="alice")) == [("t1", 0), ("t1", 1)]
    assert keys(await db.search("invoice", thread_id="t2")) == [("t2", 0), ("t2", 1)]
    assert keys(await db.search("invoice", user_id="alice", thread_id="t2")) == []
    assert keys(await db.search("zebra")) == []
    assert keys(await other.search("invoice")) == [("t1", 0)]
    (hit,) = await db.search("sent")
    assert hit.message.content == "The invoice was sent"
    assert hit.snippet[slice(*hit.highlights[0])] == "sent"

    first = await db.search("invoice", limit=3)
    rest = await db.search("invoice", limit=3, before=first[-1])
    assert keys(first + rest) == keys(await db.search("invoice"))
    assert len(first) == 3
    assert len(rest) == 1

    with pytest.raises(ValidationError):
        await db.search("invoice", before=first[0].model_copy().message)  # type: ignore[arg-type]
