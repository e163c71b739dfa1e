"""The console API's OpenAPI 3.0 document, served at /openapi.json (schemathesis tests the API against it)."""

from __future__ import annotations

from typing import Any

from console.openapi_parts import (
    CSRF,
    NULLABLE_INT,
    NULLABLE_STR,
    NULLABLE_TIME,
    ROW_ID,
    STR,
    TIME,
    errors,
    json_body,
    json_content,
    ref,
    text_schema,
)

_ID_PARAM = [{"name": "escalation_id", "in": "path", "required": True, "schema": ROW_ID}]
_GUARDED = (400, 401, 403, 404, 409)


def _action(summary: str, result: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": [*_ID_PARAM, *CSRF],
        "responses": {"200": json_content(ref(result), summary), **errors(*_GUARDED)},
    }
    if body is not None:
        operation["requestBody"] = body
    return {"post": operation}


SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "properties": {"error": STR}, "required": ["error"]},
    "Session": {
        "type": "object",
        "properties": {
            "username": STR,
            "role": {"type": "string", "enum": ["librarian", "outreach", "admin"]},
            "language": {"type": "string", "nullable": True, "enum": ["zh", "en", None]},
            "csrf_token": STR,
        },
        "required": ["username", "role", "language", "csrf_token"],
    },
    "Escalation": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "patron_id": NULLABLE_INT,
            "channel": NULLABLE_STR,
            "sender_id": NULLABLE_STR,
            "reason": STR,
            "priority": STR,
            "status": STR,
            "created_at": TIME,
            "due_at": TIME,
            "assignee": NULLABLE_STR,
            "latest_message": NULLABLE_STR,
            "latest_at": NULLABLE_TIME,
        },
        "required": ["id", "patron_id", "channel", "sender_id", "reason", "priority", "status", "due_at"],
    },
    "EscalationState": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "status": STR,
            "assignee": NULLABLE_STR,
            "resolved_at": NULLABLE_TIME,
        },
        "required": ["id", "status", "assignee"],
    },
    "Reply": {"type": "object", "properties": {"outbox_id": {"type": "integer"}}, "required": ["outbox_id"]},
    "Note": {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "at": TIME, "staff": NULLABLE_STR, "text": STR},
        "required": ["id", "at", "text"],
    },
    "Patron": {
        "type": "object",
        "properties": {
            "patron_id": {"type": "integer"},
            "display_name": NULLABLE_STR,
            "language": NULLABLE_STR,
            "patron_type": NULLABLE_STR,
            "interests": {"type": "array", "items": STR},
            "channels": {"type": "array", "items": STR},
            "consents": {"type": "object", "additionalProperties": {"type": "boolean"}},
            "last_seen_at": NULLABLE_TIME,
            "recent": {"type": "array", "items": {"type": "object"}},
        },
        "required": ["patron_id", "channels", "consents"],
    },
    "Score": {
        "type": "object",
        "properties": {
            "group": STR,
            "csat": {"type": "number", "nullable": True},
            "csat_count": {"type": "integer"},
            "nps": {"type": "number", "nullable": True},
            "nps_count": {"type": "integer"},
            "helpful_share": {"type": "number", "nullable": True},
            "helpful_count": {"type": "integer"},
        },
        "required": ["group", "csat", "csat_count", "nps", "nps_count"],
    },
    "AuditEntry": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "at": TIME,
            "staff": NULLABLE_STR,
            "actor": STR,
            "action": {"type": "string", "enum": ["read", "update", "export", "erase", "consent"]},
            "patron_id": NULLABLE_INT,
            "reason": STR,
        },
        "required": ["id", "at", "actor", "action", "reason"],
    },
}

