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
    matrix: Matrix = np.full((len(events), width), np.nan, dtype=np.float64)
    entity_rows: dict[str, Matrix] = {}
    for entity_id, features in stored.items():
        if features:
            row = np.full(width, np.nan, dtype=np.float64)
            for name, stored_value in features.items():
                col = columns.get(name)
                if col is not None:
                    row[col] = stored_value
            entity_rows[entity_id] = row
    ignored = 0
    for i, event in enumerate(events):
        base = entity_rows.get(event.entity_id)
        if base is not None:
            matrix[i] = base
        for name, value in event.features.items():
            col = columns.get(name)
            if col is None:
                ignored += 1
            elif value is not None:
                matrix[i, col] = value
    return matrix, ignored
