"""A notice's templates: rendered per recipient in their language, strict about what they
name, escaping HTML, bounded, and refused with the field at fault when they cannot be."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaybook.content.segments import count
from relaybook.content.templates import RenderError, compile_template, missing
from relaybook.platform.decoding import InvalidRequestError

DEPOSIT_CALL = (
    "Bonjour {{ recipient.name }},\n"
    "Lots {% for lot in data.lots %}{{ lot }}{% unless forloop.last %}, {% endunless %}"
    "{% endfor %} : {{ data.amount | money }} à régler avant le {{ data.due | date }}"
    " (quote-part {{ data.share | number }}). Référence {{ data.reference }}."
)


def values(language: str = "fr-FR", **data: Any) -> dict[str, Any]:
    return {
        "recipient": {"id": "owner-1", "name": "Jeanne Martin"},
        "data": {
            "lots": ["A12", "C3"],
            "amount": "1234.56",
            "due": "2026-12-31",
            "share": 1234.5,
            "reference": "DC-2026-Q4-0001",
            **data,
        },
        "notice": {"title": "Appel de fonds T1"},
        "agency": {"id": "syndic-paris"},
        "language": language,
    }


def test_a_deposit_call_says_each_owners_own_figures_in_french() -> None:
    text = compile_template("email.text", DEPOSIT_CALL).render(values())
    assert text == (
        "Bonjour Jeanne Martin,\nLots A12, C3 : 1\u202f234,56\xa0€ à régler avant le"
        " 31 décembre 2026 (quote-part 1\u202f234,5). Référence DC-2026-Q4-0001."
    )


@pytest.mark.parametrize(
    ("language", "money", "day"),
    [
        ("fr-FR", "1\u202f234,56\xa0€", "31 décembre 2026"),
        ("fr-BE", "1\u202f234,56\xa0€", "31 décembre 2026"),
        ("nl-BE", "€\xa01.234,56", "31 december 2026"),
        ("de-BE", "1.234,56\xa0€", "31. Dezember 2026"),
        ("en", "€1,234.56", "December 31, 2026"),
    ],
)
def test_money_and_dates_are_written_as_the_recipients_language_writes_them(
    language: str, money: str, day: str
) -> None:
    template = compile_template("sms.text", "{{ data.amount | money }} | {{ data.due | date }}")
    assert template.render(values(language)) == f"{money} | {day}"


def test_an_unknown_language_tag_falls_back_to_english_formats() -> None:
    template = compile_template("sms.text", "{{ data.amount | money }}")
    assert template.render(values("x-klingon")) == "€1,234.56"


def test_money_takes_another_currency_and_refuses_what_is_not_an_amount() -> None:
    assert compile_template("t", "{{ 12.5 | money: 'CHF' }}").render(values()) == "12,50\xa0CHF"
    with pytest.raises(RenderError, match="money expects a number"):
        compile_template("email.subject", "{{ data.amount | money }}").render(
            values(amount="douze")
        )


def test_html_escapes_every_value_and_text_keeps_it() -> None:
    name = '<img src=x onerror="alert(1)">'
    data = values(note=name)
    html = compile_template("email.html", "<p>{{ data.note }}</p>", html=True)
    assert html.render(data) == "<p>&lt;img src=x onerror=&#34;alert(1)&#34;&gt;</p>"
    assert compile_template("email.text", "{{ data.note }}").render(data) == name


@given(st.text(max_size=50))
def test_a_value_is_written_as_it_is_never_run_as_a_template(value: str) -> None:
    rendered = compile_template("sms.text", "[{{ data.note }}]").render(values(note=value))
    assert rendered == f"[{value}]"


def test_rendering_is_deterministic() -> None:
    template = compile_template("email.text", DEPOSIT_CALL)
    assert template.render(values()) == template.render(values())
    assert compile_template("email.text", DEPOSIT_CALL).render(values()) == template.render(
        values()
    )


def test_a_variable_missing_at_render_is_an_error_not_an_empty_string() -> None:
    template = compile_template(
        "sms.text", "{% for lot in data.lots %}{{ lot.number }}{% endfor %}"
    )
    with pytest.raises(RenderError) as refused:
        template.render(values())
    assert refused.value.field == "sms.text"


def test_a_null_value_is_present_and_renders_empty() -> None:
    template = compile_template("sms.text", "[{{ data.note }}]{% if data.note %}!{% endif %}")
    assert template.render(values(note=None)) == "[]"


def test_the_data_paths_some_recipients_lack_are_named_with_the_first_recipients() -> None:
    subject = compile_template("email.subject", "{{ data.reference }}")
    text = compile_template(
        "email.text", "{{ data.amount }} {{ data.lots[0] }} {{ recipient.name }}"
    )
    recipients = [
        ("o1", {"reference": "R1", "amount": 1, "lots": ["A"]}),
        ("o2", {"amount": 1, "lots": []}),
        *[(f"x{i}", {"reference": "R", "lots": ["B"]}) for i in range(10)],
        ("o3", {"reference": None, "amount": None, "lots": ["C"]}),
    ]
    assert missing([subject, text], recipients) == [
        ("data.reference", ["o2"]),
        ("data.amount", ["x0", "x1", "x2", "x3", "x4"]),
        ("data.lots[0]", ["o2"]),
    ]
    assert missing([subject], [("o1", {"reference": "R"})]) == []


def test_liquid_properties_of_an_array_need_no_key() -> None:
    template = compile_template("sms.text", "{{ data.lots.size }} {{ data.lots.first }}")
    assert missing([template], [("o1", {"lots": ["A", "B"]})]) == []
    assert template.render(values()) == "2 A12"


@pytest.mark.parametrize(
    ("source", "detail"),
    [
        ("{% if %}x{% endif %}", "is not a valid template"),
        ("{{ data.amount ", "is not a valid template"),
        ("{% include 'secrets' %}", "is not a valid template: unexpected tag 'include'"),
        ("{% render 'x' %}", "is not a valid template: unexpected tag 'render'"),
        ("{{ data.amount | shell }}", "uses an unknown filter: shell"),
        ("{{ settings.admin_token }}", "names 'settings'"),
        ("{{ env }}", "names 'env'"),
    ],
)
def test_a_template_that_cannot_be_used_is_refused_with_its_field(source: str, detail: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        compile_template("content.nl.email.subject", source)
    assert refused.value.field == "content.nl.email.subject"
    assert detail in refused.value.detail


@pytest.mark.parametrize(
    ("source", "limit"),
    [
        ("{% for a in (1..1000) %}{% for b in (1..1000) %}x{% endfor %}{% endfor %}", "loop"),
        (
            "{% assign s = 'xxxxxxxxxx' %}{% for i in (1..9000) %}{{ s }}{{ s }}{{ s }}"
            "{{ s }}{{ s }}{{ s }}{{ s }}{{ s }}{{ s }}{{ s }}{{ s }}{{ s }}{{ s }}{{ s }}"
            "{{ s }}{{ s }}{{ s }}{{ s }}{{ s }}{{ s }}{{ s }}{{ s }}{{ s }}{{ s }}{{ s }}"
            "{% endfor %}",
            "output",
        ),
    ],
)
def test_a_template_cannot_loop_or_write_without_bound(source: str, limit: str) -> None:
    with pytest.raises(RenderError, match=limit):
        compile_template("email.text", source).render(values())


def test_line_ends_are_kept_as_written_in_values_and_captures() -> None:
    template = compile_template(
        "email.text", "{{ data.note }}|{% capture c %}{{ data.note }}{% endcapture %}{{ c }}"
    )
    assert template.render(values(note="a\r\nb\rc")) == "a\r\nb\rc|a\r\nb\rc"


def test_a_text_gets_plain_spaces_so_that_it_stays_in_the_gsm_alphabet() -> None:
    email = compile_template("email.text", "{{ data.amount | money }}").render(values())
    text = compile_template("sms.text", "{{ data.amount | money }}", sms=True).render(values())
    assert email == "1\u202f234,56\xa0€"
    assert text == "1 234,56 €"
    assert count(text).encoding == "GSM-7"
