"""``convostore.partitioning`` is :mod:`convostore.sql.partitioning`, the very same module object.

A public import path kept since the module moved under ``convostore.sql``: users and
Alembic revisions import it. Importing this module replaces itself in ``sys.modules`` by
the target, so ``import convostore.partitioning`` gives ``convostore.sql.partitioning`` (isinstance
checks, monkeypatching and pickled names see one module); the star import is what type
checkers read.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from convostore.sql import partitioning as _target

if TYPE_CHECKING:
    from convostore.sql.partitioning import *  # noqa: F403

sys.modules[__name__] = _target
