"""Search over history: what is indexed, how a query reads, and the snippets of hits.

Every backend indexes the same thing: the *feed* of a message, a line of normalised words
that convostore writes into the message row's ``search_text`` column in the same statement
as the message itself. The database keeps its full-text index in step with that column
(SQLite: an FTS5 table kept by triggers; PostgreSQL: the column is a ``tsvector``, made
from the feed as it is written, with a GIN index; MySQL/MariaDB: a ``FULLTEXT`` index), so every
write path (appends, group commits, replace_history, pop, clear, fork, prune, imports)
updates the index in its own transaction, and nothing can forget to.

The feed is built here, in Python, so that the three backends see identical words:

* text is taken from the message (agent database: the ``message`` text and a text
  ``content``; context store: every ``"text"`` string in the content blocks, tool results
  included), never from tool inputs or other JSON;
* words are runs of letters and digits, case-folded and compatibility-decomposed, with
  every non-spacing mark removed (``Café`` → ``cafe``, ``ﬁ`` → ``fi``);
* every word gets a trailing ``_`` (and words of one character two): MySQL/MariaDB's
  ``FULLTEXT`` ignores words under three characters and its stopwords, and no stopword
  ends in ``_``; the other backends' tokenizers drop it;
* words over :data:`MAX_WORD` characters are left out (MySQL/MariaDB cannot index them),
  and only the first :data:`MAX_FEED` bytes of a message's words are indexed
  (PostgreSQL's ``tsvector`` holds at most 1 MiB).

A query is read the same way: its words must all appear in a message (``AND``), and a word
ending in ``*`` matches as a prefix (``deploy*`` finds ``deployment``). Nothing in a query
is passed to the database as syntax, so no query can fail to parse or inject operators.

Snippets are cut in Python from the message's own text, so they read the same on every
backend and show the original words, not the feed.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from convostore.errors import ValidationError

__all__ = [
    "MAX_FEED",
    "MAX_QUERY_LENGTH",
    "MAX_QUERY_TERMS",
    "MAX_WORD",
    "Query",
    "Snippet",
    "Term",
    "context_feed",
    "context_text",
    "count_matches",
    "feed",
    "message_feed",
    "message_text",
    "page",
    "parse_query",
    "snippet",
]

MAX_WORD: Final = 64
"""Words longer than this many characters are not indexed."""

MAX_FEED: Final = 256 * 1024
"""At most this many bytes of a message's words are indexed."""

MAX_QUERY_TERMS: Final = 16
"""A query may hold at most this many words."""

MAX_QUERY_LENGTH: Final = 1000
"""A query may be at most this many characters long."""

MIN_WORD: Final = 3
PAD: Final = "_"

SNIPPET_WORDS: Final = 24
"""About this many words of context around the first match."""

T = TypeVar("T")

_WORD = re.compile(r"[^\W_]+")


@functools.cache
def _combining() -> re.Pattern[str]:
    """Every non-spacing mark (Unicode category Mn): the accents NFKD splits from letters
    (é = e + U+0301), and the vowel signs and voicing marks of other scripts, which would
    otherwise cut a word in two (\\w does not match them).

    Built on the first non-ASCII text, not at import: it reads the category of every code
    point (100-250 ms), which ``import convostore`` should not pay.
    """
    return re.compile(
        "["
        + "".join(
            re.escape(chr(c))
            for c in range(0x300, 0x110000)
            if unicodedata.category(chr(c)) == "Mn"
        )
        + "]"
    )


_QUERY_WORD = re.compile(r"([^\W_]+)(\*?)")


def normalise(text: str) -> str:
    """Text as the index reads it: case-folded, compatibility-decomposed, marks removed."""
    folded = text.casefold()
    if folded.isascii():
        return folded
    # Folded again after NFKD: decomposition can make capitals (the trade mark sign: TM).
    return _combining().sub("", unicodedata.normalize("NFKD", folded).casefold())


def _indexed(word: str) -> str:
    # Every word ends in "_", at least three characters in all: MySQL/MariaDB index no
    # shorter word, and none of its stopwords ends so (if an index rebuild brings the
    # stopword list back). SQLite's and PostgreSQL's tokenizers drop the "_".
    return word + PAD * max(1, MIN_WORD - len(word))


def words(text: str) -> list[str]:
    """The normalised words of ``text``, in order."""
    return _WORD.findall(normalise(text))


def feed(text: str) -> str:
    """What the index holds for ``text``: its words, normalised and padded, space-separated.

    ``""`` when there is nothing to index (a message without text stores ``""``, which the
    back-fill reads as "done", unlike ``NULL``: "not indexed yet").
    """
    found = words(text)
    if not found:
        return ""
    # The usual case in C-speed steps (SQLite's catch-up builds one feed per message):
    # no word over MAX_WORD, and a feed that cannot reach MAX_FEED bytes (at most four
    # bytes a character). Otherwise, word by word below: the same words, same order.
    if max(map(len, found)) <= MAX_WORD:
        if min(map(len, found)) > 1:
            joined = "_ ".join(found) + PAD
        else:
            joined = " ".join([w + PAD + PAD if len(w) == 1 else w + PAD for w in found])
        if 4 * len(joined) + 1 <= MAX_FEED:
            return joined
    return _bounded_feed(found)


def _bounded_feed(found: list[str]) -> str:
    # feed() word by word: words over MAX_WORD left out, and cut at MAX_FEED bytes.
    out: list[str] = []
    size = 0
    for plain in found:
        length = len(plain)
        if length > MAX_WORD:
            continue
        word = plain + PAD * max(1, MIN_WORD - length)
        size += (len(word) if word.isascii() else len(word.encode())) + 1
        if size > MAX_FEED:
            break
        out.append(word)
    return " ".join(out)


