"""Helpers shared by the managers: model-level errors that name a field path."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

__all__ = ["Loc", "refuse"]

Loc = Sequence[str | int]


def refuse(title: str, problems: Iterable[tuple[Loc, str]]) -> ValidationError:
    """A `ValidationError` whose errors carry the given paths and messages.

    Raised from a ``model_validator``, it reaches confman's `ValidationFailed` with the
    path of the offending field (a plain ``ValueError`` there would name no field). The
    refused value is never part of the message.
    """
    details = [
        InitErrorDetails(
            type=PydanticCustomError("confman_rule", message),
            loc=tuple(loc),
            input=None,
        )
        for loc, message in problems
    ]
    return ValidationError.from_exception_data(title, details)
