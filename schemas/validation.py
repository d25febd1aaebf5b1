"""Pydantic validation errors as readable field problems, the same way at both doors."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

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


def field_problems(exc: ValidationError) -> list[FieldProblem]:
    """Every error of ``exc`` without the input it rejected (inputs may hold secrets or be
    huge) and without pydantic's ``Value error, `` prefix on our own validators' messages."""
    return [
        FieldProblem(
            location=".".join(str(part) for part in error["loc"]),
            message=str(error["msg"]).removeprefix("Value error, "),
            kind=error["type"],
        )
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
