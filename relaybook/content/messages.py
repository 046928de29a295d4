"""A notice's content in each of its languages, compiled once, and each recipient's
message rendered from it: in the language they read, or the notice's default, channel by
channel; with the SHA-256 of what was rendered, so that what a recipient was sent can be
proved, and for a text its segments.

The content is given as the API takes it: the default language's ``email`` and ``sms``,
and ``content: {language: {email, sms}}`` for the others. A language that gives only
one channel's content falls back to the default's for the other.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from relaybook.content import segments
from relaybook.content.templates import NAMED, Template, compile_template, missing
from relaybook.platform.decoding import InvalidRequestError

#: a notice's default language when it names none
DEFAULT_LANGUAGE = "fr"
#: the fields of each channel's content, and whether each is HTML
FIELDS = {"email": (("subject", False), ("text", False), ("html", True)), "sms": (("text", False),)}


def by_language(
    default_language: str,
    email: Mapping[str, str | None] | None,
    sms_text: str | None,
    others: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """A notice's content by language, as :class:`NoticeContent` takes it: the default
    language's ``email`` (subject, text, html) and text, then the other languages'."""
    return {
        default_language: {"email": email, "sms": {"text": sms_text} if sms_text else None},
        **(others or {}),
    }


def choose_language(wanted: str | None, available: Sequence[str], default: str) -> str:
    """The language a recipient gets: theirs if the notice has it (``nl-BE``), else one
    of the same language (``nl``, then ``nl-NL``), else the notice's default. Tags
    compare without case."""
    if not wanted:
        return default
    by_lower = {language.lower(): language for language in available}
    wanted = wanted.lower()
    if wanted in by_lower:
        return by_lower[wanted]
    primary = wanted.split("-")[0]
    if primary in by_lower:
        return by_lower[primary]
    for lower, language in by_lower.items():
        if lower.split("-")[0] == primary:
            return language
    return default


@dataclasses.dataclass(frozen=True)
class Rendered:
    """One recipient's message on one channel, as it goes out."""

    language: str
    parts: Mapping[str, str]  # subject, text, html for an email; text for a text
    sha256: str  # of the parts, canonical JSON (sorted keys, UTF-8)
    segments: segments.Segments | None  # for a text


class NoticeContent:
    """A notice's templates, compiled: ``texts`` is the content by language, each
    ``{"email": {"subject", "text", "html"?}, "sms": {"text"}}`` as stored."""

    def __init__(self, default_language: str, texts: Mapping[str, Mapping[str, Any]]) -> None:
        self.default_language = default_language
        self._templates: dict[tuple[str, str], dict[str, Template]] = {}
        for language, channels in texts.items():
            for channel, content in channels.items():
                if content is None:
                    continue
                where = "" if language == default_language else f"content.{language}."
                self._templates[language, channel] = {
                    name: compile_template(
                        f"{where}{channel}.{name}", content[name], html=html, sms=channel == "sms"
                    )
                    for name, html in FIELDS[channel]
                    if content.get(name) is not None
                }
        #: whether any template names the recipient or their data: if not, each
        #: language's message is rendered once for everyone
        self.personal = any(
            path[:1] in (("recipient",), ("data",)) for t in self.templates for path in t.paths
        )
        self._shared: dict[tuple[str, str], Rendered] = {}

    @property
    def templates(self) -> list[Template]:
        return [t for fields in self._templates.values() for t in fields.values()]

    def check(self, recipients: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """A 422 if some recipients lack a variable a template names: the first such
        variable, and the first recipients without it."""
        lacking = missing(self.templates, recipients)
        if lacking:
            path, ids = lacking[0]
            raise InvalidRequestError(
                "recipients",
                f"{path} is used by the notice's content and missing from the data of "
                f"{', '.join(ids)}{' and others' if len(ids) == NAMED else ''}",
            )

    def render(self, channel: str, wanted: str | None, values: Mapping[str, Any]) -> Rendered:
        """``channel``'s message in the recipient's language (``wanted``), or the
        default's; ``values`` has the templates' names but ``language``."""
        available = [lang for lang, ch in self._templates if ch == channel]
        language = choose_language(wanted, available, self.default_language)
        shared = None if self.personal else self._shared.get((channel, language))
        if shared is not None:
            return shared
        templates = self._templates[language, channel]
        values = {**values, "language": language}
        parts = {name: template.render(values) for name, template in templates.items()}
        digest = hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()
        counted = segments.count(parts["text"]) if channel == "sms" else None
        rendered = Rendered(language, parts, digest, counted)
        if not self.personal:
            self._shared[channel, language] = rendered
        return rendered
