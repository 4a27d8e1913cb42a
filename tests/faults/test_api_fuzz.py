"""Fuzzing the worker's HTTP API from its own OpenAPI document (schemathesis): no 5xx, every 4xx with a reason.

A real worker (no auth, loopback) with one incident and one recommendation in its console view; schemathesis reads
``/api/openapi.json`` and generates requests for every ``/api`` operation, both fitting the document (positive) and
violating it (negative: wrong types, out-of-range numbers, over-long ids, bodies that are not the schema's). Each
response must be below 500, have a status the document lists, and, for a 4xx, be JSON ``{"error": reason}``; a
request that violates the document must be refused (4xx). ``CITYBRAIN_API_FUZZ_EXAMPLES`` requests per mode
(``make test-faults``: 1,000).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .test_api_hostile import INCIDENT, REC_ID, Api, api  # noqa: F401 (fixture: a worker with an incident and a recommendation)

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    status_code_conformance,
)

pytestmark = pytest.mark.faults
EXAMPLES = int(os.environ.get("CITYBRAIN_API_FUZZ_EXAMPLES", "300"))
SKIP = {"/api/stream"}  # Server-Sent Events never end: not a request/response operation


def _parser_refusal(status: int, body: bytes, content_type: str) -> bool:
    """Refused by aiohttp's HTTP parser before any handler runs (a request line over 8,190 bytes), with its own
    text reason: e.g. ``Got more than 8190 bytes when reading …``."""
    return status == 400 and content_type.startswith("text/plain") and body.startswith(b"Got more than")


def _reason_problem(status: int, body: bytes, content_type: str) -> str | None:
    """What is wrong with a 4xx answer (None when it is JSON with a reason)."""
    if not 400 <= status < 500:
        return None
    if _parser_refusal(status, body, content_type):
        return None  # aiohttp's own text reason
    if not content_type.startswith("application/json"):
        return f"{status} as {content_type!r}, not JSON: {body[:200]!r}"
    try:
        import json

        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return f"{status} with a body that is not a JSON object"
    return None if isinstance(error, str) and error else f"{status} without an error reason"


def test_api_fuzz_from_openapi(api: Api, record: Callable[..., None]) -> None:  # noqa: F811
    # a request violating the document must get one of the API's documented refusals (413: body too large)
    refusals = ["400", "401", "403", "404", "413", "415", "422"]
    config = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": refusals}}})
    schema = schemathesis.openapi.from_url(api.base + "/api/openapi.json", config=config)
    operations = [
        op.ok() for op in schema.get_all_operations() if op.ok().path.startswith("/api/") and op.ok().path not in SKIP
    ]
    assert len(operations) >= 10, [o.label for o in operations]
    tried: dict[str, int] = {"positive": 0, "negative": 0}
    statuses: dict[int, int] = {}
    failures: list[str] = []
    parser_refusals = [0]

    def strategies(op: Any, mode: Any) -> list[Any]:
        """Random requests, and (valid ones only) requests on ids that exist, so the handlers run to the end."""
        out = [op.as_strategy(generation_mode=mode)]
        known = {
            "/api/incidents/": {"path_parameters": {"id": INCIDENT}},
            "/api/recommendations/": {"path_parameters": {"id": REC_ID}},
            "/api/segments/": {"path_parameters": {"segment_id": "A0left0"}},
            "/api/route": {"query": {"from": "A0", "to": "D3"}},
            "/api/greenwave": {"query": {"from": "A0", "to": "D3"}},
        }
        for prefix, fixed in known.items():
            if mode == schemathesis.GenerationMode.POSITIVE and op.path.startswith(prefix):
                out.append(op.as_strategy(generation_mode=mode, **fixed))
        return out

    def run(mode: Any, name: str) -> None:
        strategy = st.one_of([s for op in operations for s in strategies(op, mode)])

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def fuzz(case: Any) -> None:
            response = case.call(base_url=api.base, timeout=10)
            tried[name] += 1
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            content_type = response.headers.get("content-type", [""])[0]
            checks = [not_a_server_error, status_code_conformance, content_type_conformance]
            if _parser_refusal(response.status_code, response.content, content_type):
                parser_refusals[0] += 1  # answered before any route: not described by the API's document
                checks = [not_a_server_error]
            elif name == "negative":
                checks.append(negative_data_rejection)
            try:
                case.validate_response(response, checks=checks)
            except FailureGroup as exc:  # what schemathesis found: keep each failure's title
                for failure in exc.exceptions:
                    where = f"{case.path_parameters} {case.query}"[:150]
                    failures.append(f"{case.operation.label}: {' '.join(str(failure).split())[:300]} [{where}]")
            problem = _reason_problem(response.status_code, response.content, content_type)
            if problem:
                where = f"{case.path_parameters} {case.query}"[:150]
                failures.append(f"{case.operation.label}: {problem} [{where}]")

        fuzz()

    run(schemathesis.GenerationMode.POSITIVE, "positive")
    run(schemathesis.GenerationMode.NEGATIVE, "negative")
    total = sum(tried.values())
    server_errors = sum(n for code, n in statuses.items() if code >= 500)
    record(
        fault="HTTP API fuzz (OpenAPI, schemathesis): every /api operation, valid and invalid requests",
        requests=total,
        failures=len(failures),
        server_errors=server_errors,
        refused_by_http_parser=parser_refusals[0],
        statuses={str(k): v for k, v in sorted(statuses.items())},
        operator_sees="every refusal a 4xx with a reason; no 5xx; the worker keeps serving",
    )
    assert server_errors == 0, statuses
    assert failures == [], "\n".join(sorted(set(failures))[:20])
    assert total >= EXAMPLES  # the fuzzing ran