PATHS: dict[str, Any] = {
    "/api/session": {
        "post": {
            "summary": "Sign in; sets the session cookie and answers the CSRF token for unsafe requests",
            "security": [],
            "requestBody": json_body(
                {
                    "username": text_schema(100),
                    "password": {"type": "string", "minLength": 1, "maxLength": 1000},
                },
                ["username", "password"],
            ),
            "responses": {"200": json_content(ref("Session"), "signed in"), **errors(400, 401, 429)},
        },
        "get": {
            "summary": "The signed-in staff member and their CSRF token",
            "responses": {"200": json_content(ref("Session"), "the session"), **errors(401)},
        },
        "delete": {
            "summary": "Sign out",
            "parameters": CSRF,
            "responses": {
                "200": json_content(
                    {"type": "object", "properties": {"signed_out": {"type": "boolean"}}}, "signed out"
                ),
                **errors(401, 403),
            },
        },
    },
    "/api/me/language": {
        "post": {
            "summary": "Remember the console's language for the signed-in staff member",
            "parameters": CSRF,
            "requestBody": json_body({"language": {"type": "string", "enum": ["zh", "en"]}}, ["language"]),
            "responses": {
                "200": json_content({"type": "object", "properties": {"language": STR}}, "remembered"),
                **errors(400, 401, 403),
            },
        }
    },
    "/api/escalations": {
        "get": {
            "summary": "The inbox: open and claimed escalations, most urgent first (all with all=1)",
            "parameters": [{"name": "all", "in": "query", "required": False, "schema": {"type": "string"}}],
            "responses": {
                "200": json_content(
                    {
                        "type": "object",
                        "properties": {"escalations": {"type": "array", "items": ref("Escalation")}},
                        "required": ["escalations"],
                    },
                    "the inbox",
                ),
                **errors(401),
            },
        }
    },
    "/api/escalations/{escalation_id}": {
        "get": {
            "summary": "An escalation with its whole conversation (audited) and internal notes",
            "parameters": _ID_PARAM,
            "responses": {"200": json_content({"type": "object"}, "the escalation"), **errors(401, 404, 409)},
        }
    },
    "/api/escalations/{escalation_id}/claim": _action("Claim the escalation", "EscalationState"),
    "/api/escalations/{escalation_id}/reply": _action(
        "Reply to the patron on their channel",
        "Reply",
        json_body({"text": text_schema(4000)}, ["text"]),
    ),
    "/api/escalations/{escalation_id}/resolve": _action(
        "Resolve with a note; the bot has the conversation again",
        "EscalationState",
        json_body({"note": {"type": "string", "maxLength": 4000}}, []),
    ),
    "/api/escalations/{escalation_id}/give-back": _action(
        "Give the conversation back to the bot", "EscalationState"
    ),
    "/api/escalations/{escalation_id}/notes": _action(
        "Add an internal note (never sent to the patron)",
        "Note",
        json_body({"text": text_schema(4000)}, ["text"]),
    ),
    "/api/escalations/{escalation_id}/transfer": _action(
        "Transfer to another staff member",
        "EscalationState",
        json_body({"to": text_schema(100)}, ["to"]),
    ),
    "/api/patrons/{patron_id}": {
        "get": {
            "summary": "A patron's profile (the read is audited)",
            "parameters": [{"name": "patron_id", "in": "path", "required": True, "schema": ROW_ID}],
            "responses": {"200": json_content(ref("Patron"), "the patron"), **errors(401, 404)},
        }
    },
    "/api/feedback": {
        "get": {
            "summary": "CSAT, NPS and 'did this help?' by week, topic or channel (counts only)",
            "parameters": [
                {
                    "name": "by",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["week", "topic", "channel"]},
                }
            ],
            "responses": {
                "200": json_content(
                    {
                        "type": "object",
                        "properties": {"by": STR, "scores": {"type": "array", "items": ref("Score")}},
                        "required": ["by", "scores"],
                    },
                    "the scores",
                ),
                **errors(400, 401),
            },
        }
    },
    "/api/suggestions": {
        "get": {
            "summary": "Suggestions, purchase requests and complaints, newest first (reads audited)",
            "parameters": [
                {
                    "name": "status",
                    "in": "query",
                    "required": False,
                    "schema": {
                        "type": "string",
                        "enum": ["new", "under_review", "accepted", "declined", "done"],
                    },
                }
            ],
            "responses": {
                "200": json_content(
                    {
                        "type": "object",
                        "properties": {"suggestions": {"type": "array", "items": {"type": "object"}}},
                        "required": ["suggestions"],
                    },
                    "the reports",
                ),
                **errors(400, 401),
            },
        }
    },
    "/api/suggestions/{report_id}/answer": {
        "post": {
            "summary": "Answer a report: recorded, and sent to the patron on their channel",
            "parameters": [
                {"name": "report_id", "in": "path", "required": True, "schema": ROW_ID},
                *CSRF,
            ],
            "requestBody": json_body(
                {
                    "text": text_schema(2000),
                    "status": {
                        "type": "string",
                        "enum": ["new", "under_review", "accepted", "declined", "done"],
                    },
                },
                ["text"],
            ),
            "responses": {
                "200": json_content(
                    {
                        "type": "object",
                        "properties": {
                            "id": {"type": "integer"},
                            "status": STR,
                            "outbox_id": {"type": "integer"},
                            "channel": STR,
                        },
                        "required": ["id", "status", "outbox_id", "channel"],
                    },
                    "answered",
                ),
                **errors(400, 401, 403, 404, 409),
            },
        }
    },
    "/api/audit": {
        "get": {
            "summary": "The audit log, newest first (admins)",
            "parameters": [
                {"name": "staff", "in": "query", "required": False, "schema": {"type": "string"}},
                {"name": "patron", "in": "query", "required": False, "schema": ROW_ID},
                {
                    "name": "action",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["read", "update", "export", "erase", "consent"]},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1},
                },
            ],
            "responses": {
                "200": json_content(
                    {
                        "type": "object",
                        "properties": {"entries": {"type": "array", "items": ref("AuditEntry")}},
                        "required": ["entries"],
                    },
                    "audit entries",
                ),
                **errors(400, 401, 403),
            },
        }
    },
}


def add_paths(paths: dict[str, Any], schemas: dict[str, Any] | None = None) -> None:
    """A console feature's routes (and schemas) joining the document; a path or schema named twice is
    a programming error."""
    for name, item in paths.items():
        if name in PATHS:
            raise ValueError(f"{name} is in the OpenAPI document twice")
        PATHS[name] = item
    for name, schema in (schemas or {}).items():
        if name in SCHEMAS:
            raise ValueError(f"schema {name} is in the OpenAPI document twice")
        SCHEMAS[name] = schema


METHODS = ("get", "put", "post", "delete", "patch")
NUL_REFUSED = "a NUL character in the query or the body (refused before any handler runs)"


def _with_nul_refusal(paths: dict[str, Any]) -> dict[str, Any]:
    """Every operation may answer 400: the NUL guard refuses such a request before any handler runs."""
    return {
        name: {
            method: (
                operation
                if method not in METHODS or "400" in operation.get("responses", {})
                else {**operation, "responses": {**operation["responses"], **errors(400, e400=NUL_REFUSED)}}
            )
            for method, operation in item.items()
        }
        for name, item in paths.items()
    }


def document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "patronbot staff console API", "version": "1"},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": "patronbot_console"}},
        },
        "security": [{"session": []}],
        "paths": _with_nul_refusal(PATHS),
    }
