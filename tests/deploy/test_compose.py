"""Structure checks for docker-compose.yml, the Dockerfile and .dockerignore.

No Docker engine runs on our machines, so these tests read the files and check what `docker
compose up` relies on: healthchecks, start order, pinned images, the KRaft broker settings and the
settings names the product reads. They catch a broken stack before a user with Docker does.
"""

from __future__ import annotations

import json
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"

INFRA_SERVICES = ("kafka", "mongo")
APP_SERVICES = ("scorer", "api")
ROOT_USERS = {"root", "0"}


# --- helpers -------------------------------------------------------------------------------


def _image_tag(reference: str) -> str:
    """The tag of an image reference ("" if none): "4.1.1" for "apache/kafka:4.1.1"."""
    name = reference.split("@", 1)[0]
    last_segment = name.rsplit("/", 1)[-1]
    return last_segment.rsplit(":", 1)[1] if ":" in last_segment else ""


def _is_pinned(reference: str) -> bool:
    """A tag that names a version (has a digit) and is not a moving `latest`."""
    tag = _image_tag(reference)
    return bool(tag) and "latest" not in tag and any(ch.isdigit() for ch in tag)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whichever of the two compose syntaxes it uses."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (str(item).split("=", 1) for item in raw)
        return {pair[0]: pair[1] if len(pair) == 2 else "" for pair in pairs}
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw_line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


def _stage_images() -> list[tuple[str, str | None]]:
    """(image, stage name) for every FROM, e.g. ("python:3.11.14-slim-bookworm", "builder")."""
    stages: list[tuple[str, str | None]] = []
    for keyword, arguments in _dockerfile_instructions():
        if keyword != "FROM":
            continue
        words = [word for word in arguments.split() if not word.startswith("--platform")]
        stage = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
        stages.append((words[0], stage))
    return stages


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(compose, dict), "docker-compose.yml must hold a mapping"
    found = compose.get("services")
    assert isinstance(found, dict), "docker-compose.yml has no services mapping"
    return found


# --- docker-compose.yml --------------------------------------------------------------------


def test_compose_defines_the_product_stack(services: dict[str, dict[str, Any]]) -> None:
    missing = {*INFRA_SERVICES, *APP_SERVICES} - services.keys()
    assert not missing, f"docker-compose.yml lacks services: {sorted(missing)}"


@pytest.mark.parametrize("name", ["kafka", "mongo", "api"])
def test_service_has_an_active_healthcheck(services: dict[str, dict[str, Any]], name: str) -> None:
    healthcheck = services[name].get("healthcheck")
    assert isinstance(healthcheck, dict), f"{name} has no healthcheck"
    assert not healthcheck.get("disable", False), f"{name} disables its healthcheck"
    test = healthcheck.get("test")
    assert test, f"{name}'s healthcheck has no test"
    if isinstance(test, list):
        assert test[0] in {"CMD", "CMD-SHELL"}, f"{name}'s healthcheck test starts with {test[0]!r}"
        assert len(test) > 1, f"{name}'s healthcheck test runs nothing"
    # depends_on: service_healthy waits for these: they must be bounded.
    for key in ("interval", "timeout", "retries"):
        assert key in healthcheck, f"{name}'s healthcheck leaves {key} to the engine default"


