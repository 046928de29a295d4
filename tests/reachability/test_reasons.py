"""The reason codes a message is not sent are defined once (relaybook.reachability.reasons):
the contact rule writes those codes and no other, and the console labels each of them."""

from __future__ import annotations

import re

from console import i18n
from relaybook.platform import sql
from relaybook.reachability import reasons


def test_the_contact_rule_writes_the_reason_codes_defined_once() -> None:
    contact = sql.load("relaybook.reachability", "queries.sql")["contact"]
    skip_reason = contact[contact.index("CASE WHEN a.address IS NULL THEN 'no_address'") :]
    skip_reason = skip_reason[: skip_reason.index("AS skip_reason")]
    written = set(re.findall(r"THEN '(\w+)'", skip_reason))
    assert written == set(reasons.SKIP_REASONS) - {reasons.SUPPRESSED}


def test_the_console_labels_every_reason_code_in_both_its_languages() -> None:
    assert set(i18n.REASONS) == set(reasons.SKIP_REASONS)
    for code in reasons.SKIP_REASONS:
        assert i18n.reason("en", code) == i18n.REASONS[code]
        assert i18n.reason("fr", code) != i18n.REASONS[code], f"{code} has its French"
    assert i18n.reason("fr", "a_future_code") == "a_future_code", "shown as it is"
