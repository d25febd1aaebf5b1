"""The settings tree as ``STREAMSCORE_*`` environment variables, for a child process.

Generated from the model tree, so a new setting reaches child processes without anyone writing
its variable by hand: ``load_settings()`` in a process whose environment is
``to_env(settings)`` builds settings equal to ``settings``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping
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


def misspelt_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each ``STREAMSCORE_*`` variable that looks meant for a setting but is none
    (the settings loader ignores such names silently): a nested name that no setting has
    (``STREAMSCORE_KAFKA__INPUT_TOPC``), or one written with a single ``_`` where the section
    ends (``STREAMSCORE_KAFKA_INPUT_TOPIC``). Other ``STREAMSCORE_*`` names (the local servers'
    ports and folders) are not settings and are left alone."""
    known = env_names()
    known_set = set(known)
    warnings = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known_set:
            continue
        rest = upper[len(ENV_PREFIX) :]
        if NESTED_DELIMITER in rest:
            names = [k[len(ENV_PREFIX) :] for k in known]
            close = difflib.get_close_matches(rest, names, n=1, cutoff=0.8)
            hint = f"; did you mean {ENV_PREFIX}{close[0]}?" if close else ""
            warnings.append(f"{name} is not a setting, and is ignored{hint}")
            continue
        meant = [
            candidate
            for i, char in enumerate(rest)
            if char == "_"
            and (candidate := ENV_PREFIX + rest[:i] + NESTED_DELIMITER + rest[i + 1 :]) in known_set
        ]
        if meant:
            warnings.append(f"{name} is not a setting, and is ignored; did you mean {meant[0]}?")
    return warnings
