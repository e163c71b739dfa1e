"""Segment and campaign files: YAML read with each field's line; errors name the file, line and field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class SpecError(ValueError):
    """A segment or campaign file that cannot be used: says which file, line and field, in one line."""

    def __init__(self, message: str, *, path: str = "", line: int | None = None, field: str = "") -> None:
        self.path, self.line, self.field, self.reason = path, line, field, message
        where = path + (f":{line}" if line is not None else "")
        named = f"{field}: " if field else ""
        super().__init__(f"{where}: {named}{message}" if where else f"{named}{message}")


@dataclass(frozen=True)
class Spec:
    """A parsed file: its data, and the line (1-based) where each field path ("rules.channel") begins."""

    data: dict[str, Any]
    path: str = ""
    lines: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _refuse_nul(self, self.data, "")

    def line(self, field_path: str) -> int | None:
        """The line of `field_path`, or of its nearest enclosing field that has one."""
        parts = field_path.split(".")
        while parts:
            found = self.lines.get(".".join(parts))
            if found is not None:
                return found
            parts.pop()
        return None

    def error(self, field_path: str, message: str) -> SpecError:
        return SpecError(message, path=self.path, line=self.line(field_path), field=field_path)


def _refuse_nul(spec: Spec, value: Any, at: str) -> None:
    """No text holding NUL: PostgreSQL cannot store it, and no name or message needs it."""
    if isinstance(value, str) and "\x00" in value:
        raise SpecError("may not contain NUL characters", path=spec.path, line=spec.line(at), field=at)
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        name = f"{at}.{key}" if at else str(key)
        _refuse_nul(spec, key, name)
        _refuse_nul(spec, item, name)


def _index(node: yaml.Node, prefix: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = f"{prefix}.{key.value}" if prefix else str(key.value)
            lines[name] = key.start_mark.line + 1
            _index(value, name, lines)
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            name = f"{prefix}.{position}"
            lines[name] = item.start_mark.line + 1
            _index(item, name, lines)


def parse_spec(text: str, *, path: str = "") -> Spec:
    """Parse a segment or campaign document; anything but one YAML mapping is a SpecError."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise SpecError(f"not valid YAML ({problem})", path=path, line=line) from None
    if not isinstance(data, dict) or node is None:
        raise SpecError("expected a YAML mapping of fields (name: ..., ...)", path=path, line=1)
    lines: dict[str, int] = {}
    _index(node, "", lines)
    return Spec(data=data, path=path, lines=lines)


def load_spec(path: Path) -> Spec:
    """Read and parse the file at `path` (UTF-8)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("no such file", path=str(path)) from None
    except UnicodeDecodeError:
        raise SpecError("not UTF-8 text", path=str(path)) from None
    except OSError as error:
        raise SpecError(f"cannot be read ({error.strerror})", path=str(path)) from None
    return parse_spec(text, path=str(path))


def check_fields(spec: Spec, mapping: Mapping[str, Any], *, at: str, allowed: set[str]) -> None:
    """Refuse a field `mapping` (found at field path `at`, "" for the top) does not know."""
    for key in mapping:
        if key not in allowed:
            name = f"{at}.{key}" if at else str(key)
            known = ", ".join(sorted(allowed))
            raise spec.error(name, f"unknown field (known here: {known})")
