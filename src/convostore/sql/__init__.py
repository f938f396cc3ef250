"""Code that runs SQL or knows a backend.

The transaction runner (:mod:`convostore.sql.runner`), group commit, engine creation and
its options, PgBouncer, read replicas, partitioning, the SQLite driver and writer, the
tables, the column types, the dialect helpers and the repositories live here. Nothing is
imported eagerly: ``import convostore.sql`` stays as light as the package itself.
"""
