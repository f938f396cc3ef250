"""SQL that differs between backends, re-exported from the modules that hold it by concern.

* :mod:`convostore.sql.dml`: upserts, insert-if-absent, multi-row inserts, the statement cache;
* :mod:`convostore.sql.counters`: counter bumps and inserts at the positions they reserve;
* :mod:`convostore.sql.fulltext`: matching and ranking of searches;
* :mod:`convostore.sql.retry`: which driver errors a transaction can be rerun after.
"""

from convostore.rules import INT64_MAX, checked_counter
from convostore.sql.counters import (
    appends_in_one_statement,
    bump_counter,
    bump_counters,
    insert_at_counter,
)
from convostore.sql.dml import (
    Executor,
    cached,
    family_of,
    insert_ignore,
    insert_rows,
    is_cached,
    params_for,
    upsert,
)
from convostore.sql.fulltext import text_matches
from convostore.sql.retry import is_retryable

__all__ = [
    "INT64_MAX",
    "Executor",
    "appends_in_one_statement",
    "bump_counter",
    "bump_counters",
    "cached",
    "checked_counter",
    "family_of",
    "insert_at_counter",
    "insert_ignore",
    "insert_rows",
    "is_cached",
    "is_retryable",
    "params_for",
    "text_matches",
    "upsert",
]
