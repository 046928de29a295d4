"""SMS segments as carriers count them: GSM-7 (160, then 153 a segment), UCS-2 (70, then
67), a two-unit character never split across segments."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from relaybook.content.segments import BASIC, EXTENDED, count

basic = st.text(alphabet=sorted(BASIC), max_size=700)


def test_a_french_text_in_the_gsm_alphabet_is_one_segment_up_to_160_characters() -> None:
    text = "Appel de fonds T1 : 1 234,56 EUR à régler avant le 31/12. Réf. DC-2026-Q4."
    assert (count(text).encoding, count(text).count) == ("GSM-7", 1)
    assert count("a" * 160).count == 1
    assert count("a" * 161).count == 2
    assert count("a" * 306).count == 2
    assert count("a" * 307).count == 3


def test_the_euro_sign_takes_two_septets_and_is_never_split() -> None:
    assert count("€").units == 2
    assert count("a" * 159 + "€").count == 2  # 161 septets
    # 152 septets, then a two-septet character: it goes whole to the second segment
    assert count("a" * 152 + "€" + "a" * 10).count == 2
    assert count("a" * 152 + "€" * 77).count == 3


def test_one_character_outside_the_gsm_alphabet_makes_the_whole_text_ucs2() -> None:
    assert count("Łódź").encoding == "UCS-2"
    assert count("ç" * 70).encoding == "UCS-2"  # lower-case ç is not in GSM 03.38
    assert count("ç" * 70).count == 1
    assert count("ç" * 71).count == 2
    assert count("ç" * 134).count == 2
    assert count("ç" * 135).count == 3


def test_an_emoji_takes_two_code_units_and_is_never_split() -> None:
    assert count("😀").units == 2
    assert count("a" * 68 + "😀").count == 1  # 70 units
    assert count("a" * 69 + "😀").count == 2
    # 134 units would fit two segments of 67; the emoji does not straddle the first
    assert count("a" * 66 + "😀" + "a" * 66).count == 3


def test_an_empty_text_takes_no_segment() -> None:
    assert count("").count == 0


@given(basic)
def test_a_text_of_basic_gsm_characters_takes_the_segments_of_its_length(text: str) -> None:
    n = len(text)
    expected = 0 if n == 0 else 1 if n <= 160 else math.ceil(n / 153)
    assert count(text) == count(text)
    assert (count(text).encoding, count(text).count, count(text).units) == ("GSM-7", expected, n)


@given(st.text(alphabet=sorted(BASIC | EXTENDED), max_size=500))
def test_every_segment_of_a_gsm_text_holds_its_septets(text: str) -> None:
    result = count(text)
    units = sum(2 if c in EXTENDED else 1 for c in text)
    assert result.units == units
    if units > 160:
        assert math.ceil(units / 153) <= result.count <= math.ceil(units / 152)
