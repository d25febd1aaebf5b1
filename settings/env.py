"""The settings tree as ``STREAMSCORE_*`` environment variables, for a child process.

Generated from the model tree, so a new setting reaches child processes without anyone writing
its variable by hand: ``load_settings()`` in a process whose environment is
``to_env(settings)`` builds settings equal to ``settings``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, SecretStr

from settings.model import Settings

ENV_PREFIX = "STREAMSCORE_"
NESTED_DELIMITER = "__"


def env_name(path: tuple[str, ...]) -> str:
    """``("kafka", "group_id")`` → ``STREAMSCORE_KAFKA__GROUP_ID``."""
    return ENV_PREFIX + NESTED_DELIMITER.join(part.upper() for part in path)


def field_paths(model: type[BaseModel] = Settings) -> Iterator[tuple[str, ...]]:
    """The path of every leaf field of the tree, sections first-to-last in declaration order."""
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for sub in field_paths(annotation):
                yield (name, *sub)
        else:
            yield (name,)


def env_names(model: type[BaseModel] = Settings) -> list[str]:
    """Every variable the settings tree reads, e.g. for checking the documentation."""
    return [env_name(path) for path in field_paths(model)]


def env_value(value: object) -> str | None:
    """A field value written the way the settings loader reads it back (None: leave unset)."""
    if value is None:
        return None
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, str | int | float | Path):
        return str(value)
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)  # pydantic-settings reads complex fields as JSON
    raise TypeError(f"no environment form for a {type(value).__name__} setting")


def _value_at(settings: Settings, path: tuple[str, ...]) -> object:
    value: object = settings
    for part in path:
        value = getattr(value, part)
    return value


def to_env(settings: Settings, **overrides: object) -> dict[str, str]:
    """The ``STREAMSCORE_*`` variables that make a child process load exactly ``settings``.

    ``overrides`` replace single fields, named by their path in lower case joined with ``__``
    (``stream__workers=1``, ``kafka__client_id="scorer-2"``, ``log_level="INFO"``); an unknown
    name raises ``KeyError``. Values are written as the loader reads them: secrets revealed,
    booleans ``true``/``false``, paths as strings. A ``None`` value is left out, so the child
    gets the field's default: equal for every field whose default is ``None``; for a field
    that is optional but defaults to a value (``stream.metrics_port``), the variable cannot
    say "none" and the caller must choose a value.
    """
    paths = {NESTED_DELIMITER.join(path): path for path in field_paths()}
    unknown = sorted(set(overrides) - set(paths))
    if unknown:
        raise KeyError(f"not settings fields: {', '.join(unknown)}")
    env: dict[str, str] = {}
    for key, path in paths.items():
        value = overrides[key] if key in overrides else _value_at(settings, path)
        text = env_value(value)
        if text is not None:
            env[env_name(path)] = text
    return env
