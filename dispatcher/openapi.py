"""``GET /openapi.json``: an OpenAPI 3.1 document generated from the route registry
(``dispatcher.api.Operation``) and the typed definitions requests are decoded into, so it
cannot drift from what the API accepts and answers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dispatcher.api import Answer, Operation
from relaybook.platform.answers import ErrorAnswer
from relaybook.platform.http import RETRY_AFTER_S

REF = "#/components/schemas/{name}"
_ERROR = {"$ref": REF.format(name="ErrorAnswer")}


def document(operations: Sequence[Operation]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations``."""
    bodies = sorted(
        {
            kind
            for op in operations
            for kind in (op.body, *(a.kind for a in op.answers))
            if kind is not None
        },
        key=lambda kind: kind.__name__,
    )
    schemas, components = msgspec.json.schema_components([ErrorAnswer, *bodies], ref_template=REF)
    by_kind = dict(zip([ErrorAnswer, *bodies], schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, by_kind)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "relaybook dispatcher API",
            "version": "1",
            "description": "Notices out by email and SMS, and the journal of every message. "
            'Every error answers `{"error": "<code>", "detail": "..."}`.',
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _operation(op: Operation, by_kind: dict[Any, Any]) -> dict[str, Any]:
    parameters = [
        *_parameters(op.path_params, "path"),
        *_parameters(op.query, "query"),
        *_parameters(op.headers, "header"),
    ]
    described: dict[str, Any] = {
        "operationId": _operation_id(op),
        "summary": op.summary,
        "parameters": parameters,
        "responses": {str(a.status): _response(a, by_kind) for a in _successes(op) + op.errors()},
    }
    if op.tag:
        described["tags"] = [op.tag]
    if op.body is not None:
        described["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": by_kind[op.body]}},
        }
    return described


def _successes(op: Operation) -> list[Answer]:
    return [answer for answer in op.answers if answer.status < 400]


def _response(answer: Answer, by_kind: dict[Any, Any]) -> dict[str, Any]:
    described: dict[str, Any] = {"description": answer.description}
    if answer.status >= 400:
        schema: dict[str, Any] = {
            "allOf": [_ERROR, {"properties": {"error": {"enum": list(answer.codes)}}}]
        }
        described["content"] = {"application/json": {"schema": schema}}
        if answer.status == 401:
            described["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        if answer.status == 503:
            described["headers"] = {
                "Retry-After": {
                    "description": f"seconds to wait ({RETRY_AFTER_S})",
                    "schema": {"type": "integer"},
                }
            }
    elif answer.kind is not None:
        described["content"] = {"application/json": {"schema": by_kind[answer.kind]}}
    return described


def _parameters(kind: type[Any] | None, where: str) -> list[dict[str, Any]]:
    if kind is None:
        return []
    _, components = msgspec.json.schema_components([kind], ref_template=REF)
    struct = components[kind.__name__]
    required = set(struct.get("required", ()))
    return [
        {
            "name": name,
            "in": where,
            "required": where == "path" or name in required,
            "schema": _parameter_schema(field, components),
            **({"description": field["description"]} if "description" in field else {}),
        }
        for name, field in struct["properties"].items()
    ]


def _parameter_schema(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema: a parameter left out is the Struct's ``None``, never a null."""
    schema = {key: value for key, value in schema.items() if key != "default" or value is not None}
    options = schema.get("anyOf")
    if options is not None:
        kept = [option for option in options if option != {"type": "null"}]
        rest = {key: value for key, value in schema.items() if key != "anyOf"}
        schema = {**rest, **kept[0]} if len(kept) == 1 else {**rest, "anyOf": kept}
    return _inline(schema, components)


def _inline(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema with its references resolved (enums are components too)."""
    if "$ref" in schema:
        return components[schema["$ref"].rsplit("/", 1)[1]]  # type: ignore[no-any-return]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return {**schema, key: [_inline(s, components) for s in schema[key]]}
    return schema


def _operation_id(op: Operation) -> str:
    words = re.sub(r"[{}]", "", op.path).replace("/v1/", "").replace("-", "_").split("/")
    return "_".join([op.method.lower(), *words])


def route(operations: Sequence[Operation]) -> Route:
    """``GET /openapi.json``, unauthenticated: built once, on the first request."""
    built: list[bytes] = []

    async def openapi(_request: Request) -> Response:
        if not built:
            built.append(msgspec.json.encode(document(operations)))
        return Response(built[0], media_type="application/json")

    return Route("/openapi.json", openapi, methods=["GET"])
