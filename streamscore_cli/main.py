"""``streamscore``: the command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scoring import ModelLoadError
from settings import Settings, describe_errors, load_settings
from settings.env import misspelt_variables
from streams import early_stop
from streams.exit_codes import ExitCode
from streamscore_cli import demo_data, logs

log = logging.getLogger("streamscore")


def _cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from streamscore_cli.train import train

    path = Path(args.output) if args.output else settings.model.path
    problem = _output_problem(path)
    if problem is not None:
        print(f"streamscore train: {problem}", file=sys.stderr)
        return ExitCode.CONFIGURATION
    try:
        auc = train(path, rows=args.rows, trees=args.trees, version=args.version, name=args.name)
    except OSError as exc:
        print(
            f"streamscore train: cannot write the model to {path}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return ExitCode.CONFIGURATION
    print(f"trained {args.name}:{args.version} ({args.trees} trees) -> {path}")
    print(f"held-out AUC: {auc:.4f}")
    return 0


def _output_problem(path: Path) -> str | None:
    """Why the model cannot be written to ``path``; None when it can be tried."""
    if path.suffix.lower() == ".json":
        return (
            f"{path}: the model's metadata goes beside it with the suffix .json; "
            "give the model file another suffix (e.g. model.txt)"
        )
    if path.is_dir():
        return f"{path} is a folder: give the model file's path"
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot create {path}: {folder} is not a folder this user may write to"
    return None


def _cmd_seed(settings: Settings, args: argparse.Namespace) -> int:
    from streamscore_cli.seed import seed

    count = asyncio.run(seed(settings.mongo, args.entities))
    print(f"seeded {count} entities into {settings.mongo.database}.{settings.mongo.collection}")
    return 0


def _cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from streamscore_cli.produce import TopicMissing, produce

    try:
        sent = asyncio.run(
            produce(
                settings.kafka,
                args.count,
                rate=args.rate,
                run_id=args.run_id,
                unknown_ratio=args.unknown_ratio,
                bad_ratio=args.bad_ratio,
                seed=args.seed,
            )
        )
    except TopicMissing as exc:
        print(f"streamscore produce: {exc}", file=sys.stderr)
        return 1
    print(f"sent {sent} events to {settings.kafka.input_topic}")
    return 0


def _cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    workers = args.workers or settings.stream.workers
    if workers > 1:
        from streams.supervisor import Supervisor

        return Supervisor(settings, workers).run()
    from streams.runner import run_scorer

    return asyncio.run(run_scorer(settings))


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    # uvicorn raises SIGTERM/SIGINT again once it has shut down gracefully, with the handlers
    # it found: these make that an exit with code 0, as the scorer's (not 143 or 130). Until
    # uvicorn installs its own, a signal stops the start-up the same way.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    if early_stop.held():
        return 0
    import uvicorn

    from scoring import load_model

    # A model that cannot be loaded is a configuration error (exit 2, one line), as in the
    # scorer, not uvicorn's "application startup failed" (exit 3) with a traceback.
    load_model(settings.model.path, threads=settings.model.threads)
    host = args.host or settings.api.host
    if settings.api.api_key is None and not _loopback(host):
        log.warning(
            "the sidecar listens on %s without an API key: anyone who reaches it may score; "
            "set STREAMSCORE_API__API_KEY (the admin routes are not served without one)",
            host,
            extra={"event": "no_api_key"},
        )
    uvicorn.run(
        "api.main:app_from_environment",
        factory=True,
        host=host,
        port=args.port if args.port is not None else settings.api.port,
        workers=args.workers or settings.api.workers,
        log_config=None,
        access_log=False,
    )
    return 0


def _loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    from streams.audit import audit
    from streams.topics import list_topics

    kafka = settings.kafka
    if kafka.input_topic not in asyncio.run(list_topics(kafka)):
        print(
            f"streamscore audit: the input topic {kafka.input_topic} does not exist on "
            f"{kafka.bootstrap_servers}: nothing to audit (check STREAMSCORE_KAFKA__INPUT_TOPIC)",
            file=sys.stderr,
        )
        return 1
    report = asyncio.run(audit(settings, args.isolation))
    print(report.to_json() if args.json else report.to_text())
    return 0 if report.ok else 1


def _cmd_promote(settings: Settings, args: argparse.Namespace) -> int:
    from scoring.challenger import promote_files
    from scoring.model import check_feature_names

    challenger = settings.challenger.path
    if challenger is None:
        raise ModelLoadError("no challenger: set STREAMSCORE_CHALLENGER__PATH")
    promotion = promote_files(
        settings.model.path,
        challenger,
        threads=settings.model.threads,
        check_demoted=check_feature_names,
    )
    main, shadow = promotion.main, promotion.challenger
    print(f"promoted {main.name}:{main.version} -> {settings.model.path}")
    print(f"challenger is now {shadow.name}:{shadow.version} -> {challenger}")
    print(
        "running scorers and sidecars pick both up within two "
        "STREAMSCORE_MODEL__RELOAD_INTERVAL_S (at once on SIGHUP)"
    )
    return 0


def _cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from streamscore_cli.demo import demo

    return asyncio.run(demo(settings, events=args.events, rate=args.rate))


def _at_least(low: float, kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: ``kind`` of the text, refused (a usage error) below ``low``."""
    return _between(low, None, kind)


