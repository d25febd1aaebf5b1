"""What one run measures: sizes, windows, phases, and where the servers are.

Addresses come from the product's own settings (:func:`settings.load_settings`): Kafka from
``STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS``, MongoDB from ``STREAMSCORE_MONGO__URL``, the model from
``STREAMSCORE_MODEL__PATH``; the bench gives every child process the same addresses.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import Any

from scoring.compiled import compiler_missing
from settings import Settings, load_settings

PHASES = (
    "relay",
    "relay_2p",
    "relay_confluent",
    "relay_confluent_2p",
    "naive",
    "naive_executor",
    "cached",
    "streamscore_1p",
    "streamscore_2p",
    "streamscore_confluent_1p",
    "streamscore_confluent_2p",
    "streamscore_lightgbm_1p",
    "steady",
    "sidecar",
)
HTTP_LEVELS = (1, 16, 64)


@dataclass(frozen=True)
class Spec:
    """A stream variant: the ``bench.workers`` variant it runs, how many processes, the
    product's Kafka client (``STREAMSCORE_KAFKA__CLIENT``) and, for a scorer, its model backend
    (``STREAMSCORE_MODEL__BACKEND``)."""

    worker: str
    processes: int
    client: str = "aiokafka"
    backend: str = "auto"


RELAYS = {
    "relay": Spec("relay", 1),
    "relay_2p": Spec("relay", 2),
    "relay_confluent": Spec("relay_confluent", 1, "confluent"),
    "relay_confluent_2p": Spec("relay_confluent", 2, "confluent"),
}
BASELINES = ("naive", "naive_executor", "cached")
SCORERS = {
    "streamscore_1p": Spec("streamscore", 1),
    "streamscore_2p": Spec("streamscore", 2),
    "streamscore_confluent_1p": Spec("streamscore", 1, "confluent"),
    "streamscore_confluent_2p": Spec("streamscore", 2, "confluent"),
    "streamscore_lightgbm_1p": Spec("streamscore", 1, backend="lightgbm"),
}
STREAM_KEYS = (*RELAYS, *BASELINES, *SCORERS)


@dataclass(frozen=True)
class Profile:
    events: int
    window_s: float
    """How long the per-event baselines are measured (they cannot drain the input)."""
    cold_limit_s: float
    """Longest the cold pass may drain for (events committed by then count)."""
    latency_window_s: float
    settle_s: float
    http_duration_s: float
    http_warmup_s: float
    http_bodies: int
    drain_timeout_s: float
    fractions: tuple[float, ...]
    runs: int
    """Repetitions of the stream variants (medians and ranges over them)."""
    steady_ttl_s: float
    """The entity cache TTL of the steady-state passes."""
    steady_window_s: float


PROFILES = {
    # ~10-12 minutes on 2 shared cores
    "full": Profile(
        200_000, 30.0, 120.0, 12.0, 8.0, 8.0, 5.0, 5_000, 240.0, (0.25, 0.5, 0.9), 3, 20.0, 5.0
    ),
    # a smoke run of every phase (one offered rate per variant, one repetition)
    "quick": Profile(10_000, 5.0, 30.0, 3.0, 3.0, 2.0, 1.0, 1_000, 60.0, (0.5,), 1, 4.0, 2.0),
}


@dataclass(frozen=True)
class BenchConfig:
    quick: bool
    profile: Profile
    entities: int
    cache_ttl_s: float | None
    steady_s: float
    """How long each steady-state pass runs (≥ 3 x ``steady_ttl_s``)."""
    steady_rate: float | None
    """The fixed-rate pass's offered rate (default: half the 1-process warm drain)."""
    zipf_s: float
    only: frozenset[str]
    profile_path: str | None
    log_dir: str | None
    keep: bool
    write: bool
    name: str
    """Results go to bench/results/<name>.json and .md (and the plot, for ``latest``)."""
    settings: Settings
    """The product's settings as this process reads them: the addresses of every server."""

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka.bootstrap_servers

    @property
    def mongo_url(self) -> str:
        return self.settings.mongo.url.get_secret_value()

    def params(self) -> dict[str, Any]:
        """The run's parameters as recorded in latest.json (no addresses: see ``servers``)."""
        out: dict[str, Any] = {f.name: getattr(self.profile, f.name) for f in fields(Profile)}
        out.update(
            quick=self.quick,
            entities=self.entities,
            model=str(self.settings.model.path),
            model_backend=auto_backend(),
            cache_ttl_s=self.cache_ttl_s or self.settings.scoring.cache_ttl_s,
            steady_s=self.steady_s,
            steady_rate=self.steady_rate,
            zipf_s=self.zipf_s,
            http_levels=list(HTTP_LEVELS),
            phases=sorted(self.only),
            profiled=bool(self.profile_path),
        )
        return out


