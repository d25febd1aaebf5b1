"""The scoring service: opened once per process, its metrics registered once, all closed."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from schemas import InputEvent
from scoring import EntityCache, ModelLoadError, ScoringPipeline, load_model
from scoring.model import metadata_path
from scoring.model_trial import trial_load
from scoring.service import open_scoring
from settings import Settings
from tests.support.helpers import MemoryFeatures
from tests.support.names import Names, settings_for

STORED = {"user-1": {"account_age_days": 30.0, "avg_amount_30d": 20.0}}


@asynccontextmanager
async def in_memory(settings: Settings) -> AsyncIterator[ScoringPipeline]:
    with ThreadPoolExecutor(1) as executor:
        yield ScoringPipeline(
            load_model(settings.model.path),
            MemoryFeatures(STORED),
            executor,
            cache=EntityCache(1, 60),
        )


def batch() -> list[InputEvent]:
    return [
        InputEvent(event_id="a", entity_id="user-1", features={"amount": 5.0, "extra": 1.0}),
        InputEvent(event_id="b", entity_id="ghost", features={}),
    ]


async def test_the_service_registers_its_metrics_once_and_removes_them_at_exit(
    names: Names, model_path: Path
) -> None:
    registry = CollectorRegistry()
    settings = settings_for(names, model_path, model={"reload_interval_s": 0})
    async with open_scoring(settings, pipeline_factory=in_memory, registry=registry) as service:
        assert service.registry is registry
        assert service.metrics is service.pipeline.metrics
        await service.pipeline.score(batch())
        assert registry.get_sample_value("streamscore_events_scored_total") == 2
        assert registry.get_sample_value("streamscore_model_calls_total") == 1
    assert "streamscore_events_scored" not in generate_latest(registry).decode()


async def test_snapshot_says_what_the_metrics_say(names: Names, model_path: Path) -> None:
    settings = settings_for(names, model_path, model={"reload_interval_s": 0})
    async with open_scoring(settings, pipeline_factory=in_memory) as service:
        await service.pipeline.score(batch())
        await service.pipeline.score(batch()[:1])
        snapshot = service.snapshot()
    model = load_model(model_path)
    assert (snapshot.model_name, snapshot.model_version) == (model.name, model.version)
    assert (snapshot.events_scored, snapshot.pipeline_calls) == (3, 2)
    assert (snapshot.enrichment_hits, snapshot.enrichment_misses) == (2, 1)
    assert (snapshot.enrichment_errors, snapshot.mongo_failures) == (0, 0)
    assert snapshot.ignored_features == 2
    # A one-entry cache: user-1 and ghost miss and load; ghost pushes user-1 out, which then
    # misses again.
    assert (snapshot.cache_hits, snapshot.cache_misses, snapshot.cache_loads) == (0, 3, 2)
    assert (snapshot.cache_entries, snapshot.cache_evictions) == (1, 2)
    assert snapshot.enrich_seconds > 0
    assert snapshot.model_seconds > 0
    assert (snapshot.reloads_loaded, snapshot.reloads_refused) == (0, 0)


def _copied(model_path: Path, folder: Path) -> Path:
    """A copy of the model and its metadata in ``folder`` (``model.txt``), to change."""
    path = folder / "model.txt"
    shutil.copy(model_path, path)
    shutil.copy(metadata_path(model_path), metadata_path(path))
    return path


async def test_reloads_are_counted_and_model_info_follows_the_swap(
    names: Names, model_path: Path, tmp_path: Path
) -> None:
    path = _copied(model_path, tmp_path)
    settings = settings_for(names, path, model={"reload_interval_s": 0})
    async with open_scoring(settings, pipeline_factory=in_memory) as service:
        old = service.pipeline.model.version
        metadata_path(path).write_text('{"name": "fraud", "version": "next"}', encoding="utf-8")
        await service.reloader.reload()
        metadata_path(path).write_text("[]", encoding="utf-8")
        with pytest.raises(ModelLoadError):
            await service.reloader.reload()
        registry = service.registry
        snapshot = service.snapshot()
        info = {
            version: registry.get_sample_value(
                "streamscore_model_info", {"name": "fraud", "version": version}
            )
            for version in (old, "next")
        }
    assert (snapshot.reloads_loaded, snapshot.reloads_refused) == (1, 1)
    assert snapshot.model_version == "next"
    assert info == {old: None, "next": 1.0}


async def test_the_gil_switch_interval_is_the_settings_while_open(
    names: Names, model_path: Path
) -> None:
    before = sys.getswitchinterval()
    settings = settings_for(
        names, model_path, model={"reload_interval_s": 0}, scoring={"switch_interval_ms": 2.5}
    )
    async with open_scoring(settings, pipeline_factory=in_memory):
        assert sys.getswitchinterval() == pytest.approx(0.0025)
    assert sys.getswitchinterval() == before


@pytest.mark.parametrize("door_ms", [0.2, 0.5])
async def test_without_a_setting_the_switch_interval_is_the_doors_own(
    names: Names, model_path: Path, door_ms: float
) -> None:
    before = sys.getswitchinterval()
    settings = settings_for(names, model_path, model={"reload_interval_s": 0})
    assert settings.scoring.switch_interval_ms is None
    async with open_scoring(settings, pipeline_factory=in_memory, switch_interval_ms=door_ms):
        assert sys.getswitchinterval() == pytest.approx(door_ms / 1000)
    assert sys.getswitchinterval() == before


def _damaged(model_path: Path, cut: str) -> str:
    text = model_path.read_text(encoding="utf-8")
    end = text.index("\nend of trees")
    return {
        "inside the trees": text[: end // 2],
        "just before 'end of trees'": text[: end - 2],
        "tree sizes that do not add up": text.replace("\nTree=1\n", "\nTree=1\n\n", 1),
    }[cut]


@pytest.mark.parametrize(
    "cut",
    ["inside the trees", "just before 'end of trees'", "tree sizes that do not add up"],
)
async def test_a_model_file_cut_short_is_refused_and_the_old_model_keeps_scoring(
    names: Names, model_path: Path, tmp_path: Path, cut: str
) -> None:
    """LightGBM aborts the process on a model file cut inside its trees (a copy still under
    way): such a file is refused before LightGBM reads it."""
    path = _copied(model_path, tmp_path)
    damaged = _damaged(model_path, cut)
    settings = settings_for(names, path, model={"reload_interval_s": 0})
    async with open_scoring(settings, pipeline_factory=in_memory) as service:
        before = await service.pipeline.score([InputEvent(event_id="e", entity_id="u")])
        path.write_text(damaged, encoding="utf-8")
        with pytest.raises(ModelLoadError, match=r"incomplete|damaged"):
            await service.reloader.reload()
        after = await service.pipeline.score([InputEvent(event_id="e", entity_id="u")])
        snapshot = service.snapshot()
    assert after[0].score == before[0].score
    assert (snapshot.reloads_loaded, snapshot.reloads_refused) == (0, 1)
    with pytest.raises(ModelLoadError):
        load_model(path)  # at start too: refused, not a crash


def _inconsistent(model_path: Path) -> str:
    """Whole (its trees end, its tree_sizes add up) but one tree's ``num_leaves`` says more
    leaves than its arrays hold: LightGBM aborts the process loading it."""
    text = model_path.read_text(encoding="utf-8")
    at = text.index("\nnum_leaves=") + len("\nnum_leaves=")
    digits = text[at : text.index("\n", at)]
    return text[:at] + "9" * len(digits) + text[at + len(digits) :]


async def test_a_whole_but_inconsistent_model_file_is_refused_not_a_crash(
    names: Names, model_path: Path, tmp_path: Path
) -> None:
    path = _copied(model_path, tmp_path)
    damaged = _inconsistent(model_path)
    settings = settings_for(names, path, model={"reload_interval_s": 0})
    async with open_scoring(settings, pipeline_factory=in_memory) as service:
        before = await service.pipeline.score([InputEvent(event_id="e", entity_id="u")])
        path.write_text(damaged, encoding="utf-8")
        with pytest.raises(ModelLoadError, match="a trial load crashed"):
            await service.reloader.reload()
        after = await service.pipeline.score([InputEvent(event_id="e", entity_id="u")])
        snapshot = service.snapshot()
    assert after[0].score == before[0].score
    assert (snapshot.reloads_loaded, snapshot.reloads_refused) == (0, 1)
    with pytest.raises(ModelLoadError, match="a trial load crashed"):
        load_model(path)  # at start too: refused (exit code 2), not an abort


def test_a_trial_load_that_runs_out_of_time_is_refused(model_path: Path) -> None:
    text = model_path.read_text(encoding="utf-8") + "\n"  # another text: not tried yet
    with pytest.raises(ModelLoadError, match=r"did not load and score m within 0 s"):
        trial_load(text, "m", timeout_s=0.01)


def _trained(path: Path, params: dict[str, object], labels: str) -> Path:
    """A small model on the demo's feature names, saved with its metadata."""
    rng = np.random.default_rng(3)
    names = ["a", "b"]
    x = rng.random((300, len(names)))
    y = {"three": np.floor(x[:, 0] * 3), "real": x[:, 0] * 10 - x[:, 1]}[labels]
    booster = lgb.train(
        {"verbose": -1, "min_data_in_leaf": 5, **params},
        lgb.Dataset(x, y, feature_name=names),
        num_boost_round=4,
    )
    booster.save_model(str(path))
    metadata_path(path).write_text(json.dumps({"name": "m", "version": "1"}))
    return path


