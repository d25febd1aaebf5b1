"""Reason codes: the features that pushed each score most (LightGBM ``pred_contrib``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas import Reason
from scoring.model import LoadedModel, Matrix


@dataclass(frozen=True)
class ReasonPolicy:
    """How many reasons each prediction carries, and from which score on they are computed."""

    count: int
    """Reasons per prediction (``STREAMSCORE_MODEL__REASONS``); 0 = off."""
    min_score: float | None = None
    """Only predictions scoring at least this get reasons (the others an empty list); None =
    every prediction (``STREAMSCORE_MODEL__REASONS_MIN_SCORE``)."""

    @property
    def enabled(self) -> bool:
        return self.count > 0


def explain(
    model: LoadedModel,
    matrix: Matrix,
    scores: npt.NDArray[np.float64],
    policy: ReasonPolicy,
) -> list[list[Reason]]:
    """The reasons of every row of ``matrix`` (scored ``scores`` by ``model``).

    1. One ``pred_contrib`` call for the rows at or above ``policy.min_score`` only; the
       other rows get an empty list, so the cost follows alerts, not traffic.
    2. Each explained row lists its ``policy.count`` features of largest absolute
       contribution, largest first (ties in the model's feature order), with the value the
       model used (None when missing) and the contribution in raw-score units.
    """
    explained: list[list[Reason]] = [[] for _ in range(matrix.shape[0])]
    if policy.min_score is None:
        rows = np.arange(matrix.shape[0])
    else:
        rows = np.flatnonzero(scores >= policy.min_score)
    if rows.size == 0:
        return explained
    contributions = model.contributions(matrix[rows])[:, :-1]
    top = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, : policy.count]
    names = model.feature_names
    for at, row in enumerate(rows.tolist()):
        values = matrix[row]
        explained[row] = [
            Reason(
                feature=names[col],
                value=None if math.isnan(value := float(values[col])) else value,
                contribution=float(contributions[at, col]),
            )
            for col in top[at].tolist()
        ]
    return explained
