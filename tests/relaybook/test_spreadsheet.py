"""Every CSV line relaybook writes: each cell quoted, and text that would start a
formula written after a ``'``; relaybook's own numbers as they are."""

from __future__ import annotations

import csv
import io

import pytest

from relaybook.platform import spreadsheet


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("=1+1", "'=1+1"),
        ("+33 6 12 34 56 78", "'+33 6 12 34 56 78"),
        ("-2+3", "'-2+3"),
        ("-5", "'-5"),  # a text that reads as a negative number is still text from outside
        ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("Dupont;=1+1", "Dupont;=1+1"),  # quoted whole, so never split at its ';'
        ("550 5.1.1 unknown user", "550 5.1.1 unknown user"),
        ("'already quoted", "'already quoted"),
        ("", ""),
        (None, ""),
        (-3, -3),  # relaybook's own count: a number, never a formula
        (2.5, 2.5),
        (True, "True"),
    ],
)
def test_a_cell_is_text_a_spreadsheet_never_runs(value: object, written: object) -> None:
    assert spreadsheet.cell(value) == written


def test_a_line_quotes_every_cell_and_reads_back_as_written() -> None:
    text = spreadsheet.line(["Dupont;=1+1", None, 3, 'say "hi"', "=cmd|' /C calc'!A0"])
    assert text == '"Dupont;=1+1","","3","say ""hi""","\'=cmd|\' /C calc\'!A0"\r\n'
    assert next(csv.reader(io.StringIO(text))) == [
        "Dupont;=1+1",
        "",
        "3",
        'say "hi"',
        "'=cmd|' /C calc'!A0",
    ]
