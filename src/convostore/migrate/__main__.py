"""``python -m convostore.migrate``: see :func:`convostore.migrate.main`.

A package with ``__main__`` rather than a module run as a script: the package imports
``convostore.migrate`` itself, and running an already-imported module with ``-m`` executes
it a second time (runpy warns about exactly that).
"""

import sys

from convostore.migrate import main

sys.exit(main())
