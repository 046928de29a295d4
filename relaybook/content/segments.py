"""How many SMS segments a text takes, as carriers (and Twilio, which bills by segment)
count them (3GPP TS 23.038 and 23.040):

- A text written only in the GSM 03.38 alphabet (GSM-7) takes 7 bits a character; a
  character of its extension table (``€ [ ] { } \\ ~ ^ |`` and the form feed) takes two.
  One segment holds 160 septets; a longer text is split into segments of 153 (the rest
  of each is the header that joins them), and a two-septet character is never split
  across two segments.
- Any other character makes the whole text UCS-2 (UTF-16): one segment holds 70 code
  units, a longer text segments of 67; a character outside the Basic Multilingual Plane
  (most emoji) takes two code units, never split either.
"""

from __future__ import annotations

import dataclasses

#: the GSM 03.38 basic alphabet (one septet each), the escape excepted
BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: its extension table: two septets each (the escape, then the character)
EXTENDED = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclasses.dataclass(frozen=True)
class Segments:
    encoding: str  # "GSM-7" or "UCS-2"
    count: int  # segments the text is sent in (0 for an empty text)
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2) the text takes


def count(text: str) -> Segments:
    """The segments ``text`` is sent in."""
    if all(c in BASIC or c in EXTENDED for c in text):
        widths = [2 if c in EXTENDED else 1 for c in text]
        return Segments("GSM-7", _split(widths, GSM7_SINGLE, GSM7_PART), sum(widths))
    widths = [2 if ord(c) > 0xFFFF else 1 for c in text]
    return Segments("UCS-2", _split(widths, UCS2_SINGLE, UCS2_PART), sum(widths))


def _split(widths: list[int], single: int, part: int) -> int:
    total = sum(widths)
    if total == 0:
        return 0
    if total <= single:
        return 1
    segments, used = 1, 0
    for width in widths:
        if used + width > part:  # a character never straddles two segments
            segments, used = segments + 1, 0
        used += width
    return segments
