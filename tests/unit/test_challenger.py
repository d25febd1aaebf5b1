"""The challenger: same lookup and vectors, its own predictions, dropped when it fails, its
metrics, its reloader, promotion by file swap, and the CLI's promote."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from schemas import InputEvent
from scoring import EntityCache, LoadedModel, ModelLoadError, ScoringPipeline, load_model
from scoring.challenger import promote_files
from scoring.metrics import ScoringMetrics
from scoring.model import metadata_path
from scoring.service import open_scoring
from settings import Settings
from streamscore_cli.main import main as cli
from tests.support.challenger import (
    CHALLENGER_NAME,
    copy_model,
    train_challenger,
    unfillable_model,
)
from tests.support.helpers import MemoryFeatures, offline_scores
from tests.support.names import Names, settings_for

STORED = {
    "user-1": {"account_age_days": 30.0, "avg_amount_30d": 20.0, "country_risk": 0.9},
    "user-2": {"account_age_days": 2_000.0, "txn_count_30d": 40.0},
}
RAW: list[dict[str, Any]] = [
    {"event_id": f"e{i}", "entity_id": f"user-{i % 3}", "features": {"amount": 7.0 * i, "hour": i}}
    for i in range(30)
]


@pytest.fixture(scope="module")
def challenger_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_challenger(tmp_path_factory.mktemp("challenger") / "challenger.txt")


@pytest.fixture(scope="module")
def challenger(challenger_path: Path) -> LoadedModel:
    return load_model(challenger_path)


class Recording(MemoryFeatures):
    def __init__(self) -> None:
        super().__init__(STORED)
        self.projections: list[list[str]] = []

    def use_features(self, feature_names: Sequence[str]) -> None:
        self.projections.append(list(feature_names))


def events() -> list[InputEvent]:
    return [InputEvent.model_validate(e) for e in RAW]


def pipeline(model: LoadedModel, source: MemoryFeatures | None = None) -> ScoringPipeline:
    return ScoringPipeline(
        model, source or MemoryFeatures(STORED), ThreadPoolExecutor(1), cache=EntityCache(10, 60)
    )


async def test_both_models_score_every_event_on_one_lookup(
    model: LoadedModel, challenger: LoadedModel
) -> None:
    source = MemoryFeatures(STORED)
    scorer = pipeline(model, source)
    scorer.swap_challenger(challenger)
    scored = await scorer.score_all(events())

    assert source.calls == [["user-0", "user-1", "user-2"]]
    assert scorer.stats.model_calls == 1
    main, shadow = offline_scores(model, RAW, STORED), offline_scores(challenger, RAW, STORED)
    assert [p.score for p in scored.predictions] == [main[e["event_id"]] for e in RAW]
    assert [p.score for p in scored.challenger] == [shadow[e["event_id"]] for e in RAW]
    assert main != shadow
    for p, c in zip(scored.predictions, scored.challenger, strict=True):
        assert (c.event_id, c.entity_id, c.enrichment) == (p.event_id, p.entity_id, p.enrichment)
        assert (c.event_time, c.scored_at) == (p.event_time, p.scored_at)
        assert c.model.name == CHALLENGER_NAME
        assert p.model.name == model.name
    # Without a challenger the main predictions are the same.
    alone = await pipeline(model).score_all(events())
    assert [p.score for p in alone.predictions] == [p.score for p in scored.predictions]
    assert alone.challenger == []


async def test_the_comparison_metrics_count_what_happened(
    model: LoadedModel, challenger: LoadedModel
) -> None:
    scorer = ScoringPipeline(
        model,
        MemoryFeatures(STORED),
        ThreadPoolExecutor(1),
        challenger_threshold=0.03,
    )
    scorer.swap_challenger(challenger)
    scored = await scorer.score_all(events())
    main = np.array([p.score for p in scored.predictions])
    other = np.array([p.score for p in scored.challenger])
    m = scorer.metrics
    assert m.value("streamscore_challenger_events_total", model="main") == 30
    assert m.value("streamscore_challenger_events_total", model="challenger") == 30
    assert m.value("streamscore_challenger_difference_count") == 30
    assert m.value("streamscore_challenger_difference_sum") == pytest.approx(
        float(np.abs(main - other).sum())
    )
    agree = np.count_nonzero((main >= 0.03) == (other >= 0.03))
    both = sum(
        m.value("streamscore_challenger_decisions_total", outcome=o)
        for o in ("both_above", "both_below")
    )
    assert both == agree
    assert m.value("streamscore_challenger_decisions_total", outcome="main_only") == (
        np.count_nonzero((main >= 0.03) & (other < 0.03))
    )
    assert m.value("streamscore_challenger_scores_count", model="challenger") == 30
    assert m.value("streamscore_challenger_info", name=CHALLENGER_NAME, version="c1") == 1


async def test_a_challenger_that_throws_is_dropped_and_the_main_path_keeps_scoring(
    model: LoadedModel, challenger: LoadedModel
) -> None:
    def broken(matrix: Any) -> Any:
        raise RuntimeError("challenger exploded")

    failing = replace(challenger)
    object.__setattr__(failing, "predict", broken)
    scorer = pipeline(model)
    scorer.swap_challenger(failing)

    scored = await scorer.score_all(events())
    expected = offline_scores(model, RAW, STORED)
    assert [p.score for p in scored.predictions] == [expected[e["event_id"]] for e in RAW]
    assert scored.challenger == []
    assert scorer.challenger is None
    m = scorer.metrics
    assert m.value("streamscore_challenger_failures_total", stage="score") == 1
    assert m.value("streamscore_challenger_events_total", model="main") == 30
    assert m.value("streamscore_challenger_events_total", model="challenger") == 0
    again = await scorer.score_all(events())
    assert again.challenger == []
    assert len(again.predictions) == 30
    assert m.value("streamscore_challenger_failures_total", stage="score") == 1


async def test_stored_features_are_read_for_both_models(
    model: LoadedModel, challenger: LoadedModel
) -> None:
    narrow = replace(challenger, feature_names=("amount", "extra_stored"))
    source = Recording()
    scorer = pipeline(model, source)
    scorer.swap_challenger(narrow)
    assert source.projections[-1] == [*model.feature_names, "extra_stored"]
    scorer.swap_challenger(None)
    assert source.projections[-1] == list(model.feature_names)


@asynccontextmanager
async def in_memory(settings: Settings) -> AsyncIterator[ScoringPipeline]:
    with ThreadPoolExecutor(1) as executor:
        yield ScoringPipeline(load_model(settings.model.path), MemoryFeatures(STORED), executor)


async def test_a_challenger_that_cannot_load_is_not_attached(
    names: Names, model_path: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "challenger.txt"
    broken.write_text("not a model")
    metadata_path(broken).write_text('{"name": "x", "version": "1"}')
    settings = settings_for(
        names, model_path, model={"reload_interval_s": 0}, challenger={"path": broken}
    )
    async with open_scoring(settings, pipeline_factory=in_memory) as service:
        assert service.pipeline.challenger is None
        assert service.challenger is not None
        m = service.metrics
        assert m.value("streamscore_challenger_failures_total", stage="load") == 1
        scored = await service.pipeline.score_all(events())
        assert len(scored.predictions) == 30
        assert scored.challenger == []


async def test_the_challenger_reloads_like_the_main_model(
    names: Names, model_path: Path, challenger_path: Path, tmp_path: Path
) -> None:
    path = copy_model(challenger_path, tmp_path / "challenger.txt")
    settings = settings_for(
        names, model_path, model={"reload_interval_s": 0}, challenger={"path": path}
    )
    async with open_scoring(settings, pipeline_factory=in_memory) as service:
        attached = service.pipeline.challenger
        assert attached is not None
        assert attached.version == "c1"
        assert service.challenger is not None
        train_challenger(path, version="c2")
        await service.challenger.reload()
        reloaded = service.pipeline.challenger
        assert reloaded is not None
        assert reloaded.version == "c2"
        assert service.pipeline.model.version == "1"
        assert service.metrics.value("streamscore_challenger_reloads_total", result="loaded") == 1


def test_promotion_swaps_the_files_and_refuses_unfillable_names(
    model_path: Path, challenger_path: Path, tmp_path: Path
) -> None:
    main = copy_model(model_path, tmp_path / "models" / "model.txt")
    shadow = copy_model(challenger_path, tmp_path / "shadow" / "challenger.txt")
    main_bytes, shadow_bytes = main.read_bytes(), shadow.read_bytes()

    promotion = promote_files(main, shadow)
    assert (promotion.main.name, promotion.main.version) == (CHALLENGER_NAME, "c1")
    assert (promotion.challenger.name, promotion.challenger.version) == ("fraud", "1")
    assert main.read_bytes() == shadow_bytes
    assert shadow.read_bytes() == main_bytes
    assert json.loads(metadata_path(main).read_text())["name"] == CHALLENGER_NAME
    assert sorted(p.name for p in main.parent.iterdir()) == [
        ".model.txt.promote.lock",  # empty; held only while a promotion runs
        "model.json",
        "model.txt",
    ]

    dotted = unfillable_model(tmp_path / "shadow" / "dotted.txt")
    before = main.read_bytes()
    with pytest.raises(ModelLoadError, match="cannot fill"):
        promote_files(main, dotted)
    assert main.read_bytes() == before
    with pytest.raises(ModelLoadError, match=r"cannot fill: \['a\.b'\]"):
        load_model(dotted)  # at start too, not only on a reload


def test_cli_promote(
    model_path: Path,
    challenger_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    main = copy_model(model_path, tmp_path / "model.txt")
    shadow = copy_model(challenger_path, tmp_path / "challenger.txt")
    monkeypatch.setenv("STREAMSCORE_MODEL__PATH", str(main))
    monkeypatch.setenv("STREAMSCORE_CHALLENGER__PATH", str(shadow))
    assert cli(["promote"]) == 0
    assert f"promoted {CHALLENGER_NAME}:c1" in capsys.readouterr().out
    assert load_model(main).name == CHALLENGER_NAME
    assert load_model(shadow).name == "fraud"

    monkeypatch.setenv("STREAMSCORE_CHALLENGER__PATH", str(unfillable_model(tmp_path / "d.txt")))
    assert cli(["promote"]) == 2
    assert "cannot fill" in capsys.readouterr().err
    assert load_model(main).name == CHALLENGER_NAME
    monkeypatch.delenv("STREAMSCORE_CHALLENGER__PATH")
    assert cli(["promote"]) == 2


def test_metrics_document_every_challenger_family() -> None:
    described = {family.name for family in ScoringMetrics().describe()}
    assert {
        "streamscore_challenger_info",
        "streamscore_challenger_events",
        "streamscore_challenger_scores",
        "streamscore_challenger_difference",
        "streamscore_challenger_decisions",
        "streamscore_challenger_failures",
        "streamscore_challenger_reloads",
    } <= described


def test_promoting_a_challenger_that_is_the_main_models_own_file_is_refused(
    model_path: Path, tmp_path: Path
) -> None:
    main = copy_model(model_path, tmp_path / "model.txt")
    before = main.read_bytes()
    with pytest.raises(ModelLoadError, match="the main model's own file"):
        promote_files(main, tmp_path / "." / "model.txt")
    assert main.read_bytes() == before


def _promote_repeatedly(main: str, shadow: str, times: int) -> None:
    for _ in range(times):
        promote_files(Path(main), Path(shadow))


def test_promotions_from_four_processes_at_once_never_pair_a_model_with_the_others_name(
    model_path: Path, challenger_path: Path, tmp_path: Path
) -> None:
    main = copy_model(model_path, tmp_path / "model.txt")
    shadow = copy_model(challenger_path, tmp_path / "challenger.txt")
    names_of = {main.read_bytes(): "fraud", shadow.read_bytes(): CHALLENGER_NAME}
    spawn = multiprocessing.get_context("spawn")
    workers = [
        spawn.Process(target=_promote_repeatedly, args=(str(main), str(shadow), 15))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    for path in (main, shadow):  # 60 promotions: each file holds a model and its own name
        assert json.loads(metadata_path(path).read_text())["name"] == names_of[path.read_bytes()]
    assert names_of[main.read_bytes()] == "fraud"
