"""The console's two languages. Templates and pages write English; each page module
registers the French of its own texts with :func:`french`, so one module's texts live
beside the page that shows them. The language comes from the ``rb_lang`` cookie (set by
the switch in the page header), else from the browser's ``Accept-Language``."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from babel.dates import format_datetime

LANGUAGES = ("en", "fr")
COOKIE = "rb_lang"
_FRENCH: dict[str, str] = {}


def french(texts: dict[str, str]) -> None:
    """Registers the French of some English texts (an English text has one French)."""
    for english, translated in texts.items():
        if _FRENCH.get(english, translated) != translated:
            raise ValueError(f"two French texts for {english!r}")
        _FRENCH[english] = translated


# The words every page shares (statuses, channels, roles): one French each, here.
french(
    {
        "queued": "en attente",
        "sent": "envoyé",
        "delivered": "livré",
        "opened": "ouvert",
        "clicked": "cliqué",
        "failed": "échec",
        "skipped": "non envoyé",
        "email": "e-mail",
        "sms": "SMS",
        "draft": "brouillon",
        "scheduled": "programmé",
        "sending": "en cours d'envoi",
        "partially_failed": "échecs partiels",
        "viewer": "lecteur",
        "manager": "gestionnaire",
        "administrator": "administrateur",
        "support": "support",
        "ops": "exploitation",
        "yes": "oui",
        "no": "non",
        "not_applicable": "non applicable",
        "Skip to content": "Aller au contenu",
        "Main": "Principal",
        "Language": "Langue",
        "Journal": "Journal de bord",
        "Preferences": "Préférences",
        "Unreachable owners": "Propriétaires injoignables",
        "Back to the notices": "Retour aux avis",
        "This page does not exist, or is not yours to see.":
            "Cette page n'existe pas, ou vous n'y avez pas accès.",
        "Your role does not allow this.": "Votre rôle ne le permet pas.",
        "This form has expired: reload the page and try again.":
            "Ce formulaire a expiré : rechargez la page et réessayez.",
        "The service is busy or restarting: try again in a moment.":
            "Le service est occupé ou redémarre : réessayez dans un instant.",
    }
)  # fmt: skip


def translate(language: str, text: str, **values: object) -> str:
    """``text`` in ``language``, with ``{name}`` replaced by ``values``. An English text
    without French shows in English (a test lists those: there should be none)."""
    if language == "fr":
        text = _FRENCH.get(text, text)
    return text.format(**values) if values else text


def missing_french(texts: list[str]) -> list[str]:
    return [text for text in texts if text not in _FRENCH]


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
