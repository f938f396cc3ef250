"""Moving data in and out of a convostore database, and the read-only queries behind the CLI.

Everything here works on an :class:`~sqlalchemy.ext.asyncio.AsyncEngine` whose schema is at
head, so it can be used from Python as well as through ``convostore`` on the command line:

* :func:`export_jsonl` / :func:`import_jsonl` (:mod:`.export`, :mod:`.importing`): the
  versioned JSONL export format (specified in ``docs/cli.md``): one header line, then one
  record per row, payloads as decoded JSON and timestamps as ISO-8601 UTC. Export → import
  into an empty database → export gives the same records; importing the same file twice
  adds nothing.
* :func:`import_axio` / :func:`import_agentstr` (:mod:`.importers`): copy an
  axio-context-sqlite database into the context store tables, or an agentstr SQLite
  database into the agent database tables.
* :func:`backfill` (:mod:`.reindex`): index messages written before search existed;
  :func:`rebuild_search_index`: SQLite's index emptied and built again from the messages.
* :func:`prune` (:mod:`.retention`) and :func:`stats` (:mod:`.sizes`: rows, bytes,
  compression ratio).
* :func:`list_sessions`, :func:`find_session_projects`, :func:`list_threads`,
  :func:`thread_messages`, :func:`session_transcript` (:mod:`.listings`): listings across
  projects or users, always within the scope given, as the public models.

Every statement runs through :class:`~convostore.sql.runner.TransactionRunner` (the one
transaction boundary: retries of transient conflicts, typed errors), and the statements
themselves live in :mod:`convostore.sql.repositories.admin`. Imports write in batches, one
transaction per batch, with ``INSERT`` that skips rows whose key already exists
(:func:`convostore.sql.dml.insert_ignore`); each batch reads its keys back in the same
transaction, so a row that did not arrive is an error, not a silent loss. An interrupted
import can simply be run again.
"""

from convostore.transfer._format import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    RECORD_TYPES,
    Progress,
    TransferReport,
)
from convostore.transfer.export import export_jsonl
from convostore.transfer.importers import import_agentstr, import_axio
from convostore.transfer.importing import import_jsonl
from convostore.transfer.listings import (
    SessionRow,
    SessionTranscript,
    ThreadRow,
    find_session_projects,
    list_sessions,
    list_threads,
    session_transcript,
    thread_messages,
)
from convostore.transfer.reindex import ReindexReport, backfill, rebuild_search_index
from convostore.transfer.retention import PruneReport, parse_age, prune
from convostore.transfer.sizes import Stats, stats

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "RECORD_TYPES",
    "Progress",
    "PruneReport",
    "ReindexReport",
    "SessionRow",
    "SessionTranscript",
    "Stats",
    "ThreadRow",
    "TransferReport",
    "backfill",
    "export_jsonl",
    "find_session_projects",
    "import_agentstr",
    "import_axio",
    "import_jsonl",
    "list_sessions",
    "list_threads",
    "parse_age",
    "prune",
    "rebuild_search_index",
    "session_transcript",
    "stats",
    "thread_messages",
]
