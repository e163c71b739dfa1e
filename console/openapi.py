"""The console API's OpenAPI 3.0 document, served at /openapi.json (schemathesis tests the API against it)."""

from __future__ import annotations

from typing import Any

_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {**_TIME, "nullable": True}
_STR = {"type": "string"}
_NULLABLE_STR = {"type": "string", "nullable": True}
_NULLABLE_INT = {"type": "integer", "nullable": True}
# A row id: what a path or filter accepts (18 digits at most, inside a 64-bit integer).
_ROW_ID = {"type": "integer", "minimum": 1, "maximum": 999_999_999_999_999_999}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {
        400: "the request body or a parameter is not usable",
        401: "no session: sign in first",
        403: "the role does not allow it, or the CSRF token is missing or wrong",
        404: "no such escalation or patron",
        409: "the escalation's state does not allow it (claimed by someone else, already resolved)",
        429: "too many failed sign-ins",
    }
    return {str(code): _json(_ref("Error"), meaning[code]) for code in codes}


def _text(longest: int) -> dict[str, Any]:
    """A required text field: some non-blank characters, at most `longest`."""
    # A character Python's str.strip() keeps: ECMA's \S also lets \x1c-\x1f and \x85 through.
    return {"type": "string", "minLength": 1, "maxLength": longest, "pattern": r"[^\s\x1c-\x1f\x85]"}


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_ID_PARAM = [{"name": "escalation_id", "in": "path", "required": True, "schema": _ROW_ID}]
_CSRF = [{"name": "X-CSRF-Token", "in": "header", "required": True, "schema": {"type": "string"}}]
_GUARDED = (400, 401, 403, 404, 409)


def _action(summary: str, result: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": [*_ID_PARAM, *_CSRF],
        "responses": {"200": _json(_ref(result), summary), **_errors(*_GUARDED)},
    }
    if body is not None:
        operation["requestBody"] = body
    return {"post": operation}


SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "properties": {"error": _STR}, "required": ["error"]},
    "Session": {
        "type": "object",
        "properties": {
            "username": _STR,
            "role": {"type": "string", "enum": ["librarian", "outreach", "admin"]},
            "language": {"type": "string", "nullable": True, "enum": ["zh", "en", None]},
            "csrf_token": _STR,
        },
        "required": ["username", "role", "language", "csrf_token"],
    },
    "Escalation": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "patron_id": _NULLABLE_INT,
            "channel": _NULLABLE_STR,
            "sender_id": _NULLABLE_STR,
            "reason": _STR,
            "priority": _STR,
            "status": _STR,
            "created_at": _TIME,
            "due_at": _TIME,
            "assignee": _NULLABLE_STR,
            "latest_message": _NULLABLE_STR,
            "latest_at": _NULLABLE_TIME,
        },
        "required": ["id", "patron_id", "channel", "sender_id", "reason", "priority", "status", "due_at"],
    },
    "EscalationState": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "status": _STR,
            "assignee": _NULLABLE_STR,
            "resolved_at": _NULLABLE_TIME,
        },
        "required": ["id", "status", "assignee"],
    },
    "Reply": {"type": "object", "properties": {"outbox_id": {"type": "integer"}}, "required": ["outbox_id"]},
    "Note": {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "at": _TIME, "staff": _NULLABLE_STR, "text": _STR},
        "required": ["id", "at", "text"],
    },
    "Patron": {
        "type": "object",
        "properties": {
            "patron_id": {"type": "integer"},
            "display_name": _NULLABLE_STR,
            "language": _NULLABLE_STR,
            "patron_type": _NULLABLE_STR,
            "interests": {"type": "array", "items": _STR},
            "channels": {"type": "array", "items": _STR},
            "consents": {"type": "object", "additionalProperties": {"type": "boolean"}},
            "last_seen_at": _NULLABLE_TIME,
            "recent": {"type": "array", "items": {"type": "object"}},
        },
        "required": ["patron_id", "channels", "consents"],
    },
    "Score": {
        "type": "object",
        "properties": {
            "group": _STR,
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
            "at": _TIME,
            "staff": _NULLABLE_STR,
            "actor": _STR,
            "action": {"type": "string", "enum": ["read", "update", "export", "erase", "consent"]},
            "patron_id": _NULLABLE_INT,
            "reason": _STR,
        },
        "required": ["id", "at", "actor", "action", "reason"],
    },
}

