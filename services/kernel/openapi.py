"""Request shapes in a service's OpenAPI document, declared once next to each handler.

Handlers parse raw bodies with services.kernel.validation, so litestar cannot see what they
read. A handler names its shapes with `@accepts(body=Model, query=Model)` (under the route
decorator); `describe_requests(app)` then writes them into the app's generated document:
the requestBody (the Struct's JSON schema, its $defs as components), one query parameter per
field, and the `{"detail": ...}` / 422 error answers of every public operation.

    @post("/api/locations", status_code=200)
    @accepts(body=LocationCreate)
    async def post_location(request: Request) -> Doc: ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.routes import HTTPRoute

from services.kernel.credentials import FORM

F = TypeVar("F", bound=Callable[..., Any])
_ATTRIBUTE = "__request_shape__"
_REF = "#/components/schemas/{name}"
JSON = "application/json"


@dataclass(frozen=True)
class Shape:
    body: type[msgspec.Struct] | None = None
    query: type[msgspec.Struct] | None = None
    media_type: str = JSON
    body_required: bool = True


def accepts(
    *,
    body: type[msgspec.Struct] | None = None,
    query: type[msgspec.Struct] | None = None,
    form: type[msgspec.Struct] | None = None,
    body_required: bool = True,
) -> Callable[[F], F]:
    """Declare what a handler reads: a JSON `body` (or a form-encoded `form`) and `query`
    parameters. `body_required=False` for bodies that may be left out entirely. The same
    Struct as body and query means either may carry the fields (none required in the query)."""
    shape = Shape(body or form, query, FORM if form else JSON, body_required)

    def mark(fn: F) -> F:
        setattr(fn, _ATTRIBUTE, shape)
        return fn

    return mark


# The answers every public operation may give besides its success (API.md §1.2, §1.3).
_DETAIL = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
_VALIDATION_ERROR = {
    "type": "object",
    "properties": {
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
                "required": ["loc", "msg", "type"],
            },
        }
    },
    "required": ["detail"],
}
ERROR_SCHEMAS = {"ErrorDetail": _DETAIL, "ValidationErrors": _VALIDATION_ERROR}


def _answer(description: str, schema: str) -> dict[str, Any]:
    ref = {"$ref": _REF.format(name=schema)}
    return {"description": description, "content": {JSON: {"schema": ref}}}


ERROR_RESPONSES = {
    "4XX": _answer('Refused: `{"detail": "<message>"}` (API.md §1.2, §1.3)', "ErrorDetail"),
    "422": _answer("Request validation failed, one entry per problem", "ValidationErrors"),
    "5XX": _answer("Internal server error or a needed service unavailable", "ErrorDetail"),
}


def _shapes(app: Litestar) -> dict[tuple[str, str], Shape]:
    found: dict[tuple[str, str], Shape] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            shape = getattr(handler.fn, _ATTRIBUTE, None)
            if isinstance(shape, Shape):
                for method in handler.http_methods:
                    found[(route.path_format or "/", method.lower())] = shape
    return found


def _decimals_as_numbers(node: Any) -> Any:
    """Decimals are read from JSON numbers (validation parses leniently); msgspec would
    document them as decimal strings."""
    if isinstance(node, dict):
        if node.get("type") == "string" and node.get("format") == "decimal":
            node = {k: v for k, v in node.items() if k != "format"} | {"type": "number"}
        return {k: _decimals_as_numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_decimals_as_numbers(v) for v in node]
    return node


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query string cannot say null: an optional parameter is simply left out."""
    options = schema.get("anyOf")
    if options:
        kept = [o for o in options if o.get("type") != "null"]
        if len(kept) == 1:
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            return {**rest, **kept[0]}
    return schema


def _query_parameters(schema: dict[str, Any], optional: bool) -> list[dict[str, Any]]:
    required = set() if optional else set(schema.get("required", ()))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": _not_null(field)}
        for name, field in schema.get("properties", {}).items()
    ]


def describe_requests(app: Litestar) -> dict[str, Any]:
    """Add the declared request shapes and the error answers to `app`'s OpenAPI document
    (the cached dict litestar serves at /schema/openapi.json). Returns that document."""
    document = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    shapes = _shapes(app)
    models = {m for s in shapes.values() for m in (s.body, s.query) if m is not None}
    ordered = sorted(models, key=lambda m: m.__name__)
    refs, components = msgspec.json.schema_components(ordered, ref_template=_REF)
    components = _decimals_as_numbers(components)
    by_model = dict(zip(ordered, refs, strict=True))
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(components)
    schemas.update(ERROR_SCHEMAS)
    for path, item in (document.get("paths") or {}).items():
        if not path.startswith("/api"):
            continue
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            responses.pop("400", None)  # litestar's own validation body, never ours
            for status, answer in ERROR_RESPONSES.items():
                responses.setdefault(status, answer)
            shape = shapes.get((path, method))
            if shape is None:
                continue
            if shape.query is not None:
                component = components[by_model[shape.query]["$ref"].rsplit("/", 1)[1]]
                declared = {p["name"] for p in operation.get("parameters", [])}
                operation["parameters"] = [
                    *operation.get("parameters", []),
                    *(
                        p
                        for p in _query_parameters(component, optional=shape.query is shape.body)
                        if p["name"] not in declared
                    ),
                ]
            if shape.body is not None:
                operation["requestBody"] = {
                    "required": shape.body_required,
                    "content": {shape.media_type: {"schema": by_model[shape.body]}},
                }
    return document
