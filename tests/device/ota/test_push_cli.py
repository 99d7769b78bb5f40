"""``kestrel push`` when it cannot get through: a bad bundle or key, no broker, nobody
answering. Exit 2 before anything is sent, or 3 on timeout, with a message that says why."""

from __future__ import annotations

import pytest
from broker import free_port

from device.cli import main
from device.paths import DEFAULT_MODEL


def test_a_folder_that_is_no_bundle_is_refused_before_the_broker(tmp_path, capsys):
    assert main(["push", str(tmp_path), "--device", "door", "--port", str(free_port())]) == 2
    assert f"{tmp_path}: missing manifest.json" in capsys.readouterr().err


def test_a_signing_key_that_does_not_load_is_refused(tmp_path, capsys):
    key = tmp_path / "ota.key"
    key.write_text("not a key")
    args = ["push", str(DEFAULT_MODEL), "--device", "door", "--sign", str(key)]
    assert main([*args, "--port", str(free_port())]) == 2
    assert "--sign:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--rollback", str(DEFAULT_MODEL)], "push --rollback takes no bundle"),
        ([], "push needs a BUNDLE folder"),
        ([str(DEFAULT_MODEL), "--chunk-kb", "0"], "--chunk-kb must be at least 1"),
    ],
)
def test_usage_errors(args, expected, capsys):
    assert main(["push", *args, "--device", "door"]) == 2
    assert expected in capsys.readouterr().err


def test_no_broker_is_a_clear_error(capsys):
    port = free_port()
    assert main(["push", str(DEFAULT_MODEL), "--device", "door", "--port", str(port)]) == 2
    assert f"cannot connect to the broker at 127.0.0.1:{port}" in capsys.readouterr().err


def test_a_device_that_never_answers_times_out(mosquitto, capsys):
    args = ["push", "--rollback", "--device", "nobody", "--port", str(mosquitto.port)]
    assert main([*args, "--timeout", "1"]) == 3
    err = capsys.readouterr().err
    assert "nobody: no answer within 1 s (never seen on this broker)" in err
