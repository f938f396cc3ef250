"""``convostore.types`` is :mod:`convostore.sql.types`, the very same module object.

A public import path kept since the module moved under ``convostore.sql``: users and
Alembic revisions import it. Importing this module replaces itself in ``sys.modules`` by
the target, so ``import convostore.types`` gives ``convostore.sql.types`` (isinstance
checks, monkeypatching and pickled names see one module); the star import is what type
checkers read.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from convostore.sql import types as _target

if TYPE_CHECKING:
    from convostore.sql.types import *  # noqa: F403

sys.modules[__name__] = _target
