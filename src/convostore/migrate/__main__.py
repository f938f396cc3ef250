"""``python -m convostore.migrate``: the ``convostore db`` commands (see
:func:`convostore.cli.migrate_main`).

A package with ``__main__`` rather than a module run as a script: the package imports
``convostore.migrate`` itself, and running an already-imported module with ``-m`` executes
it a second time (runpy warns about exactly that).
"""

from convostore.cli import migrate_main

migrate_main()
