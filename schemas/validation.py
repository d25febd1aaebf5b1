"""Pydantic validation errors as readable field problems, the same way at both doors."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_core import ErrorDetails

MAX_NAME_CHARS = 64
"""A location part (a feature name, a field name) longer than this is cut in messages: a
producer's 1 MB feature name is not repeated back."""

NOT_AN_OBJECT = frozenset({"model_type", "model_attributes_type"})
"""Error types that mean the value as a whole is not a JSON object."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One validation error: where (dotted, ``""`` for the value itself) and why."""

    location: str
    message: str
    kind: str
    """Pydantic's error type, e.g. ``json_invalid``, ``missing``, ``string_type``."""

    @property
    def not_an_object(self) -> bool:
        """The value as a whole is not a JSON object (the message then says little)."""
        return not self.location and self.kind in NOT_AN_OBJECT


def _message(error: ErrorDetails) -> str:
    """The error's message; pydantic's own number errors say what the number rule says."""
    kind = error["type"]
    if kind == "finite_number":
        return f"must be a finite number, got {error.get('input')}"
    if kind == "float_type":
        value = error.get("input")
        if isinstance(value, int) and not isinstance(value, bool):
            return "must be a finite number (integer too large)"
        return f"must be a number or null, not {type(value).__name__}"
    return str(error["msg"]).removeprefix("Value error, ")


def _short(name: str) -> str:
    return name if len(name) <= MAX_NAME_CHARS else f"{name[: MAX_NAME_CHARS - 3]}..."


def field_problems(exc: ValidationError) -> list[FieldProblem]:
    """Every error of ``exc`` without the input it rejected (inputs may hold secrets or be
    huge) and without pydantic's ``Value error, `` prefix on our own validators' messages.
    Number errors are worded like :func:`schemas.numbers.finite_number` (the input's type
    is named, a non-finite input shown)."""
    return [
        FieldProblem(
            location=".".join(_short(str(part)) for part in error["loc"]),
            message=_message(error),
            kind=error["type"],
        )
        for error in exc.errors(include_url=False, include_context=False)
    ]
