"""Everything the console shows in English has its French: every literal text its
templates and pages translate is registered (console.i18n)."""

from __future__ import annotations

import re
from pathlib import Path

import console.app
from console import i18n

CONSOLE = Path(console.__file__).parent
_LITERAL = re.compile(r"""\bt\(\s*(['"])(.+?)\1\s*[,)]""", re.DOTALL)


def test_every_text_the_console_shows_has_its_french() -> None:
    texts = set()
    for path in [*CONSOLE.glob("templates/*.html"), *CONSOLE.glob("*.py")]:
        texts |= {match.group(2) for match in _LITERAL.finditer(path.read_text())}
    assert len(texts) > 100, "the texts were found"
    assert i18n.missing_french(sorted(texts)) == []
