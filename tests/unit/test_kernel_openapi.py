"""services.kernel.openapi: request shapes declared with @accepts reach the OpenAPI document."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Litestar, Request, get, post
from litestar.params import FromPath

from services.kernel.openapi import accepts, describe_requests
from services.kernel.validation import Money


class Listing(msgspec.Struct, kw_only=True):
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=10)]
    price: Money
    note: str | None = None


class Page(msgspec.Struct, kw_only=True):
    page: Annotated[int, msgspec.Meta(ge=1)] = 1
    event_id: int | None = None


class Item(msgspec.Struct, kw_only=True):
    ticket_type_id: int
    quantity: int = 1


class Login(msgspec.Struct, kw_only=True):
    username: str
    password: str


@post("/api/listings/{listing_id:str}", status_code=200)
@accepts(body=Listing, query=Page)
async def relist(request: Request, listing_id: FromPath[str]) -> dict[str, Any]:
    return {}


@post("/api/items", status_code=200)
@accepts(body=Item, query=Item, body_required=False)
async def add_item(request: Request) -> dict[str, Any]:
    return {}


@post("/api/token", status_code=200)
@accepts(form=Login)
async def token(request: Request) -> dict[str, Any]:
    return {}


@get("/api/plain")
async def plain() -> bool:
    return True


@get("/internal/hidden")
async def hidden() -> bool:
    return True


def document() -> dict[str, Any]:
    return describe_requests(Litestar([relist, add_item, token, plain, hidden]))


def test_body_is_the_struct_schema_with_defs_in_components() -> None:
    doc = document()
    operation = doc["paths"]["/api/listings/{listing_id}"]["post"]
    body = operation["requestBody"]
    assert body["required"] is True
    ref = body["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/Listing"
    listing = doc["components"]["schemas"]["Listing"]
    assert listing["required"] == ["title", "price"]
    assert listing["properties"]["title"] == {"type": "string", "minLength": 1, "maxLength": 10}
    # Money is a JSON number with the documented range, not msgspec's decimal string.
    assert listing["properties"]["price"] == {
        "type": "number",
        "minimum": 0,
        "maximum": 99999999.99,
    }


def test_query_parameters_one_per_field_next_to_the_path_parameter() -> None:
    operation = document()["paths"]["/api/listings/{listing_id}"]["post"]
    by_name = {p["name"]: p for p in operation["parameters"]}
    assert by_name["listing_id"]["in"] == "path"
    assert by_name["page"] == {
        "name": "page",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "default": 1},
    }
    # A query string cannot say null: optional parameters are simply absent.
    assert by_name["event_id"]["schema"] == {"type": "integer", "default": None}


def test_same_shape_in_body_or_query_makes_neither_required() -> None:
    operation = document()["paths"]["/api/items"]["post"]
    assert operation["requestBody"]["required"] is False
    assert all(not p["required"] for p in operation["parameters"])


def test_form_bodies_are_form_encoded() -> None:
    body = document()["paths"]["/api/token"]["post"]["requestBody"]
    assert list(body["content"]) == ["application/x-www-form-urlencoded"]


def test_every_public_operation_documents_the_error_answers() -> None:
    doc = document()
    responses = doc["paths"]["/api/plain"]["get"]["responses"]
    assert set(responses) == {"200", "422", "4XX", "5XX"}
    assert responses["4XX"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorDetail"
    }
    assert doc["components"]["schemas"]["ErrorDetail"]["required"] == ["detail"]
    # Only the public /api paths are touched.
    assert "4XX" not in doc["paths"]["/internal/hidden"]["get"]["responses"]
