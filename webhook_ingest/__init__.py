"""Webhook ingest: signed provider webhooks in, canonical delivery events out."""


class WebhookError(Exception):
    """A webhook refused: ``status`` and ``code`` make the contract's error answer."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