def test_a_multiclass_model_is_refused_naming_its_outputs(tmp_path: Path) -> None:
    """A prediction carries one score: a model with one output per class is refused, not
    scored by one class's probability."""
    path = _trained(tmp_path / "m.txt", {"objective": "multiclass", "num_class": 3}, "three")
    with pytest.raises(ModelLoadError, match="3 outputs per row"):
        load_model(path)


def test_a_regression_model_scores_what_booster_predict_returns(tmp_path: Path) -> None:
    path = _trained(tmp_path / "r.txt", {"objective": "regression"}, "real")
    model = load_model(path)
    rows = np.array([[0.1, 0.9], [0.8, np.nan], [np.nan, np.nan]])
    expected = np.asarray(lgb.Booster(model_file=str(path)).predict(rows), dtype=np.float64)
    assert model.predict(rows).tolist() == expected.tolist()
    assert max(expected) > 1.0  # not a probability: the regression value itself


async def test_a_model_file_gone_missing_is_said_once_and_the_model_keeps_scoring(
    names: Names, model_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _copied(model_path, tmp_path)
    settings = settings_for(names, path, model={"reload_interval_s": 0})
    kept = metadata_path(path).read_bytes()

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]

    async with open_scoring(settings, pipeline_factory=in_memory) as service:
        metadata_path(path).unlink()
        for _ in range(3):
            await service.reloader.check()
        assert len(warnings()) == 1
        assert str(metadata_path(path)) in warnings()[0]
        assert str(path) + "," not in warnings()[0]  # only the file that is gone
        scored = await service.pipeline.score([InputEvent(event_id="e", entity_id="u")])
        assert scored[0].model.version == service.pipeline.model.version
        metadata_path(path).write_bytes(kept)
        await service.reloader.check()
        metadata_path(path).unlink()
        await service.reloader.check()
        assert len(warnings()) == 2  # gone again: said again


def test_a_model_file_with_windows_line_ends_loads_and_scores_the_same(
    model_path: Path, tmp_path: Path
) -> None:
    path = tmp_path / "crlf.txt"
    path.write_bytes(model_path.read_bytes().replace(b"\n", b"\r\n"))
    shutil.copy(metadata_path(model_path), metadata_path(path))
    rows = np.random.default_rng(5).random((50, len(load_model(model_path).feature_names)))
    assert (load_model(path).predict(rows) == load_model(model_path).predict(rows)).all()
