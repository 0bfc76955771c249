"""Request parsing with pydantic-compatible 422 entries (API.md §1.2), one per problem.

Request shapes are msgspec Structs; Annotated metadata carries the bounds (msgspec.Meta) and
extra checks (`Check`). Unknown keys are ignored: only the declared fields are read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Annotated, Any, TypeVar, get_args, get_origin, get_type_hints

import msgspec

from services.kernel.errors import RequestValidationError

S = TypeVar("S", bound=msgspec.Struct)
INT32_MAX = 2**31 - 1


class FieldError(ValueError):
    """Raised by a check for full control over the entry's type and msg."""

    def __init__(self, msg: str, type_: str = "value_error") -> None:
        super().__init__(msg)
        self.msg = msg
        self.type = type_


class Check:
    """Annotated marker: `fn(value)` returns the (possibly normalised) value or raises
    ValueError (reported as `Value error, <message>`) or FieldError."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn


# ---- reusable field types -------------------------------------------------------------


def not_blank(value: str) -> str:
    if not value.strip():
        raise FieldError("String should have at least 1 character", "string_too_short")
    return value


def _money(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise FieldError("Input should be a finite number", "finite_number")
    # Bounds first: quantize raises InvalidOperation (a 500) past 28 digits, e.g. 1e300.
    if value <= Decimal("-0.005"):  # rounds half-up to -0.01
        raise FieldError("Input should be greater than or equal to 0", "greater_than_equal")
    if value >= Decimal("99999999.995"):  # rounds half-up to 100000000.00
        raise FieldError("Input should be less than or equal to 99999999.99", "less_than_equal")
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def parse_utc_datetime(value: Any) -> datetime:
    """ISO 8601; no offset = UTC; an offset is converted; a bare date = 00:00 UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                d = date.fromisoformat(text)
                parsed = datetime(d.year, d.month, d.day)
            else:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError as exc:
            raise FieldError(
                "Input should be a valid datetime or date, invalid character in year",
                "datetime_from_date_parsing",
            ) from exc
    else:
        raise FieldError("Input should be a valid datetime", "datetime_type")
    try:
        utc = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 has no UTC equivalent
        utc = None
    # The driver stores the very first and last instants Python has as PostgreSQL's -infinity
    # and infinity, which read back without a time zone and break every later comparison.
    if utc is None or utc.replace(tzinfo=None) in (datetime.min, datetime.max):
        raise FieldError("Input should be a valid datetime, date out of range", "datetime_parsing")
    return utc


Int32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=INT32_MAX)]
PositiveInt32 = Annotated[int, msgspec.Meta(ge=1, le=INT32_MAX)]
NonBlank255 = Annotated[str, msgspec.Meta(min_length=1, max_length=255), Check(not_blank)]
# A required string with no length of its own (a token, a secret, a password to check):
# blank is refused like missing (API.md §1.4), before it is looked up or compared.
NonBlank = Annotated[str, msgspec.Meta(min_length=1), Check(not_blank)]
# What a client hands the payment provider (API.md §8.4, §10.3): a card processor's token is
# short; a longer one is refused (422) before anything is reserved or charged.
PaymentToken = Annotated[str, msgspec.Meta(max_length=255)]
# The documented range (services.kernel.openapi documents decimals as JSON numbers).
_MONEY_SCHEMA = {"minimum": 0, "maximum": 99999999.99}
Money = Annotated[Decimal, msgspec.Meta(extra_json_schema=_MONEY_SCHEMA), Check(_money)]
UtcDateTime = Annotated[
    str, msgspec.Meta(extra_json_schema={"format": "date-time"}), Check(parse_utc_datetime)
]


# ---- msgspec messages -> pydantic-style entries ------------------------------------------

