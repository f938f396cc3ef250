"""What the search index holds and how queries read (convostore.search), without SQL."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convostore import ValidationError, search


@pytest.mark.parametrize(
    ("text", "feed"),
    [
        ("How do I deploy the Café app?", "how_ do_ i__ deploy_ the_ cafe_ app_"),
        ("\U0001d400\U0001d401\U0001d402 \u2122 \u3392", "abc_ tm_ mhz_"),  # NFKD makes capitals
        ("ﬁle naïve nai\u0308ve STRASSE Straße", "file_ naive_ naive_ strasse_ strasse_"),
        ("ありがとう", "ありかとう_"),  # the voicing mark is removed, the word stays whole
        ("a" * 65 + " kept", "kept_"),  # over MAX_WORD: left out everywhere
        ("*** --- !!!", ""),
    ],
)
def test_feed(text: str, feed: str) -> None:
    assert search.feed(text) == feed


def test_every_indexed_word_ends_in_the_pad_and_has_three_characters() -> None:
    for word in search.feed("a an the and forty-two 42 ok").split():
        assert word.endswith("_")
        assert len(word) >= 3


def test_a_query_reads_words_as_the_feed_does() -> None:
    query = search.parse_query("Deploy* the CAFÉ, \U0001d400\U0001d401\U0001d402 deploy*")
    assert query.indexed_terms() == [
        ("deploy", True),
        ("the_", False),
        ("cafe_", False),
        ("abc_", False),
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "no word"),
        ("x" * 1001, "over 1000 characters"),
        (" ".join(f"w{n}" for n in range(17)), "more than 16 words"),
        ("word" * 20, "over 64 characters"),
    ],
)
def test_bad_queries(query: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        search.parse_query(query)


def test_a_long_query_is_refused_before_it_is_read() -> None:
    with pytest.raises(ValidationError, match="over 1000"):
        search.parse_query("word " * 100_000)


def test_count_matches_follows_the_feed() -> None:
    query = search.parse_query("ai go*")
    assert search.count_matches("An AI in Go, going", query) == 3
    assert search.count_matches("an AI alone", query) is None


def test_snippet_offsets_and_one_highlight_per_word() -> None:
    cut = search.snippet("ありがとう, ½ and naïve", search.parse_query("ありがとう naive 2").terms)
    assert [cut.text[a:b] for a, b in cut.highlights] == ["ありがとう", "½", "naïve"]
    long_text = (
        " ".join(f"w{n}" for n in range(100)) + " target " + " ".join("tail" for _ in range(50))
    )
    cut = search.snippet(long_text, search.parse_query("target").terms)
    assert cut.text.startswith("…")
    assert cut.text.endswith("…")
    assert [cut.text[a:b] for a, b in cut.highlights] == ["target"]


@given(
    st.lists(
        st.one_of(
            st.text(min_size=1, max_size=3),
            st.text(alphabet="aé字ﬁ", min_size=60, max_size=70),
            st.sampled_from(["a", "I", "7", "Café", "x" * 65, "\uff46\uff55\uff4c\uff4c"]),
        ),
        max_size=40,
    )
)
def test_the_feeds_fast_path_gives_the_words_one_at_a_time_give(parts: list[str]) -> None:
    text = " ".join(parts)
    assert search.feed(text) == search._bounded_feed(search.words(text))


def test_a_feed_over_max_feed_is_cut_as_word_by_word() -> None:
    text = "ab " * (search.MAX_FEED // 3) + "a " * 10
    assert search.feed(text) == search._bounded_feed(search.words(text))
    assert len(search.feed(text).encode()) <= search.MAX_FEED
