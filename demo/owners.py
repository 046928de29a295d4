"""The sample co-ownership: 120 owners of "Résidence Les Tilleuls". Most have an email
address and a mobile number; some lack one or the other; a few have the mailboxes and
numbers the provider sandbox makes fail (``provider_sandbox/scenarios.py``). Each owns
one lot or two, with a share of the building (in thousandths) that makes their deposit
call their own; a few read Dutch."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

SIZE = 120
_FIRST = ["Anne", "Bruno", "Claire", "David", "Elise", "Farid", "Gaëlle", "Hugo", "Inès", "Jules"]
_LAST = [
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
]

#: owner number -> the email address the sandbox makes fail, and how
BOUNCING = {1: "bounce", 2: "bounce", 3: "bounce"}  # hard bounce 5.1.1
FULL = {4: "full", 5: "full"}  # mailbox full 5.2.2: soft
BLOCKED = {6: "blocked", 7: "blocked"}  # 5.7.1 reputation block: the sender's fault
COMPLAINER = {8: "spam"}  # marks the notice as spam
NO_EMAIL = range(9, 17)
NO_PHONE = range(17, 21)
#: owner number -> phone ending the sandbox makes fail
FAILING_PHONES = {21: "3005", 22: "3003", 23: "3007"}  # unknown, unreachable, filtered
CLICKERS = range(24, 41)
#: owners who read Dutch (their language, kept on the recipient)
DUTCH = range(111, 121)
#: the quarter's budget, shared by thousandths
BUDGET_PER_THOUSANDTH = Decimal("37.50")
DUE = "2027-01-15"


def owner_id(number: int) -> str:
    return f"owner-{number:03d}"


def name(number: int) -> str:
    return f"{_FIRST[number % len(_FIRST)]} {_LAST[number % len(_LAST)]}"


def phone(number: int) -> str:
    """The owner's mobile number (the failing ones end in the sandbox's error code)."""
    if number in FAILING_PHONES:
        return f"+33610{number:02d}{FAILING_PHONES[number]}"
    return f"+33610{number:06d}"


def share(number: int) -> int:
    """The owner's thousandths: 5 to 12 (the sample's shares need not add up to 1000)."""
    return 5 + number * 7 % 8


def amount(number: int) -> Decimal:
    return share(number) * BUDGET_PER_THOUSANDTH


def data(number: int) -> dict[str, Any]:
    """What the deposit call says to this owner of their own."""
    lots = [f"A{number:03d}"] + ([f"C{number:03d}"] if number % 3 == 0 else [])
    return {
        "lots": lots,
        "share": share(number),
        "amount": str(amount(number)),
        "due": DUE,
        "reference": f"DC-2026-Q4-{number:03d}",
    }


def owners() -> list[dict[str, Any]]:
    people = []
    for number in range(1, SIZE + 1):
        person: dict[str, Any] = {"id": owner_id(number), "name": name(number)}
        if number in DUTCH:
            person["language"] = "nl-BE"
        scenario = {**BOUNCING, **FULL, **BLOCKED, **COMPLAINER}.get(number)
        if scenario:
            person["email"] = f"owner{number:03d}@{scenario}.sandbox.test"
        elif number not in NO_EMAIL:
            local = f"owner{number:03d}+click" if number in CLICKERS else f"owner{number:03d}"
            person["email"] = f"{local}@tilleuls.example.org"
        if number not in NO_PHONE:
            person["phone"] = phone(number)
        people.append(person)
    return people
