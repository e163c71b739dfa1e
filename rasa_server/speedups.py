"""Rasa's check of every action-server response, with its JSON schema checked once instead of per call.

Rasa 3.6 validates each custom action's response with `jsonschema.validate`, which first checks the
response schema itself against the JSON Schema meta-schema: a fifth of the Rasa server's CPU per turn.
The schema never changes, so this builds the validator once and validates each response exactly as
`jsonschema.validate` does (the same validator class, the same best-matching error, Rasa's message).
The Rasa process installs it when it loads the REST channel (connectors/rest.py).
"""

from __future__ import annotations

from typing import Any

from jsonschema import ValidationError, exceptions
from jsonschema.validators import validator_for
from rasa.core.actions.action import RemoteAction
from rasa.shared.constants import DOCS_BASE_URL

_MESSAGE = (
    ". Failed to validate Action server response from API, make sure your response from the Action "
    f"endpoint is valid. For more information about the format visit {DOCS_BASE_URL}/custom-actions"
)

# Rasa's own check, kept to compare with (this module is imported before install() can run).
STOCK_VALIDATE_ACTION_RESULT = RemoteAction._validate_action_result


def install() -> None:
    """Replace `RemoteAction._validate_action_result` (idempotent)."""
    if getattr(RemoteAction._validate_action_result, "patronbot", False):
        return
    schema = RemoteAction.action_response_format_spec()
    validator_class = validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)

    def validate_action_result(self: RemoteAction, result: dict[str, Any]) -> bool:
        error = exceptions.best_match(validator.iter_errors(result))
        if error is None:
            return True
        assert isinstance(error, ValidationError)
        error.message += _MESSAGE
        raise error

    validate_action_result.patronbot = True  # type: ignore[attr-defined]
    RemoteAction._validate_action_result = validate_action_result
