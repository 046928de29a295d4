"""Each job's message as its recipient gets it: the notice's templates (compiled once per
worker, for the last ``KEEP`` notices) rendered over the recipient's data in their
language (relaybook.content). Rendering is deterministic, so the same job rendered again
(a text in doubt after a crash, looked for in Twilio's list) gives the same text."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson

from relaybook.content.messages import DEFAULT_LANGUAGE, NoticeContent, Rendered

#: notices whose compiled templates a worker keeps
KEEP = 64


class Renderer:
    def __init__(self) -> None:
        self._contents: dict[uuid.UUID, NoticeContent] = {}

    def render(self, row: asyncpg.Record, notice: asyncpg.Record) -> Rendered:
        """The message of a row of ``load_deliveries`` (its notice a row of
        ``load_notices``); raises :class:`relaybook.content.templates.RenderError`."""
        content = self._content(notice)
        # content that names no recipient is rendered once per language, for everyone
        values = _values(row, notice) if content.personal else _notice_values(notice)
        return content.render(row["channel"], row["reads"], values)

    def _content(self, notice: asyncpg.Record) -> NoticeContent:
        content = self._contents.pop(notice["id"], None) or NoticeContent(
            notice["default_language"] or DEFAULT_LANGUAGE, _texts(notice)
        )
        self._contents[notice["id"]] = content  # the most recent last
        while len(self._contents) > KEEP:
            del self._contents[next(iter(self._contents))]
        return content


def _texts(notice: asyncpg.Record) -> dict[str, Any]:
    """A notice's content by language, its default's first, as NoticeContent takes it."""
    email = (
        {
            "subject": notice["email_subject"],
            "text": notice["email_text"],
            "html": notice["email_html"],
        }
        if notice["email_subject"]
        else None
    )
    sms = {"text": notice["sms_text"]} if notice["sms_text"] else None
    others = orjson.loads(notice["content"]) if notice["content"] else {}
    language = notice["default_language"] or DEFAULT_LANGUAGE
    return {language: {"email": email, "sms": sms}, **others}


def _values(row: asyncpg.Record, notice: asyncpg.Record) -> dict[str, Any]:
    """What a recipient's templates read (relaybook.content.templates.ROOTS)."""
    return {
        "recipient": {"id": row["recipient_id"], "name": row["name"]},
        "data": orjson.loads(row["data"]) if row["data"] else {},
        **_notice_values(notice),
    }


def _notice_values(notice: asyncpg.Record) -> dict[str, Any]:
    """What every recipient's templates read alike: the notice and its agency."""
    return {
        "notice": {
            "id": str(notice["id"]),
            "title": notice["title"],
            "reference": notice["source_reference"],
        },
        "agency": {"id": notice["agency_id"]},
    }
