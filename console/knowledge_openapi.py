"""The knowledge base API's part of the console's OpenAPI document: entries, trying a question, and
proposals with their review."""

from __future__ import annotations

from typing import Any

from bot.crm.models import PROPOSAL_KINDS, PROPOSAL_STATUSES
from bot.knowledge.drafts import (
    LONGEST_ALTERNATIVE,
    LONGEST_ANSWER,
    LONGEST_QUESTION,
    MOST_ALTERNATIVES,
    TOPICS,
)
from bot.knowledge.entries import PATRON_TYPES
from bot.language import LANGUAGES
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

ENTRY_ID_SCHEMA = {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,63}$"}
_ENTRY_PARAM = [{"name": "entry_id", "in": "path", "required": True, "schema": ENTRY_ID_SCHEMA}]
_PROPOSAL_PARAM = [{"name": "proposal_id", "in": "path", "required": True, "schema": ROW_ID}]
_NO_ENTRY = "no knowledge base entry has that id"
_UNREADABLE = "the knowledge base file cannot be read"
_TOPIC = {"type": "string", "enum": [*TOPICS, None], "nullable": True}
_AUDIENCE = {
    "type": "object",
    "properties": {
        kind: {
            "type": "object",
            "properties": {lang: {"type": "string", "maxLength": LONGEST_ANSWER} for lang in LANGUAGES},
        }
        for kind in PATRON_TYPES
    },
    "additionalProperties": False,
}
_TEXTS_IN = {
    "type": "object",
    "properties": {
        "question": text_schema(LONGEST_QUESTION),
        "alternatives": {
            "type": "array",
            "items": {"type": "string", "maxLength": LONGEST_ALTERNATIVE},
            "maxItems": MOST_ALTERNATIVES,
        },
        "answer": text_schema(LONGEST_ANSWER),
    },
    "required": ["question", "answer"],
}
# An entry is in Chinese, English or both.
_A_LANGUAGE = [{"required": [lang]} for lang in LANGUAGES]
_ENTRY_FIELDS: dict[str, Any] = {
    "topic": _TOPIC,
    **dict.fromkeys(LANGUAGES, _TEXTS_IN),
    "audience": _AUDIENCE,
}
_TEXTS = {
    "type": "object",
    "properties": {"question": STR, "alternatives": {"type": "array", "items": STR}, "answer": STR},
    "required": ["question", "alternatives", "answer"],
}
SCHEMAS: dict[str, Any] = {
    "KnowledgeEntry": {
        "type": "object",
        "properties": {
            "id": STR,
            "topic": NULLABLE_STR,
            **dict.fromkeys(LANGUAGES, _TEXTS),
            "audience": {"type": "object", "additionalProperties": {"type": "object"}},
            "retired": {"type": "boolean"},
            "version": STR,
        },
        "required": ["id", "topic", "audience", "retired", "version"],
    },
    "KnowledgeProposal": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "kind": {"type": "string", "enum": list(PROPOSAL_KINDS)},
            "entry_id": NULLABLE_STR,
            "lang": STR,
            "question": STR,
            "answer": NULLABLE_STR,
            "source": NULLABLE_STR,
            "patron_id": NULLABLE_INT,
            "proposed_by": NULLABLE_STR,
            "status": {"type": "string", "enum": list(PROPOSAL_STATUSES)},
            "reviewed_by": NULLABLE_STR,
            "reviewed_at": NULLABLE_TIME,
            "created_at": TIME,
        },
        "required": ["id", "kind", "entry_id", "lang", "question", "status", "created_at"],
    },
}
_CONFLICT = {
    "type": "object",
    "properties": {"error": STR, "current": ref("KnowledgeEntry"), "version": STR},
    "required": ["error", "current", "version"],
}
_TRIED = {
    "type": "object",
    "properties": {
        "text": STR,
        "lang": STR,
        "decision": {"type": "string", "enum": ["answer", "suggest", "unknown"]},
        "answer_from": {"type": "number"},
        "suggest_from": {"type": "number"},
        "matches": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": STR,
                    "question": STR,
                    "answer": STR,
                    "score": {"type": "number"},
                    "signals": {"type": "object", "additionalProperties": {"type": "number"}},
                },
                "required": ["id", "question", "answer", "score"],
            },
        },
    },
    "required": ["text", "lang", "decision", "matches"],
}
# Another way of asking an entry names the entry (and is as short as an alternative); a new entry has
# the librarian's answer.
_PROPOSAL_BODY = json_body(
    {
        "kind": {"type": "string", "enum": list(PROPOSAL_KINDS)},
        "lang": {"type": "string", "enum": list(LANGUAGES)},
        "question": text_schema(LONGEST_QUESTION),
        "answer": {"type": "string", "maxLength": LONGEST_ANSWER},
        "entry_id": ENTRY_ID_SCHEMA,
        "escalation_id": ROW_ID,
    },
    ["kind", "lang", "question"],
)
_PROPOSAL_BODY["content"]["application/json"]["schema"]["oneOf"] = [
    {
        "properties": {
            "kind": {"type": "string", "enum": ["alternative"]},
            "question": text_schema(LONGEST_ALTERNATIVE),
        },
        "required": ["entry_id"],
    },
    {
        "properties": {"kind": {"type": "string", "enum": ["entry"]}, "answer": text_schema(LONGEST_ANSWER)},
        "required": ["answer"],
    },
]
_REVIEWED = {
    "type": "object",
    "properties": {"proposal": ref("KnowledgeProposal"), "entry": ref("KnowledgeEntry")},
    "required": ["proposal"],
}