_TYPE_NAMES = {
    "int": ("int_parsing", "Input should be a valid integer, unable to parse string as an integer"),
    "float": (
        "float_parsing",
        "Input should be a valid number, unable to parse string as a number",
    ),
    "decimal": ("decimal_parsing", "Input should be a valid decimal"),
    "bool": ("bool_parsing", "Input should be a valid boolean, unable to interpret input"),
    "str": ("string_type", "Input should be a valid string"),
    "array": ("list_type", "Input should be a valid list"),
    "object": ("dict_type", "Input should be a valid dictionary"),
    "datetime": ("datetime_type", "Input should be a valid datetime"),
}


def _entry_from_msgspec(message: str, loc: list[str | int]) -> dict[str, Any]:
    text, _, path = message.partition(" - at `$")
    if path:
        for part in re.findall(r"\[(\d+)\]|\.(\w+)", path.rstrip("`")):
            loc = [*loc, int(part[0]) if part[0] else part[1]]
    m = re.fullmatch(r"Expected `(\w+)` of length ([<>]=) (\d+)", text)
    if m:
        kind, op, n = m.groups()
        noun = "characters" if kind == "str" else "items"
        subject = "String" if kind == "str" else "List"
        if op == ">=":
            return {
                "loc": loc,
                "msg": f"{subject} should have at least {n} {noun if n != '1' else noun[:-1]}",
                "type": "string_too_short" if kind == "str" else "too_short",
            }
        return {
            "loc": loc,
            "msg": f"{subject} should have at most {n} {noun if n != '1' else noun[:-1]}",
            "type": "string_too_long" if kind == "str" else "too_long",
        }
    m = re.fullmatch(r"Expected `\w+` ([<>]=?) (.+)", text)
    if m:
        op, bound = m.groups()
        words = {
            ">=": ("greater_than_equal", "greater than or equal to"),
            ">": ("greater_than", "greater than"),
            "<=": ("less_than_equal", "less than or equal to"),
            "<": ("less_than", "less than"),
        }[op]
        return {"loc": loc, "msg": f"Input should be {words[1]} {bound}", "type": words[0]}
    m = re.fullmatch(r"Expected `(\w+)(?: \| null)?`, got `(\w+)`", text)
    if m:
        kind = m.group(1)
        type_, msg = _TYPE_NAMES.get(kind, ("value_error", text))
        if m.group(2) != "str":
            type_ = type_.replace("_parsing", "_type")
        return {"loc": loc, "msg": msg, "type": type_}
    return {"loc": loc, "msg": text, "type": "value_error"}


def _checks(annotation: Any) -> list[Check]:
    if get_origin(annotation) is Annotated:
        return [a for a in get_args(annotation)[1:] if isinstance(a, Check)]
    if get_origin(annotation) is not None:  # Optional[Annotated[...]] and friends
        return [c for arg in get_args(annotation) for c in _checks(arg)]
    return []


def _not_none(annotation: Any) -> Any:
    """`X | None` → X: what a present value must be."""
    kept = [a for a in get_args(annotation) if a is not type(None)]
    return kept[0] if len(kept) == 1 else annotation


_hints_cache: dict[type, dict[str, Any]] = {}


def _hints(model: type) -> dict[str, Any]:
    if model not in _hints_cache:
        _hints_cache[model] = get_type_hints(model, include_extras=True)
    return _hints_cache[model]


_fields_cache: dict[type, tuple[msgspec.structs.FieldInfo, ...]] = {}


def _fields(model: type) -> tuple[msgspec.structs.FieldInfo, ...]:
    """msgspec.structs.fields resolves the annotations on every call (a tenth of a listing
    request's CPU): once per model is enough."""
    if model not in _fields_cache:
        _fields_cache[model] = msgspec.structs.fields(model)
    return _fields_cache[model]


NUL_MESSAGE = "Value error, NUL characters are not allowed"


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