PATHS: dict[str, Any] = {
    "/api/session": {
        "post": {
            "summary": "Sign in; sets the session cookie and answers the CSRF token for unsafe requests",
            "security": [],
            "requestBody": _body(
                {
                    "username": _text(100),
                    "password": {"type": "string", "minLength": 1, "maxLength": 1000},
                },
                ["username", "password"],
            ),
            "responses": {"200": _json(_ref("Session"), "signed in"), **_errors(400, 401, 429)},
        },
        "get": {
            "summary": "The signed-in staff member and their CSRF token",
            "responses": {"200": _json(_ref("Session"), "the session"), **_errors(401)},
        },
        "delete": {
            "summary": "Sign out",
            "parameters": _CSRF,
            "responses": {
                "200": _json(
                    {"type": "object", "properties": {"signed_out": {"type": "boolean"}}}, "signed out"
                ),
                **_errors(401, 403),
            },
        },
    },
    "/api/me/language": {
        "post": {
            "summary": "Remember the console's language for the signed-in staff member",
            "parameters": _CSRF,
            "requestBody": _body({"language": {"type": "string", "enum": ["zh", "en"]}}, ["language"]),
            "responses": {
                "200": _json({"type": "object", "properties": {"language": _STR}}, "remembered"),
                **_errors(400, 401, 403),
            },
        }
    },
    "/api/escalations": {
        "get": {
            "summary": "The inbox: open and claimed escalations, most urgent first (all with all=1)",
            "parameters": [{"name": "all", "in": "query", "required": False, "schema": {"type": "string"}}],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"escalations": {"type": "array", "items": _ref("Escalation")}},
                        "required": ["escalations"],
                    },
                    "the inbox",
                ),
                **_errors(401),
            },
        }
    },
    "/api/escalations/{escalation_id}": {
        "get": {
            "summary": "An escalation with its whole conversation (audited) and internal notes",
            "parameters": _ID_PARAM,
            "responses": {"200": _json({"type": "object"}, "the escalation"), **_errors(401, 404, 409)},
        }
    },
    "/api/escalations/{escalation_id}/claim": _action("Claim the escalation", "EscalationState"),
    "/api/escalations/{escalation_id}/reply": _action(
        "Reply to the patron on their channel",
        "Reply",
        _body({"text": _text(4000)}, ["text"]),
    ),
    "/api/escalations/{escalation_id}/resolve": _action(
        "Resolve with a note; the bot has the conversation again",
        "EscalationState",
        _body({"note": {"type": "string", "maxLength": 4000}}, []),
    ),
    "/api/escalations/{escalation_id}/give-back": _action(
        "Give the conversation back to the bot", "EscalationState"
    ),
    "/api/escalations/{escalation_id}/notes": _action(
        "Add an internal note (never sent to the patron)",
        "Note",
        _body({"text": _text(4000)}, ["text"]),
    ),
    "/api/escalations/{escalation_id}/transfer": _action(
        "Transfer to another staff member",
        "EscalationState",
        _body({"to": _text(100)}, ["to"]),
    ),
    "/api/patrons/{patron_id}": {
        "get": {
            "summary": "A patron's profile (the read is audited)",
            "parameters": [{"name": "patron_id", "in": "path", "required": True, "schema": _ROW_ID}],
            "responses": {"200": _json(_ref("Patron"), "the patron"), **_errors(401, 404)},
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
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"by": _STR, "scores": {"type": "array", "items": _ref("Score")}},
                        "required": ["by", "scores"],
                    },
                    "the scores",
                ),
                **_errors(400, 401),
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
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"suggestions": {"type": "array", "items": {"type": "object"}}},
                        "required": ["suggestions"],
                    },
                    "the reports",
                ),
                **_errors(400, 401),
            },
        }
    },
    "/api/suggestions/{report_id}/answer": {
        "post": {
            "summary": "Answer a report: recorded, and sent to the patron on their channel",
            "parameters": [
                {"name": "report_id", "in": "path", "required": True, "schema": _ROW_ID},
                *_CSRF,
            ],
            "requestBody": _body(
                {
                    "text": _text(2000),
                    "status": {
                        "type": "string",
                        "enum": ["new", "under_review", "accepted", "declined", "done"],
                    },
                },
                ["text"],
            ),
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "id": {"type": "integer"},
                            "status": _STR,
                            "outbox_id": {"type": "integer"},
                            "channel": _STR,
                        },
                        "required": ["id", "status", "outbox_id", "channel"],
                    },
                    "answered",
                ),
                **_errors(400, 401, 403, 404, 409),
            },
        }
    },
    "/api/audit": {
        "get": {
            "summary": "The audit log, newest first (admins)",
            "parameters": [
                {"name": "staff", "in": "query", "required": False, "schema": {"type": "string"}},
                {"name": "patron", "in": "query", "required": False, "schema": _ROW_ID},
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
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"entries": {"type": "array", "items": _ref("AuditEntry")}},
                        "required": ["entries"],
                    },
                    "audit entries",
                ),
                **_errors(400, 401, 403),
            },
        }
    },
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
        "paths": PATHS,
    }
