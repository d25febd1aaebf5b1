"""Every setting is documented in the README's configuration table, and nothing else is."""

from __future__ import annotations

import re
from pathlib import Path

from settings.env import ENV_PREFIX, NESTED_DELIMITER, env_names

README = Path(__file__).resolve().parents[2] / "README.md"
NOT_SETTINGS = {"STREAMSCORE_API_BIND"}
"""Variables the table documents that the compose file reads, not the settings tree."""


def documented_names(readme: str) -> set[str]:
    """The variable names in the first cells of the "Configuration" table rows; a cell may
    abbreviate siblings of the section just named (``STREAMSCORE_KAFKA__LINGER_MS`` /
    ``__COMPRESSION_TYPE``)."""
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        prefix = ENV_PREFIX
        for token in re.findall(r"`([^`]+)`", first_cell):
            if token.startswith(ENV_PREFIX):
                names.add(token)
                head, delimiter, _ = token.rpartition(NESTED_DELIMITER)
                prefix = head + delimiter if delimiter else ENV_PREFIX
            elif token.startswith(NESTED_DELIMITER):
                names.add(prefix + token.removeprefix(NESTED_DELIMITER))
    return names


def test_the_abbreviations_expand_within_their_section() -> None:
    table = (
        "\n## Configuration\n\n| variable | default | meaning |\n|---|---|---|\n"
        "| `STREAMSCORE_KAFKA__LINGER_MS` / `__COMPRESSION_TYPE` | `5` / `none` | x |\n"
        "| `STREAMSCORE_LOG_LEVEL` | `INFO` | y |\n\n## Next\n| `STREAMSCORE_NOT_HERE` | | |\n"
    )
    assert documented_names(table) == {
        "STREAMSCORE_KAFKA__LINGER_MS",
        "STREAMSCORE_KAFKA__COMPRESSION_TYPE",
        "STREAMSCORE_LOG_LEVEL",
    }


def test_every_settings_field_has_a_row() -> None:
    documented = documented_names(README.read_text())
    assert sorted(set(env_names()) - documented) == []


def test_every_row_names_a_setting() -> None:
    documented = documented_names(README.read_text())
    assert sorted(documented - set(env_names()) - NOT_SETTINGS) == []
