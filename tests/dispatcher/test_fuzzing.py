"""Fuzzing the API from its own OpenAPI document (schemathesis): every operation, with
valid and invalid requests, against the real servers. No answer may be a server error
(not even a 503: the servers are up), and every answer must be one the document
describes: its status code, content type, headers and body schema."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dispatcher import app
from relaybook.tooling.system import System
from tests.support import ADMIN, notice

#: examples per operation, per generation mode and per kind of path: enough to reach
#: every refusal, few enough for about a minute on two cores
EXAMPLES = 100
AUTH = {"Authorization": f"Bearer {ADMIN}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def system_options() -> dict[str, Any]:
    return {"only": {"dispatcher"}}


@dataclasses.dataclass
class Tally:
    statuses: collections.Counter[int] = dataclasses.field(default_factory=collections.Counter)
    #: operations whose answers were all refusals: their fuzzing never got past validation
    operations: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


def fuzz(url: str, ids: dict[str, str], tally: Tally) -> None:
    """Runs every operation of ``url``'s document with valid and invalid requests, on ids
    that exist and on generated ones."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", timeout=30)
    for result in schema.get_all_operations():
        operation = result.ok()
        names = [p.name for p in operation.path_parameters]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for known in (True, False) if names else (False,):
                strategy = operation.as_strategy(
                    generation_mode=mode,
                    headers=AUTH,
                    path_parameters={name: ids[name] for name in names} if known else None,
                )

                @settings(
                    max_examples=EXAMPLES,
                    database=None,  # nothing written in the tree
                    derandomize=True,  # the same requests on every run and in CI
                    deadline=None,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=strategy)
                def run(case: schemathesis.Case) -> None:
                    response = case.call(base_url=url, headers=AUTH, timeout=30)
                    tally.statuses[response.status_code] += 1
                    tally.operations[f"{case.operation.label} {response.status_code}"] += 1
                    assert response.status_code < 500, case.as_curl_command(headers=AUTH)
                    case.validate_response(response, checks=CHECKS, headers=AUTH)

                try:
                    run()
                except Unsatisfiable:
                    # negative mode with the path and headers fixed: nothing else to break
                    assert mode == GenerationMode.NEGATIVE


# every operation twice or four times, 100 requests each: 60 to 120 s on two shared cores
@pytest.mark.timeout(300)
async def test_fuzzed_requests_never_get_a_server_error_or_an_undocumented_answer(
    system: System, api: httpx.AsyncClient
) -> None:
    created = (await api.post("/v1/notices", json=notice(3))).json()
    delivery = (await api.get("/v1/journal", params={"limit": "1"})).json()["items"][0]
    ids = {
        "notice_id": created["id"],
        "delivery_id": delivery["delivery_id"],
        "recipient_id": "owner-0",
    }
    tally = Tally()
    # schemathesis is synchronous: in a thread, so this loop keeps serving its requests
    await asyncio.to_thread(fuzz, system.servers["dispatcher"].url, ids, tally)
    total = sum(tally.statuses.values())
    print(f"\nfuzzing: {total} requests, by status {sorted(tally.statuses.items())}")  # noqa: T201 - shown with -s
    assert not [status for status in tally.statuses if status >= 500]
    fuzzed = {label.rsplit(" ", 1)[0] for label in tally.operations}
    assert len(fuzzed) == len(app.operations(*[None] * 4))  # every one fuzzed
