"""Named SQL queries kept in one ``queries.sql`` per package, loaded once.

A file holds blocks that each start with ``-- name: <name>``; everything up to the next
such line is that query. Nobody has to hunt through Python for the SQL touching a table.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_NAME = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@functools.cache
def load(package: str, filename: str = "queries.sql") -> dict[str, str]:
    """The queries of ``package``'s ``filename``, by name (read once per process: every
    module of a package shares one dict)."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    parts = _NAME.split(text)
    queries = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    if len(queries) != len(parts[1::2]):
        raise ValueError(f"{package}/{filename} names a query twice")
    return queries
