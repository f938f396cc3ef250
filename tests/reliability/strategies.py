"""Hypothesis strategies for JSON values, shared by the property and stateful suites."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1

# Text that reaches the awkward corners on purpose: NUL, escapes, emoji, astral planes.
AWKWARD = st.sampled_from(
    ["", "\x00", "a\x00b", "😀", "👩‍👩‍👧", "𝄞", "\U0010ffff", '"', "\\", "\n\t", "'; --", "%_"]
)
TEXT = st.one_of(st.text(max_size=20), AWKWARD)

SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=INT64_MIN, max_value=UINT64_MAX),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)


def json_values(max_leaves: int = 30) -> st.SearchStrategy[Any]:
    """Any exact JSON value the codec promises to keep: dicts, lists and the scalars."""
    return st.recursive(
        SCALARS,
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.dictionaries(TEXT, children, max_size=5),
        ),
        max_leaves=max_leaves,
    )


def content_blocks(max_blocks: int = 3, max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """A context message's content: a list of JSON objects, some of them text blocks."""
    text_block = st.builds(lambda t: {"type": "text", "text": t}, TEXT)
    other = st.dictionaries(TEXT, json_values(max_leaves), max_size=3)
    return st.lists(st.one_of(text_block, other), max_size=max_blocks)