def test_every_image_is_pinned_to_a_version(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image")
        if image is None:
            assert "build" in service, f"{name} has neither an image nor a build"
            continue
        assert _is_pinned(str(image)), f"{name} uses {image!r}: pin a version tag, not latest"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_builds_and_waits_for_healthy_infra(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    service = services[name]
    assert "build" in service, f"{name} must be built from this repo's Dockerfile"
    depends_on = service.get("depends_on")
    assert isinstance(depends_on, dict), f"{name} must use the long depends_on form"
    for dependency in INFRA_SERVICES:
        condition = (depends_on.get(dependency) or {}).get("condition")
        assert condition == "service_healthy", (
            f"{name} starts before {dependency} is healthy (condition={condition!r})"
        )


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_settings_use_the_streamscore_prefix(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    environment = _environment(services[name])
    assert environment, f"{name} sets no settings"
    foreign = sorted(key for key in environment if not key.startswith("STREAMSCORE_"))
    assert not foreign, f"{name} sets variables the settings tree never reads: {foreign}"
    for key in ("STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS", "STREAMSCORE_MONGO__URL"):
        assert environment.get(key), f"{name} leaves {key} at its localhost default"


def test_kafka_is_a_single_kraft_node_without_topic_auto_creation(
    services: dict[str, dict[str, Any]],
) -> None:
    environment = _environment(services["kafka"])
    roles = {role.strip() for role in environment.get("KAFKA_PROCESS_ROLES", "").split(",")}
    assert roles == {"broker", "controller"}
    assert environment.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "").lower() == "false"
    voter_ids = {
        voter.split("@", 1)[0]
        for voter in environment.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "").split(",")
    }
    assert voter_ids == {environment.get("KAFKA_NODE_ID")}, "the node must be the only voter"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert environment.get(key) == "1", f"{key} must be 1 on a single node"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_reaches_an_advertised_kafka_listener(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    advertised = _environment(services["kafka"]).get("KAFKA_ADVERTISED_LISTENERS", "")
    endpoints = {listener.split("://", 1)[1] for listener in advertised.split(",") if listener}
    bootstrap = _environment(services[name])["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]
    assert bootstrap in endpoints, f"{name} bootstraps from {bootstrap}, not one of {endpoints}"
    assert bootstrap.split(":", 1)[0] == "kafka", "containers must use the in-network listener"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_uses_the_mongo_replica_set(services: dict[str, dict[str, Any]], name: str) -> None:
    mongo = services["mongo"]
    command = mongo.get("command")
    words = command if isinstance(command, list) else shlex.split(str(command or ""))
    assert "--replSet" in words, "mongo must start as a replica set"
    replica_set = words[words.index("--replSet") + 1]
    assert f"_id: '{replica_set}'" in " ".join(mongo["healthcheck"]["test"]), (
        "mongo's healthcheck must initiate the same replica set it was started with"
    )
    url = urlsplit(_environment(services[name])["STREAMSCORE_MONGO__URL"])
    assert url.hostname == "mongo"
    options = parse_qs(url.query)
    assert options.get("replicaSet") == [replica_set] or options.get("directConnection") == [
        "true"
    ], f"{name}'s MongoDB URL names neither the replica set nor a direct connection"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_model_path_is_inside_a_read_only_mount(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    model_path = _environment(services[name]).get("STREAMSCORE_MODEL__PATH", "")
    mounts = [str(volume).split(":") for volume in services[name].get("volumes", [])]
    read_only_targets = [m[1] for m in mounts if len(m) == 3 and "ro" in m[2].split(",")]
    assert any(model_path.startswith(target.rstrip("/") + "/") for target in read_only_targets), (
        f"{name} reads its model from {model_path!r}, outside its read-only mounts"
    )


def test_api_listens_where_it_is_published_and_checked(
    services: dict[str, dict[str, Any]],
) -> None:
    api = services["api"]
    command = [str(word) for word in api["command"]]
    assert command[0] == "api"
    assert command[command.index("--host") + 1] == "0.0.0.0", "127.0.0.1 is unreachable via ports"
    port = command[command.index("--port") + 1]
    published = {str(mapping).rsplit(":", 1)[-1] for mapping in api.get("ports", [])}
    assert port in published, f"the api listens on {port} but publishes {published}"
    assert f"localhost:{port}/healthz" in " ".join(api["healthcheck"]["test"])


def test_scorer_runs_the_stream_command(services: dict[str, dict[str, Any]]) -> None:
    assert services["scorer"].get("command") == ["run"]
    assert services["scorer"].get("restart") == "unless-stopped"


# --- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_base_images_are_pinned() -> None:
    stages = _stage_images()
    assert stages, "the Dockerfile has no FROM"
    stage_names = {stage for _, stage in stages if stage}
    for image, _ in stages:
        if image in stage_names:
            continue
        assert _is_pinned(image), f"FROM {image}: pin a version tag, not latest"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    users = [arguments for keyword, arguments in instructions[last_from:] if keyword == "USER"]
    assert users, "the final stage never leaves root"
    user, _, group = users[-1].partition(":")
    assert user not in ROOT_USERS, f"the image runs as {users[-1]!r}"
    assert group not in ROOT_USERS, f"the image runs in the root group: {users[-1]!r}"


def test_dockerfile_entrypoint_is_the_streamscore_console_script() -> None:
    instructions = dict(_dockerfile_instructions())
    assert "ENTRYPOINT" in instructions, "the image has no ENTRYPOINT"
    entrypoint = json.loads(instructions["ENTRYPOINT"])
    assert entrypoint == ["streamscore"], "exec-form ENTRYPOINT so signals reach the process"
    assert json.loads(instructions.get("CMD", "null")) == ["run"], "default command must be run"
    scripts = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["scripts"]
    assert "streamscore" in scripts, "pyproject.toml no longer declares the streamscore script"


def test_dockerfile_copies_every_packaged_folder() -> None:
    pyproject = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied: set[str] = set()
    for keyword, arguments in _dockerfile_instructions():
        if keyword == "COPY" and not arguments.startswith("--from"):
            copied.update(word.rstrip("/") for word in arguments.split()[:-1])
    missing = sorted(set(packages) - copied)
    assert not missing, f"the image would be built without {missing}"
    assert {"pyproject.toml", "uv.lock"} <= copied, "the image must install from the lock file"


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    missing = {".local", ".venv", ".git", "models", "bench/results"} - patterns
    assert not missing, f".dockerignore lets these into the build context: {sorted(missing)}"


# --- exposure ------------------------------------------------------------------------------


def _host_ip_default(mapping: str) -> str:
    """The host interface a port mapping binds to, with ``${VAR:-default}`` resolved to its
    default ("" when the mapping names no interface, i.e. every interface)."""
    parts = str(mapping).rsplit(":", 2)
    if len(parts) < 3:
        return ""
    host = parts[0]
    if host.startswith("${") and host.endswith("}") and ":-" in host:
        return host[2:-1].split(":-", 1)[1]
    return host


def test_no_port_is_published_on_every_interface_by_default(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        for mapping in service.get("ports", []):
            assert _host_ip_default(str(mapping)) == "127.0.0.1", (
                f"{name} publishes {mapping} beyond loopback by default"
            )


def test_api_interface_is_chosen_by_a_variable(services: dict[str, dict[str, Any]]) -> None:
    (mapping,) = services["api"]["ports"]
    assert str(mapping).startswith("${STREAMSCORE_API_BIND:-127.0.0.1}:")


def test_api_key_is_passed_through_never_set_empty(services: dict[str, dict[str, Any]]) -> None:
    raw = services["api"].get("environment")
    assert isinstance(raw, dict)
    # A key with no value passes the shell's variable through only when it is set; an empty
    # string would be refused by the settings (and must never mean "no authentication").
    assert "STREAMSCORE_API__API_KEY" in raw
    assert raw["STREAMSCORE_API__API_KEY"] is None


def test_prometheus_scrapes_the_api_and_shows_how_with_a_key() -> None:
    path = ROOT / "infra" / "monitoring" / "prometheus.yml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for c in jobs["streamscore-api"]["static_configs"] for t in c["targets"]]
    assert targets == ["api:8000"]
    text = path.read_text(encoding="utf-8")
    assert "type: Bearer" in text
    assert "credentials_file:" in text
