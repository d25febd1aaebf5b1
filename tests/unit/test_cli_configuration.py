"""A bad setting stops every command before it does anything, naming the environment variable
to fix and never echoing the value given."""

from __future__ import annotations

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
