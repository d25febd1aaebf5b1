"""Assembling the feature matrix in the model's own feature order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from schemas import InputEvent
from scoring.cache import Lookup
from scoring.model import Matrix


def assemble(
    events: Sequence[InputEvent],
    stored: Lookup,
    feature_names: Sequence[str],
) -> tuple[Matrix, int]:
    """Build the (events x features) matrix and count the event feature names the model ignores.

    For every model feature, in the model's order: the event's value if present (not null),
    else the entity's stored value, else NaN (missing, which LightGBM handles).
    """
    columns: Mapping[str, int] = {name: i for i, name in enumerate(feature_names)}
    width = len(feature_names)
    missing = (np.nan,) * width
    entity_rows: dict[str, tuple[float, ...]] = {}
    for entity_id, features in stored.items():
        if features:
            row = list(missing)
            for name, stored_value in features.items():
                col = columns.get(name)
                if col is not None:
                    row[col] = stored_value
            entity_rows[entity_id] = tuple(row)
    # Rows are laid out in one flat list and converted once: item assignment into a numpy
    # array costs several times a list's, and one list per row feeds the garbage collector.
    flat: list[float] = []
    extend = flat.extend
    ignored = 0
    start = 0
    for event in events:
        extend(entity_rows.get(event.entity_id, missing))
        for name, value in event.features.items():
            col = columns.get(name)
            if col is None:
                ignored += 1
            elif value is not None:
                flat[start + col] = value
        start += width
    matrix: Matrix = np.array(flat, dtype=np.float64).reshape(len(events), width)
    return matrix, ignored