def context_text(content: Any) -> str:
    """The text of a context message's content: every ``"text"`` string, in order.

    Text blocks, and the text blocks nested in tool results, are found; tool inputs and
    other values are not text a person searches for.
    """
    return "\n".join(_texts(content))


def _texts(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            text = item.get("text")
            if type(text) is str:
                yield text
            nested = item.get("content")
            if type(nested) is list:
                stack.extend(reversed(nested))
        elif type(item) is list:
            stack.extend(reversed(item))


def context_feed(content: Any) -> str:
    """The feed of a context message's content: ``feed(context_text(content))``."""
    return feed(context_text(content))


def message_feed(message: str, content: Any) -> str:
    """The feed of an agent-database message: ``feed(message_text(message, content))``."""
    return feed(message_text(message, content))


def message_text(message: str, content: Any) -> str:
    """The text of an agent-database message: its ``message``, then a text ``content``."""
    if type(content) is str and content and content != message:
        return f"{message}\n{content}" if message else content
    return message


@dataclass(frozen=True, slots=True)
class Term:
    """One word of a query; ``prefix``: it matches words that start with it."""

    word: str
    prefix: bool

    def matches(self, word: str) -> bool:
        """Whether a normalised word of a text is a match for this term."""
        return word.startswith(self.word) if self.prefix else word == self.word


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query: terms that must all match (see :func:`parse_query`)."""

    text: str
    terms: tuple[Term, ...]

    def indexed_terms(self) -> list[tuple[str, bool]]:
        """``(word, prefix)`` pairs as the index holds words (short exact words padded)."""
        return [(t.word if t.prefix else _indexed(t.word), t.prefix) for t in self.terms]


def parse_query(query: object) -> Query:
    """Read a search query: words that must all appear, ``word*`` for a prefix.

    Characters other than letters, digits and a word's trailing ``*`` separate words;
    repeated words count once.

    Raises:
        ValidationError: ``query`` is not a string, has no word, or has more than
            :data:`MAX_QUERY_TERMS` words.
    """
    if type(query) is not str:
        raise ValidationError(f"query must be a str, not {type(query).__name__}")
    if len(query) > MAX_QUERY_LENGTH:
        raise ValidationError(f"query is over {MAX_QUERY_LENGTH} characters")
    terms: dict[Term, None] = {}
    for match in _QUERY_WORD.finditer(query):
        parts = words(match.group(1))
        for i, part in enumerate(parts):
            prefix = bool(match.group(2)) and i == len(parts) - 1
            if len(part) > MAX_WORD:
                raise ValidationError(f"query word {part[:20]!r}… is over {MAX_WORD} characters")
            terms[Term(part, prefix)] = None
            if len(terms) > MAX_QUERY_TERMS:
                raise ValidationError(f"query has more than {MAX_QUERY_TERMS} words")
    if not terms:
        raise ValidationError("query has no word to search for")
    return Query(query, tuple(terms))


def count_matches(text: str, query: Query) -> int | None:
    """How many words of ``text`` match ``query``'s terms, as the index reads both;
    ``None`` unless every term matches at least once (the in-memory store's search)."""
    tokens = feed(text).split(" ")
    total = 0
    for word, prefix in query.indexed_terms():
        found = sum(1 for t in tokens if (t.startswith(word) if prefix else t == word))
        if not found:
            return None
        total += found
    return total


def page(
    hits: Iterable[tuple[int, tuple[str, int], T]],
    limit: int,
    before: tuple[int, tuple[str, int]] | None,
) -> list[T]:
    """Sort ``(rank, key, hit)`` best first (ties by key) and cut one keyset page."""
    ordered = sorted(hits, key=lambda h: (-h[0], h[1]))
    if before is not None:
        rank, key = before
        ordered = [h for h in ordered if h[0] < rank or (h[0] == rank and h[1] > key)]
    return [hit for _, _, hit in ordered[:limit]]


@dataclass(frozen=True, slots=True)
class Snippet:
    """A piece of a message's text around its first match, and where the matches are."""

    text: str
    highlights: tuple[tuple[int, int], ...]


def snippet(text: str, terms: Sequence[Term], *, width: int = SNIPPET_WORDS) -> Snippet:
    """The part of ``text`` around its first match, with the ``(start, end)`` of each match.

    About ``width`` words are kept, a third of them before the first match; ``…`` marks
    text cut at either end. Offsets are into the returned text.
    """
    spans = list(_word_spans(text))
    hits = [i for i, (_, _, word) in enumerate(spans) if any(t.matches(word) for t in terms)]
    if not spans:
        return Snippet(text[: width * 8], ())
    first = hits[0] if hits else 0
    start_word = max(0, first - width // 3)
    end_word = min(len(spans), start_word + width)
    start_word = max(0, end_word - width)
    begin = 0 if start_word == 0 else spans[start_word][0]
    end = len(text) if end_word == len(spans) else spans[end_word - 1][1]
    head = "" if begin == 0 else "…"
    tail = "" if end == len(text) else "…"
    body = text[begin:end]
    shift = len(head) - begin
    # One highlight per word of the text (a word may hold several normalised words).
    highlights = tuple(
        dict.fromkeys(
            (spans[i][0] + shift, spans[i][1] + shift) for i in hits if start_word <= i < end_word
        )
    )
    return Snippet(head + body + tail, highlights)


def _word_spans(text: str) -> Iterable[tuple[int, int, str]]:
    for match in _WORD.finditer(text):
        for word in _WORD.findall(normalise(match.group())):
            yield match.start(), match.end(), word
