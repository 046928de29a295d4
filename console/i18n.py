"""The console's two languages. Templates and pages write English; the French of every
text is in the console's message catalogue, ``console/locales/fr/LC_MESSAGES/console.po``
(gettext, through Babel), read as it is when the console starts: no compiled ``.mo`` to
build or to keep in step. A text shown from a constant or from the data (a status, a
label of a dict) is marked with :func:`N_` where it is written, so that Babel's
extraction finds it; ``console/babel.cfg`` says how to update the catalogue.

The language comes from the ``rb_lang`` cookie (set by the switch in the page header),
else from the browser's ``Accept-Language``."""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from babel.messages.pofile import read_po

from relaybook.reachability import reasons

LANGUAGES = ("en", "fr")
COOKIE = "rb_lang"
#: the catalogue: ``<language>/LC_MESSAGES/console.po`` under this folder
LOCALES = Path(__file__).with_name("locales")
DOMAIN = "console"


def N_(text: str) -> str:  # noqa: N802 - gettext's own name for "translated later"
    """Marks ``text`` as shown (translated where it is shown): Babel's extraction finds it."""
    return text


# The words every page shows from the data (statuses, channels, roles): marked once, here.
WORDS = (
    N_("queued"), N_("sent"), N_("delivered"), N_("opened"), N_("clicked"), N_("failed"),
    N_("skipped"), N_("email"), N_("sms"), N_("draft"), N_("scheduled"), N_("sending"),
    N_("partially_failed"), N_("viewer"), N_("manager"), N_("administrator"), N_("support"),
    N_("ops"), N_("yes"), N_("no"), N_("not_applicable"),
)  # fmt: skip


#: the label of each reason a message is not sent (the codes: relaybook.reachability.reasons),
#: the one every page shows; their French is the catalogue's
REASONS = {
    reasons.NO_ADDRESS: N_("No address"),
    reasons.OPTED_OUT: N_("Unsubscribed"),
    reasons.AUTO_UNSUBSCRIBED: N_("Unsubscribed automatically"),
    reasons.SUPPRESSED: N_("Suppressed address"),
}


def catalogue_path(language: str) -> Path:
    return LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.cache
def catalogue(language: str) -> dict[tuple[str | None, str], str]:
    """The translations of ``language``: (context, English) -> its text. Fuzzy entries
    (awaiting a translator's review) are left out, as ``msgfmt`` leaves them out."""
    path = catalogue_path(language)
    if not path.exists():
        return {}
    with path.open("rb") as file:
        read = read_po(file, locale=language, domain=DOMAIN)
    return {
        (message.context, message.id): message.string
        for message in read
        if message.id
        and isinstance(message.id, str)
        and isinstance(message.string, str)
        and message.string
        and not message.fuzzy
    }


def translate(language: str, text: str, **values: object) -> str:
    """``text`` in ``language``, with ``{name}`` replaced by ``values``. An English text
    without French shows in English (a test lists those: there should be none)."""
    text = catalogue(language).get((None, text), text)
    return text.format(**values) if values else text


def reason(language: str, code: str) -> str:
    """The label of a reason a message is not sent, in ``language`` (a code without a
    label, from a later version, shows as it is)."""
    label = REASONS.get(code)
    return translate(language, label) if label is not None else code


def missing_french(texts: list[str]) -> list[str]:
    """Those of ``texts`` the French catalogue does not translate."""
    french = catalogue("fr")
    return [text for text in texts if (None, text) not in french]


def language(cookie: str | None, accept_language: str) -> str:
    """The language of a request: the cookie's, else the best of ``Accept-Language`` we
    have, else English."""
    if cookie in LANGUAGES:
        return cookie
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else "en"


def when(value: dt.datetime | None, language: str, time_zone: str, *, short: bool = False) -> str:
    """A moment as the person reads it: in their time zone and language."""
    if value is None:
        return ""
    return format_datetime(
        value, "short" if short else "medium", tzinfo=ZoneInfo(time_zone), locale=language
    )
