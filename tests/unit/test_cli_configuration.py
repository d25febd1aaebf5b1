"""A bad setting stops every command before it does anything, naming the environment variable
to fix and never echoing the value given."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.exit_codes import ExitCode
from streamscore_cli.main import main


def test_invalid_settings_name_their_variables_not_their_values(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMSCORE_STREAM__MAX_BATCH_SIZE", "-3")
    monkeypatch.setenv("STREAMSCORE_KAFKA__CLIENT", "s3cret-looking-value")
    assert main(["audit"]) == ExitCode.CONFIGURATION
    err = capsys.readouterr().err
    assert "STREAMSCORE_STREAM__MAX_BATCH_SIZE: Input should be greater than or equal to 1" in err
    assert "STREAMSCORE_KAFKA__CLIENT: Input should be 'aiokafka' or 'confluent'" in err
    assert "s3cret-looking-value" not in err
    assert "-3" not in err


@pytest.mark.parametrize(
    ("model", "metadata", "says"),
    [
        ("garbage", '{"name": "m", "version": "1"}', "not a LightGBM text model"),
        ("tree\nversion=v4\n", '{"name": "m", "version": "1"}', "incomplete"),
        (None, '{"name": "m", "version": "1"}', "model file not found"),
    ],
    ids=["not a model", "cut short", "missing"],
)
def test_the_sidecar_refuses_a_model_it_cannot_load_with_exit_code_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    model: str | None,
    metadata: str,
    says: str,
) -> None:
    path = tmp_path / "model.txt"
    if model is not None:
        path.write_text(model)
    (tmp_path / "model.json").write_text(metadata)
    monkeypatch.setenv("STREAMSCORE_MODEL__PATH", str(path))
    assert main(["api", "--port", "1"]) == ExitCode.CONFIGURATION  # before serving anything
    assert says in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "variable", "value", "says"),
    [
        (
            ["produce", "--count", "1"],
            "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS",
            "127.0.0.1:1",
            "cannot use Kafka at 127.0.0.1:1",
        ),
        (
            ["audit"],
            "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS",
            "127.0.0.1:1",
            "cannot use Kafka at 127.0.0.1:1",
        ),
        (
            ["seed", "--entities", "1"],
            "STREAMSCORE_MONGO__URL",
            "mongodb://admin:pw-never-shown@127.0.0.1:1/",
            "cannot use MongoDB",
        ),
    ],
)
def test_a_server_that_is_down_is_one_line_and_exit_1_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    variable: str,
    value: str,
    says: str,
) -> None:
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("STREAMSCORE_MONGO__SERVER_SELECTION_TIMEOUT_MS", "200")
    monkeypatch.setenv("STREAMSCORE_MONGO__OPERATION_TIMEOUT_MS", "500")
    assert main(command) == 1
    _collect_client_sockets()
    err = capsys.readouterr().err
    assert f"streamscore {command[0]}: {says}" in err
    assert "Traceback" not in err
    assert "pw-never-shown" not in err


def test_the_demos_metrics_hint_follows_the_settings() -> None:
    from settings import load_settings
    from streamscore_cli.demo import _metrics_hint

    assert "http://127.0.0.1:9464/metrics" in _metrics_hint(load_settings())
    assert "http://10.0.0.5:9500/metrics" in _metrics_hint(
        load_settings(stream={"metrics_host": "10.0.0.5", "metrics_port": 9500})
    )
    assert "http://127.0.0.1:9464/" in _metrics_hint(
        load_settings(stream={"metrics_host": "0.0.0.0"})
    )
    assert _metrics_hint(load_settings(stream={"metrics_port": ""})).startswith("off")


def _collect_client_sockets() -> None:
    """A Kafka or MongoDB client whose connection was refused may leave its socket to the
    garbage collector (the command's process ends there anyway): collect it here, not in
    whichever test runs next, where pytest would report it as that test's error."""
    import gc
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:99999"),
        ("STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS", "[::1]:0"),
        ("STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS", " , "),
        ("STREAMSCORE_KAFKA__GROUP_ID", ""),
        ("STREAMSCORE_MONGO__OPERATION_TIMEOUT_MS", "1000000000"),
        ("STREAMSCORE_STREAM__METRICS_HOST", ""),
    ],
)
def test_settings_the_clients_would_trip_on_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["audit"]) == ExitCode.CONFIGURATION
    assert variable in capsys.readouterr().err


@pytest.mark.parametrize(
    "servers", ["localhost", "k1:9092, k2:9093", "[::1]:9092", "h:65535", "a:9092,", "SSL://h:9093"]
)
def test_bootstrap_servers_without_a_port_or_with_several_hosts_are_accepted(
    monkeypatch: pytest.MonkeyPatch, servers: str
) -> None:
    from settings import load_settings

    monkeypatch.setenv("STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS", servers)
    assert load_settings().kafka.bootstrap_servers == servers


@pytest.mark.parametrize(
    "argv",
    [
        ["api", "--port", "99999"],
        ["api", "--port", "-1"],
        ["produce", "--bad-ratio", "5"],
        ["produce", "--unknown-ratio", "nan"],
        ["produce", "--unknown-ratio", "-0.1"],
        ["train", "--name", " "],
        ["train", "--version", ""],
        ["train", "--rows", "1000000000000"],
    ],
)
def test_out_of_range_arguments_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2


@pytest.mark.parametrize(
    ("output", "says"),
    [("model.json", "suffix .json"), (".", "is a folder")],
)
def test_train_refuses_an_output_it_would_spoil(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    output: str,
    says: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--output", output, "--rows", "100", "--trees", "1"]) == 2
    assert says in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("scorer.internal", False),
    ],
)
def test_hosts_other_than_loopback_are_told_apart(host: str, loopback: bool) -> None:
    from streamscore_cli.main import _loopback

    assert _loopback(host) is loopback
