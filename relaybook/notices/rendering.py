"""Each message as its recipient gets it: the notice's templates (compiled once, for the
last ``KEEP`` notices) rendered over the recipient's data in their language
(relaybook.content). The send worker renders what it sends, the API's preview what would
be sent; rendering is deterministic, so the same message rendered again (a text in doubt
after a crash, looked for in Twilio's list; a preview) gives the same text."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import orjson

from relaybook.content.messages import DEFAULT_LANGUAGE, NoticeContent, Rendered, by_language


class Row(Protocol):
    """A database row (or a dict) read by column name."""

    def __getitem__(self, key: str, /) -> Any: ...


#: notices whose compiled templates a worker keeps
KEEP = 64


class Renderer:
    def __init__(self) -> None:
        self._contents: dict[uuid.UUID, NoticeContent] = {}

    def render(self, row: Row, notice: Row) -> Rendered:
        """The message of a delivery ``row`` (``channel``, ``recipient_id``, ``name``,
        ``reads``: the recipient's language, ``data``: the JSON of their notice_data) of
        ``notice`` (a row of the notices table: its content columns, ``title``,
        ``source_reference``, ``agency_id``); raises
        :class:`relaybook.content.templates.RenderError`."""
        content = self._content(notice)
        # content that names no recipient is rendered once per language, for everyone
        values = _values(row, notice) if content.personal else _notice_values(notice)
        return content.render(row["channel"], row["reads"], values)

    def _content(self, notice: Row) -> NoticeContent:
        content = self._contents.pop(notice["id"], None)
        if content is None:
            language = notice["default_language"] or DEFAULT_LANGUAGE  # notices from before it
            content = NoticeContent(language, _texts(notice, language))
        self._contents[notice["id"]] = content  # the most recent last
        while len(self._contents) > KEEP:
            del self._contents[next(iter(self._contents))]
        return content


def _texts(notice: Row, language: str) -> dict[str, Any]:
    """A notice's content by language, from its row (load_contents)."""
    email = (
        {
            "subject": notice["email_subject"],
            "text": notice["email_text"],
            "html": notice["email_html"],
        }
        if notice["email_subject"]
        else None
    )
    others = orjson.loads(notice["content"]) if notice["content"] else None
    return by_language(language, email, notice["sms_text"], others)


def _values(row: Row, notice: Row) -> dict[str, Any]:
    """What a recipient's templates read (relaybook.content.templates.ROOTS)."""
    return {
        "recipient": {"id": row["recipient_id"], "name": row["name"]},
        "data": orjson.loads(row["data"]) if row["data"] else {},
        **_notice_values(notice),
    }


def _notice_values(notice: Row) -> dict[str, Any]:
    """What every recipient's templates read alike: the notice and its agency."""
    return {
        "notice": {
            "id": str(notice["id"]),
            "title": notice["title"],
            "reference": notice["source_reference"],
        },
        "agency": {"id": notice["agency_id"]},
    }
