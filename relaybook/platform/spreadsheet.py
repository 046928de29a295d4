"""CSV that a spreadsheet opens as the text it holds: every line relaybook writes as CSV
goes through :func:`line`, so that no cell runs as a formula.

Two defences (OWASP's "CSV injection"): every cell is quoted, so a spreadsheet that
splits lines on another separator than the file's (a French one splits on ``;``) still
keeps each cell whole; and a text starting as a formula would (``=``, ``+``, ``-``,
``@``, tab, CR) is written after a ``'``, which spreadsheets show as text and hide.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

#: how a cell starts when a spreadsheet would read it as a formula (OWASP's list)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> str | int | float:
    """``value`` as a CSV cell a spreadsheet shows and never runs: ``None`` is empty, a
    number stays a number (relaybook's own counts; a negative one is no formula), and any
    other value is text, after a ``'`` when it starts as a formula would."""
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    text = str(value)
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def line(cells: Iterable[object]) -> str:
    """One CSV line (ending in CRLF) of ``cells``, each quoted and made safe by
    :func:`cell`."""
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_ALL).writerow([cell(value) for value in cells])
    return buffer.getvalue()
