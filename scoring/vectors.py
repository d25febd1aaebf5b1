"""Assembling the feature matrix in the model's own feature order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from schemas import InputEvent
from scoring.cache import Lookup
from scoring.feature_store import StoredFeatures
from scoring.model import Matrix

MAX_LAID_OUT = 50_000
_laid_out: dict[int, tuple[StoredFeatures, Sequence[str], tuple[float, ...]]] = {}
"""Stored features already laid out as a row, by the identity of the features object (kept
here, so the identity stays theirs) and of the model's feature names. The entity cache hands
out the same object for an entity until it is read again, so each entity's row is laid out
once per read, not once per batch. Bounded; forgotten all at once when full."""


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
    laid_out = _laid_out
    for entity_id, features in stored.items():
        if features:
            cached = laid_out.get(id(features))
            if cached is not None and cached[0] is features and cached[1] is feature_names:
                entity_rows[entity_id] = cached[2]
                continue
            row = list(missing)
            for name, stored_value in features.items():
                col = columns.get(name)
                if col is not None:
                    row[col] = stored_value
            if len(laid_out) >= MAX_LAID_OUT:
                laid_out.clear()
            entity_rows[entity_id] = tuple(row)
            laid_out[id(features)] = (features, feature_names, entity_rows[entity_id])
    # Rows are laid out in one flat list and converted once: item assignment into a numpy
    # array costs several times a list's, and one list per row feeds the garbage collector.
    flat: list[float] = []
    extend = flat.extend
    ignored = 0
    start = 0
    for event in events:
        extend(entity_rows.get(event.entity_id, missing))
        sent = event.sent_features  # the field itself: None when the event has none
        if sent:
            for name, value in sent.items():
                col = columns.get(name)
                if col is None:
                    ignored += 1
                elif value is not None:
                    flat[start + col] = value
        start += width
    matrix: Matrix = np.array(flat, dtype=np.float64).reshape(len(events), width)
    return matrix, ignored