def _entry_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    body = json_body(properties, required)
    body["content"]["application/json"]["schema"]["anyOf"] = _A_LANGUAGE
    return body


def _entry_change(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [*_ENTRY_PARAM, *CSRF],
            "responses": {
                "200": json_content(ref("KnowledgeEntry"), "the entry as it is now"),
                **errors(400, 401, 403, 404, e400=_UNREADABLE, e404=_NO_ENTRY),
            },
        }
    }


def _review(summary: str, body: dict[str, Any] | None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": [*_PROPOSAL_PARAM, *CSRF],
        "responses": {
            "200": json_content(_REVIEWED, "reviewed"),
            **errors(
                400,
                401,
                403,
                404,
                409,
                e404="no such proposal",
                e409="the proposal was reviewed already; the entry changed or went since; or a new "
                "entry's id is missing or taken",
            ),
        },
    }
    if body is not None:
        operation["requestBody"] = body
    return {"post": operation}


PATHS: dict[str, Any] = {
    "/api/knowledge": {
        "get": {
            "summary": "The knowledge base's entries, retired ones too (marked), each with its version",
            "parameters": [
                {"name": "q", "in": "query", "required": False, "schema": {"type": "string"}},
                {
                    "name": "topic",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": list(TOPICS)},
                },
            ],
            "responses": {
                "200": json_content(
                    {
                        "type": "object",
                        "properties": {"entries": {"type": "array", "items": ref("KnowledgeEntry")}},
                        "required": ["entries"],
                    },
                    "the entries",
                ),
                **errors(400, 401, e400=_UNREADABLE),
            },
        },
        "post": {
            "summary": "Add an entry; the bot uses it at once",
            "parameters": CSRF,
            "requestBody": _entry_body({"id": ENTRY_ID_SCHEMA, **_ENTRY_FIELDS}, ["id"]),
            "responses": {
                "201": json_content(ref("KnowledgeEntry"), "added"),
                **errors(
                    400, 401, 403, 409, e409="the id is taken (perhaps by a retired entry) or the console's"
                ),
            },
        },
    },
    "/api/knowledge/try": {
        "post": {
            "summary": "What the bot's live retrieval decides for a question, with the top matches",
            "parameters": CSRF,
            "requestBody": json_body(
                {"text": text_schema(LONGEST_QUESTION), "lang": {"type": "string", "enum": list(LANGUAGES)}},
                ["text", "lang"],
            ),
            "responses": {
                "200": json_content(_TRIED, "the decision and matches"),
                **errors(400, 401, 403, 409, e409=_UNREADABLE),
            },
        }
    },
    "/api/knowledge/{entry_id}": {
        "get": {
            "summary": "One entry with its version",
            "parameters": _ENTRY_PARAM,
            "responses": {
                "200": json_content(ref("KnowledgeEntry"), "the entry"),
                **errors(400, 401, 404, e400=_UNREADABLE, e404=_NO_ENTRY),
            },
        },
        "put": {
            "summary": "Save an edit of the entry loaded at `version`; refused (409) if it changed since",
            "parameters": [*_ENTRY_PARAM, *CSRF],
            "requestBody": _entry_body({"version": text_schema(64), **_ENTRY_FIELDS}, ["version"]),
            "responses": {
                "200": json_content(ref("KnowledgeEntry"), "saved and published"),
                "409": json_content(_CONFLICT, "someone saved the entry since: nothing written"),
                **errors(400, 401, 403, 404, e404=_NO_ENTRY),
            },
        },
    },
    "/api/knowledge/{entry_id}/retire": _entry_change("Retire the entry: kept, no longer used by the bot"),
    "/api/knowledge/{entry_id}/restore": _entry_change("Put a retired entry back in use"),
    "/api/knowledge/proposals": {
        "get": {
            "summary": "Proposals for the knowledge base, oldest first (reads of quoted patrons audited)",
            "parameters": [
                {
                    "name": "status",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": list(PROPOSAL_STATUSES)},
                }
            ],
            "responses": {
                "200": json_content(
                    {
                        "type": "object",
                        "properties": {"proposals": {"type": "array", "items": ref("KnowledgeProposal")}},
                        "required": ["proposals"],
                    },
                    "the proposals",
                ),
                **errors(400, 401),
            },
        },
        "post": {
            "summary": "Propose a patron's question as another way of asking an entry, or as a new entry",
            "parameters": CSRF,
            "requestBody": _PROPOSAL_BODY,
            "responses": {
                "201": json_content(ref("KnowledgeProposal"), "proposed, pending review"),
                **errors(
                    400,
                    401,
                    403,
                    404,
                    409,
                    e404="no such escalation or entry",
                    e409="the entry has no question in that language yet",
                ),
            },
        },
    },
    "/api/knowledge/proposals/{proposal_id}/accept": _review(
        "Accept: an alternative joins its entry; an entry proposal becomes the entry `id` (in `topic`)",
        {
            "required": False,
            "content": {
                "application/json": {
                    "schema": {"type": "object", "properties": {"id": ENTRY_ID_SCHEMA, "topic": _TOPIC}}
                }
            },
        },
    ),
    "/api/knowledge/proposals/{proposal_id}/reject": _review(
        "Reject: nothing reaches the knowledge base", None
    ),
}
