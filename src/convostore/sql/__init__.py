"""Code that runs SQL or knows a backend.

The storage wing moves every such module here over time; the SQLite writer
(:mod:`convostore.sql.sqlite_writer`) and its precompiled statements
(:mod:`convostore.sql.precompiled`) start here.
"""
