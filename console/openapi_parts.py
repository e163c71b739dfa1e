"""Building blocks of the console's OpenAPI document: value types, references, error responses, bodies."""

from __future__ import annotations

from typing import Any

TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {**TIME, "nullable": True}
STR = {"type": "string"}
NULLABLE_STR = {"type": "string", "nullable": True}
NULLABLE_INT = {"type": "integer", "nullable": True}
# A row id: what a path or filter accepts (18 digits at most, inside a 64-bit integer).
ROW_ID = {"type": "integer", "minimum": 1, "maximum": 999_999_999_999_999_999}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(*codes: int, **meanings: str) -> dict[str, Any]:
    """Error responses for `codes`; `meanings` (e.g. e404="no such entry") override the usual words."""
    meaning = {
        400: "the request body or a parameter is not usable",
        401: "no session: sign in first",
        403: "the role does not allow it, or the CSRF token is missing or wrong",
        404: "no such escalation or patron",
        409: "the escalation's state does not allow it (claimed by someone else, already resolved)",
        429: "too many failed sign-ins",
    }
    return {
        str(code): json_content(ref("Error"), meanings.get(f"e{code}", meaning.get(code, "error")))
        for code in codes
    }


def text_schema(longest: int) -> dict[str, Any]:
    """A required text field: some non-blank characters, at most `longest`."""
    # A character Python's str.strip() keeps: ECMA's \S also lets \x1c-\x1f and \x85 through.
    return {"type": "string", "minLength": 1, "maxLength": longest, "pattern": r"[^\s\x1c-\x1f\x85]"}


def json_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


CSRF = [{"name": "X-CSRF-Token", "in": "header", "required": True, "schema": {"type": "string"}}]
