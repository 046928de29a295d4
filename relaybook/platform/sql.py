"""Named SQL queries kept in one ``queries.sql`` per package, loaded once.

A file holds blocks that each start with ``-- name: <name>``; everything up to the next
such line is that query. Nobody has to hunt through Python for the SQL touching a table.
A line ``-- include: <package>.<name>`` stands for a package's named block (of its
``queries.sql``; the package name may be dotted), written in at load time: a rule that
several packages' queries apply is written once, and each query is still one statement
the planner sees whole.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_NAME = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_INCLUDE = re.compile(
    r"^[ \t]*-- include: ([a-z_][a-z0-9_.]*)\.([a-z_][a-z0-9_]*)[ \t]*$", re.MULTILINE
)


@functools.cache
def load(package: str, filename: str = "queries.sql") -> dict[str, str]:
    """The queries of ``package``'s ``filename``, by name (read once per process: every
    module of a package shares one dict)."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    parts = _NAME.split(text)
    written = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    if len(written) != len(parts[1::2]):
        raise ValueError(f"{package}/{filename} names a query twice")

    def included(match: re.Match[str]) -> str:
        owner, name = match.groups()
        own = owner == package and filename == "queries.sql"
        return (written if own else load(owner))[name]

    return {name: _INCLUDE.sub(included, body) for name, body in written.items()}


def expand(text: str) -> str:
    """``text`` with each ``-- include: <package>.<name>`` line replaced by that block of
    the package's ``queries.sql`` (SQL written outside a package's queries, such as the
    definitions the migrations apply from their owners' SQL)."""
    return _INCLUDE.sub(lambda match: load(match[1])[match[2]], text)
