"""Reason codes: offline pred_contrib, ordering, the score threshold, and they add up."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from schemas import InputEvent
from scoring import EntityCache, LoadedModel, ScoringPipeline
from scoring.reasons import ReasonPolicy, explain
from tests.support.challenger import offline_reasons, vectors
from tests.support.helpers import MemoryFeatures

STORED = {
    "user-1": {"account_age_days": 30.0, "avg_amount_30d": 20.0, "country_risk": 0.9},
    "user-2": {"account_age_days": 2_000.0, "txn_count_30d": 40.0},
}
RAW: list[dict[str, Any]] = [
    {"event_id": f"e{i}", "entity_id": f"user-{i % 3}", "features": {"amount": 5.0 * i, "hour": i}}
    for i in range(40)
]


def events() -> list[InputEvent]:
    return [InputEvent.model_validate(e) for e in RAW]


def pipeline(model: LoadedModel, policy: ReasonPolicy | None) -> ScoringPipeline:
    return ScoringPipeline(
        model,
        MemoryFeatures(STORED),
        ThreadPoolExecutor(1),
        cache=EntityCache(10, 60),
        reasons=policy,
    )


async def test_reasons_are_the_offline_top_contributions_of_the_contract_vector(
    model: LoadedModel,
) -> None:
    predictions = await pipeline(model, ReasonPolicy(3)).score(events())
    expected = offline_reasons(model, vectors(model, RAW, STORED), 3)
    assert [[r.model_dump() for r in p.reasons or []] for p in predictions] == expected
    assert all(len(p.reasons or []) == 3 for p in predictions)
    first = predictions[0].reasons or []
    assert abs(first[0].contribution) >= abs(first[1].contribution) >= abs(first[2].contribution)


async def test_contributions_plus_expected_value_add_up_to_the_raw_score(
    model: LoadedModel,
) -> None:
    matrix = vectors(model, RAW, STORED)
    contributions = model.contributions(matrix)
    raw = np.asarray(model.booster.predict(matrix, raw_score=True))
    assert contributions.shape == (len(RAW), len(model.feature_names) + 1)
    np.testing.assert_allclose(contributions.sum(axis=1), raw, rtol=0, atol=1e-9)
    # and the score is the sigmoid of that sum (a binary model)
    scores = model.predict(matrix)
    np.testing.assert_allclose(1 / (1 + np.exp(-contributions.sum(axis=1))), scores, atol=1e-12)


async def test_with_all_reasons_they_add_up_to_the_raw_score_minus_the_expected_value(
    model: LoadedModel,
) -> None:
    width = len(model.feature_names)
    predictions = await pipeline(model, ReasonPolicy(width)).score(events())
    matrix = vectors(model, RAW, STORED)
    expected_value = model.contributions(matrix)[:, -1]
    raw = np.asarray(model.booster.predict(matrix, raw_score=True))
    for i, p in enumerate(predictions):
        total = sum(r.contribution for r in p.reasons or [])
        assert abs(total + expected_value[i] - raw[i]) < 1e-9


async def test_only_predictions_at_or_above_the_minimum_score_are_explained(
    model: LoadedModel,
) -> None:
    plain = await pipeline(model, None).score(events())
    scores = sorted(p.score for p in plain)
    cut = scores[-5]
    above = sum(1 for s in scores if s >= cut)
    assert 5 <= above < len(scores)
    explained = await pipeline(model, ReasonPolicy(2, min_score=cut)).score(events())
    assert sum(1 for p in explained if p.reasons) == above
    for p in explained:
        assert (len(p.reasons or []) == 2) == (p.score >= cut)
        assert p.reasons is not None  # empty list, not absent, below the threshold
    assert [p.score for p in explained] == [p.score for p in plain]


async def test_reasons_off_leaves_the_contract_unchanged(model: LoadedModel) -> None:
    for policy in (None, ReasonPolicy(0)):
        prediction = (await pipeline(model, policy).score(events()[:1]))[0]
        assert prediction.reasons is None
        assert "reasons" not in prediction.model_dump_json()


def test_missing_values_are_written_as_null(model: LoadedModel) -> None:
    matrix = np.full((1, len(model.feature_names)), np.nan)
    scores = model.predict(matrix)
    (reasons,) = explain(model, matrix, scores, ReasonPolicy(len(model.feature_names)))
    assert [r.value for r in reasons] == [None] * len(model.feature_names)
    assert sorted(r.feature for r in reasons) == sorted(model.feature_names)
