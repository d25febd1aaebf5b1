"""How both doors read JSON text: the same bytes are an event, or not, on Kafka and over HTTP.

JSON exchanged between systems is UTF-8 (RFC 8259, section 8.1). A leading UTF-8 byte order
mark is ignored, as that section allows; any other encoding (UTF-16, UTF-32, Latin-1) is
refused. The parser is pydantic-core's on both doors, so its limits are the same on both:
nesting deeper than about 200 levels, integers of more than 4,300 digits and lone surrogate
escapes (``"\\ud800"``, not Unicode) make the text invalid JSON, wherever they are.
"""

from __future__ import annotations

from typing import Any

import pydantic_core

UTF8_BOM = b"\xef\xbb\xbf"


def without_bom(raw: bytes) -> bytes:
    """``raw`` without a leading UTF-8 byte order mark (unchanged when it has none)."""
    return raw[3:] if raw[:3] == UTF8_BOM else raw


def utf8_problem(raw: bytes) -> str | None:
    """Why ``raw`` is not UTF-8 (e.g. ``invalid start byte at byte 0``); None when it is."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"{exc.reason} at byte {exc.start}"
    return None


def load_json(raw: bytes) -> Any:
    """The JSON value of ``raw`` (UTF-8, a leading BOM ignored). Raises ``ValueError`` with a
    readable reason: ``not UTF-8: ...`` or the parser's, with line and column."""
    try:
        return pydantic_core.from_json(without_bom(raw))
    except ValueError as exc:
        problem = utf8_problem(raw)  # positions in the bytes as sent, as on the stream
        if problem is not None:
            raise ValueError(f"not UTF-8: {problem}") from None
        raise ValueError(str(exc)) from None