def _between(low: float, high: float | None, kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: ``kind`` of the text, refused (a usage error) outside
    ``low``..``high`` (no upper bound when ``high`` is None)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value >= low:  # NaN too
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        if high is not None and not value <= high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {text}")
        return value

    return parse


def _not_blank(text: str) -> str:
    """An argparse type: text with something in it besides spaces."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamscore",
        description="Event-driven streaming scorer: Kafka events in, MongoDB enrichment, "
        "LightGBM scores out. Configuration: STREAMSCORE_* environment variables.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_service_commands(sub)
    _add_operator_commands(sub)
    return parser


def _add_data_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """train, seed, produce: the demo's model, entities and events."""
    p = sub.add_parser("train", help="train the demo LightGBM model on synthetic data")
    p.add_argument("--output", help="model file (default: STREAMSCORE_MODEL__PATH)")
    p.add_argument("--rows", type=_between(100, 10_000_000, int), default=120_000)
    p.add_argument("--trees", type=_at_least(1, int), default=300)
    p.add_argument("--name", type=_not_blank, default="fraud")
    p.add_argument("--version", type=_not_blank, default="1")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("seed", help="write the demo entities' features into MongoDB")
    p.add_argument(
        "--entities", type=_between(1, 10_000_000, int), default=demo_data.DEFAULT_ENTITIES
    )
    p.set_defaults(func=_cmd_seed)

    p = sub.add_parser("produce", help="send synthetic events to the input topic")
    p.add_argument("--count", type=_at_least(1, int), default=10_000)
    p.add_argument(
        "--rate", type=_at_least(0, float), default=0.0, help="events per second (0 = max)"
    )
    p.add_argument("--run-id", default="demo", help="event_id prefix")
    p.add_argument("--unknown-ratio", type=_between(0, 1, float), default=0.05, help="0 to 1")
    p.add_argument("--bad-ratio", type=_between(0, 1, float), default=0.0, help="0 to 1")
    p.add_argument("--seed", type=int, default=11)
    p.set_defaults(func=_cmd_produce)


def _add_service_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """run, api: the scorer and the sidecar."""
    p = sub.add_parser("run", help="run the streaming scorer")
    p.add_argument(
        "--workers",
        type=_at_least(1, int),
        help="scorer processes in one group (STREAMSCORE_STREAM__WORKERS)",
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("api", help="run the HTTP sidecar (uvicorn)")
    p.add_argument("--host", help="default: STREAMSCORE_API__HOST (127.0.0.1)")
    p.add_argument(
        "--port", type=_between(0, 65_535, int), help="default: STREAMSCORE_API__PORT (8000)"
    )
    p.add_argument(
        "--workers", type=_at_least(1, int), help="default: STREAMSCORE_API__WORKERS (1)"
    )
    p.set_defaults(func=_cmd_api)


def _add_operator_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """audit, promote, demo."""
    p = sub.add_parser(
        "audit", help="check the input, prediction and dead-letter topics: lost, duplicated"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--isolation",
        choices=["read_committed", "read_uncommitted"],
        default=None,
        help="how to read the outputs (default: read_committed when "
        "STREAMSCORE_STREAM__DELIVERY=exactly_once, else read_uncommitted)",
    )
    p.set_defaults(func=_cmd_audit)

    p = sub.add_parser(
        "promote",
        help="make the challenger the main model (swap the two models' files; refused when "
        "the challenger's feature names cannot be filled)",
    )
    p.set_defaults(func=_cmd_promote)

    p = sub.add_parser("demo", help="train if needed, seed, score a burst of events, summarise")
    p.add_argument("--events", type=_at_least(1, int), default=10_000)
    p.add_argument("--rate", type=_at_least(0.001, float), default=2_000.0)
    p.set_defaults(func=_cmd_demo)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.func not in (_cmd_run, _cmd_api):
        early_stop.release()  # the other commands end on SIGTERM as any program does
    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"streamscore: invalid configuration:\n{describe_errors(exc)}", file=sys.stderr)
        return ExitCode.CONFIGURATION
    except ValueError as exc:
        print(f"streamscore: invalid configuration:\n{exc}", file=sys.stderr)
        return ExitCode.CONFIGURATION
    logs.configure(settings.log_level)
    for warning in misspelt_variables(os.environ):
        logging.getLogger("settings").warning(warning)
    try:
        code: int = args.func(settings, args)
    except ModelLoadError as exc:
        print(f"streamscore: {exc}", file=sys.stderr)
        return ExitCode.CONFIGURATION
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        reason = _server_unreachable(settings, exc)
        if reason is None:
            raise
        print(f"streamscore {args.command}: {reason}", file=sys.stderr)
        return 1
    return code


def _server_unreachable(settings: Settings, exc: Exception) -> str | None:
    """One line for a Kafka or MongoDB error that reached the command (a server down, refused
    credentials), instead of a traceback; None for anything else. Never the MongoDB URL (it
    may hold a password): PyMongo's messages name hosts only."""
    from aiokafka.errors import KafkaError
    from confluent_kafka import KafkaException
    from pymongo.errors import PyMongoError

    if isinstance(exc, KafkaError | KafkaException):
        return f"cannot use Kafka at {settings.kafka.bootstrap_servers}: {exc!r}"
    if isinstance(exc, PyMongoError):
        first = str(exc).splitlines()[0] if str(exc) else ""
        return f"cannot use MongoDB: {type(exc).__name__}: {first[:300]}"
    return None


if __name__ == "__main__":
    sys.exit(main())