def auto_backend() -> str:
    """What the default backend (``auto``) runs on this machine, for the report."""
    missing = compiler_missing()
    return "compiled trees" if missing is None else f"LightGBM (compiled trees need {missing})"


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="streamscore against a relay ceiling and per-event baselines, end to end "
        "on the servers STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS and STREAMSCORE_MONGO__URL name.",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of every phase")
    parser.add_argument("--events", type=int, help="events per input copy")
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--window-s", type=float, help="per-event baselines' window")
    parser.add_argument("--cold-limit-s", type=float, help="longest cold drain")
    parser.add_argument("--latency-window-s", type=float, help="seconds per offered rate")
    parser.add_argument("--fractions", help="offered rates, as fractions of each max")
    parser.add_argument("--cache-ttl-s", type=float, help="STREAMSCORE_SCORING__CACHE_TTL_S")
    parser.add_argument(
        "--runs", type=int, help="repetitions of the stream variants (full 3, quick 1)"
    )
    parser.add_argument(
        "--steady-ttl-s", type=float, help="steady state: entity cache TTL (full 20, quick 4)"
    )
    parser.add_argument("--steady-s", type=float, help="steady state: seconds per pass (3x TTL)")
    parser.add_argument(
        "--steady-rate", type=float, help="steady state: offered ev/s (half the warm drain)"
    )
    parser.add_argument("--steady-window-s", type=float, help="steady state: seconds per window")
    parser.add_argument("--zipf-s", type=float, default=1.1, help="steady state: Zipf exponent")
    parser.add_argument("--only", default=",".join(PHASES), help="comma-separated phases")
    parser.add_argument(
        "--profile", help="profile the warm 1-process scorer (.prof, .txt or .html)"
    )
    parser.add_argument("--log-dir", help="child process logs (default /tmp/bench-<run id>)")
    parser.add_argument("--keep", action="store_true", help="keep topics and database")
    parser.add_argument("--no-write", action="store_true", help="leave bench/results/ alone")
    parser.add_argument(
        "--name", default="latest", help="write bench/results/NAME.json and NAME.md"
    )
    args = parser.parse_args(argv)
    base = PROFILES["quick" if args.quick else "full"]
    fractions = (
        tuple(float(x) for x in args.fractions.split(",") if x.strip())
        if args.fractions
        else base.fractions
    )
    profile = Profile(
        events=args.events or base.events,
        window_s=args.window_s or base.window_s,
        cold_limit_s=args.cold_limit_s or base.cold_limit_s,
        latency_window_s=args.latency_window_s or base.latency_window_s,
        settle_s=base.settle_s,
        http_duration_s=base.http_duration_s,
        http_warmup_s=base.http_warmup_s,
        http_bodies=base.http_bodies,
        drain_timeout_s=base.drain_timeout_s,
        fractions=fractions,
        runs=args.runs or base.runs,
        steady_ttl_s=args.steady_ttl_s or base.steady_ttl_s,
        steady_window_s=args.steady_window_s or base.steady_window_s,
    )
    if profile.events < 1000:
        parser.error("--events must be >= 1000")
    steady_s = args.steady_s or 3 * profile.steady_ttl_s
    if steady_s < 3 * profile.steady_ttl_s:
        parser.error("--steady-s must be at least 3x --steady-ttl-s")
    only = frozenset(x.strip() for x in args.only.split(",") if x.strip())
    if unknown := only - set(PHASES):
        parser.error(f"unknown phases {sorted(unknown)}; known: {', '.join(PHASES)}")
    return BenchConfig(
        quick=args.quick,
        profile=profile,
        entities=args.entities,
        cache_ttl_s=args.cache_ttl_s,
        steady_s=steady_s,
        steady_rate=args.steady_rate,
        zipf_s=args.zipf_s,
        only=only,
        profile_path=args.profile,
        log_dir=args.log_dir,
        keep=args.keep,
        write=not args.no_write,
        name=args.name,
        settings=load_settings(),
    )