def parse_mapping(data: Any, model: type[S], source: str = "body") -> S:
    """Validate every declared field of `model` in `data`; raise 422 with all problems."""
    if not isinstance(data, Mapping):
        raise RequestValidationError.single(
            [source],
            "Input should be a valid dictionary or object to extract fields from",
            "model_attributes_type",
        )
    hints = _hints(model)
    errors: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    for field in _fields(model):
        loc: list[str | int] = [source, field.encode_name]
        if field.encode_name not in data:
            if field.required:
                errors.append({"loc": loc, "msg": "Field required", "type": "missing"})
            continue
        annotation = hints[field.name]
        raw = data[field.encode_name]
        try:
            value = msgspec.convert(raw, annotation, strict=False)
        except msgspec.ValidationError as exc:
            errors.append(_entry_from_msgspec(str(exc), loc))
            continue
        if value is None and isinstance(raw, str):  # lax mode reads the text "null" as None
            try:
                msgspec.convert(raw, _not_none(annotation), strict=False)
            except msgspec.ValidationError as exc:
                errors.append(_entry_from_msgspec(str(exc), loc))
                continue
        if _has_nul(value):  # PostgreSQL text cannot hold NUL: refuse it here, not with a 500
            errors.append({"loc": loc, "msg": NUL_MESSAGE, "type": "value_error"})
            continue
        if value is not None:
            try:
                for check in _checks(annotation):
                    value = check.fn(value)
            except FieldError as exc:
                errors.append({"loc": loc, "msg": exc.msg, "type": exc.type})
                continue
            except ValueError as exc:
                errors.append({"loc": loc, "msg": f"Value error, {exc}", "type": "value_error"})
                continue
        values[field.name] = value
    if errors:
        raise RequestValidationError(errors)
    return model(**values)


def parse_json(raw: bytes, model: type[S], *, empty_ok: bool = False) -> S:
    """Decode a JSON body into `model`; malformed JSON is a 422 like any other bad input."""
    if not raw.strip():
        if empty_ok:
            return parse_mapping({}, model)
        raise RequestValidationError.single(["body"], "Field required", "missing")
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise RequestValidationError.single(
            ["body"], f"JSON decode error: {exc}", "json_invalid"
        ) from exc
    except UnicodeDecodeError as exc:  # a string that is not UTF-8 (msgspec's own error)
        raise RequestValidationError.single(
            ["body"], "JSON decode error: invalid UTF-8", "json_invalid"
        ) from exc
    except RecursionError as exc:  # msgspec's nesting limit (~1000 levels): bad input, not a 500
        raise RequestValidationError.single(
            ["body"], "JSON decode error: nested too deeply", "json_invalid"
        ) from exc
    return parse_mapping(data, model)


def parse_query(params: Mapping[str, Any], model: type[S]) -> S:
    return parse_mapping(params, model, source="query")


_PATH_INTEGER = re.compile(r"([+-]?)0*([0-9]*)")  # ASCII digits only


def id_in_path(raw: str) -> int | None:
    """A path's id: None when it is not an integer (ASCII digits, perhaps signed: not `1_0`,
    `١٢` or an empty string), 0 when it is one out of the id range (it names nothing, however
    many digits it has)."""
    match = _PATH_INTEGER.fullmatch(raw)
    if match is None or not raw.lstrip("+-"):
        return None
    sign, digits = match.groups()
    if len(digits) > len(str(INT32_MAX)):
        return 0
    value = int(sign + (digits or "0"))
    return value if 1 <= value <= INT32_MAX else 0


def shown_id(raw: str) -> str:
    """A path id that is an integer (`path_id` let it through) as a 404 names it: as its
    number reads, however many digits it has ("+007" is 7)."""
    match = _PATH_INTEGER.fullmatch(raw)
    if match is None:
        return raw
    sign, digits = match.groups()
    return f"-{digits}" if sign == "-" and digits else digits or "0"


def path_id(raw: str, name: str) -> int:
    """A path id: non-integer → 422; out of the id range → 0, which names nothing (404)."""
    value = id_in_path(raw)
    if value is None:
        raise RequestValidationError.single(
            ["path", name],
            "Input should be a valid integer, unable to parse string as an integer",
            "int_parsing",
        )
    return value


def decimal_or_none(value: Any) -> Decimal | None:
    try:
        return None if value is None else Decimal(str(value))
    except InvalidOperation:
        return None
