"""Everything the console shows in English has its French: every text Babel extracts from
its templates and pages (console/babel.cfg: the calls of ``t``, the marks ``N_``) is
translated in its French catalogue (console/locales/fr/LC_MESSAGES/console.po), and the
catalogue holds no text the console no longer shows."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg

import console
from console import i18n

CONSOLE = Path(console.__file__).parent
#: the keywords of console/babel.cfg's extract command
KEYWORDS = {"t": None, "N_": None, "pgettext": ((1, "c"), 2)}


def shown_texts() -> set[tuple[str | None, str]]:
    """(context, English) of every text the console shows, as Babel extracts them."""
    with (CONSOLE / "babel.cfg").open() as config:
        method_map, options_map = parse_mapping_cfg(config)
    found = set()
    for _, _, message, _, context in extract_from_dir(
        CONSOLE, method_map, options_map, keywords=KEYWORDS
    ):
        assert isinstance(message, str), f"no plural forms in the console: {message!r}"
        found.add((context, message))
    return found


def test_every_text_the_console_shows_has_its_french() -> None:
    texts = shown_texts()
    assert len(texts) > 200, "the texts were found"
    missing = sorted(text for context, text in texts if (context, text) not in i18n.catalogue("fr"))
    assert missing == []


def test_the_french_catalogue_holds_only_texts_the_console_shows() -> None:
    assert sorted(set(i18n.catalogue("fr")) - shown_texts(), key=str) == []


def test_a_text_shows_in_french_from_the_catalogue() -> None:
    assert i18n.translate("fr", "Notices") == "Avis"
    assert i18n.translate("fr", "Created {when}", when="hier") == "Créé le hier"
    assert i18n.translate("en", "Created {when}", when="today") == "Created today"
