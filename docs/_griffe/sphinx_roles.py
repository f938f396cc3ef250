"""A griffe extension: Sphinx cross-reference roles in docstrings become links in the API docs.

The docstrings are Google style but refer to other objects the Sphinx way
(``:class:`~convostore.errors.DatabaseError```, ``:meth:`close```), which Markdown would
show verbatim. Each role becomes an optional autorefs link around the name in code: a link
where the target is documented on this site, plain code otherwise (``:func:`axio.blocks.to_dict```),
so an external or private target never breaks ``mkdocs build --strict``. Relative names
resolve in the docstring's own scope, as Sphinx does. A reST ``::`` that introduces a literal
block becomes ``:``, since Markdown already takes the indented block after it as code.
"""

from __future__ import annotations

import builtins
import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj):`(?P<target>~?[\w.]+)`")
LITERAL_BLOCK = re.compile(r"(?<=\S)::$", re.MULTILINE)
LITERAL_BLOCK_LINE = re.compile(r"^[ \t]*::[ \t]*$\n?", re.MULTILINE)


def identifier(obj: griffe.Object, name: str) -> str | None:
    """The full path ``name`` refers to from ``obj``'s docstring, or None if it is unknown.

    The first component is looked up in ``obj`` and its enclosing classes up to its module
    (members, then imports), not in the packages above: a role in ``integrations/axio.py``
    naming ``axio.compaction`` means the axio package, not that module. Other names are
    absolute: the package's own (``convostore.errors``), a built-in, or another package's
    (``datetime.timedelta`` even where ``datetime`` is the imported class).
    """
    first, _, rest = name.partition(".")
    scope: griffe.Object | None = obj
    while scope is not None:
        if first in scope.members:
            member = scope.members[first]
            resolved = member.target_path if isinstance(member, griffe.Alias) else member.path
            break
        if first in scope.imports:
            resolved = scope.imports[first]
            break
        scope = None if scope.is_module else scope.parent
    else:
        package = obj.package.name
        if name == package or name.startswith(f"{package}."):
            return name if exists(obj, name) else None
        if rest or hasattr(builtins, name):
            return name  # another package's, or a built-in
        return None
    if rest and not resolved.startswith(f"{obj.package.name}."):
        return name
    path = f"{resolved}.{rest}" if rest else resolved
    return path if not path.startswith(f"{obj.package.name}.") or exists(obj, path) else None


def exists(obj: griffe.Object, path: str) -> bool:
    """Whether ``path`` names an object of the loaded package (documented or not)."""
    try:
        obj.modules_collection[path]
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return False
    return True


def rewrite(obj: griffe.Object, text: str) -> str:
    """``text`` with its roles turned into autorefs and its ``::`` into ``:``.

    A role naming nothing in the package (a typo, a renamed function) is logged as a
    warning, which fails ``mkdocs build --strict``.
    """

    def link(match: re.Match[str]) -> str:
        target = match["target"]
        name = target.removeprefix("~")
        shown = name.rpartition(".")[2] if target.startswith("~") else name
        path = identifier(obj, name)
        if path is None:
            # griffe's logger: mkdocstrings reports it as an mkdocs warning.
            griffe.logger.warning(
                "%s:%s: %s refers to %r, which does not exist",
                obj.relative_filepath,
                obj.docstring.lineno if obj.docstring else obj.lineno,
                obj.path,
                name,
            )
            path = name
        ref = html.escape(path, quote=True)
        return f'<autoref identifier="{ref}" optional><code>{html.escape(shown)}</code></autoref>'

    text = ROLE.sub(link, text)
    return LITERAL_BLOCK_LINE.sub("", LITERAL_BLOCK.sub(":", text))


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring of the loaded package once its object tree is complete."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Walk the package (aliases are skipped: their targets carry the docstring)."""
        pending: list[griffe.Object] = [pkg]
        while pending:
            obj = pending.pop()
            if obj.docstring is not None:
                obj.docstring.value = rewrite(obj, obj.docstring.value)
            pending.extend(
                member
                for member in obj.members.values()
                if not member.is_alias and isinstance(member, griffe.Object)
            )
