"""Files that are not YAML settings: binary, not UTF-8, empty, duplicate keys. Each is refused
with a message naming the file (and the line), never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from device.cli import main
from device.config import ConfigError, load_config


def refused(tmp_path, capsys, content: bytes, name: str = "kestrel.yaml") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err
    return str(info.value)


def test_a_binary_file_is_refused(tmp_path, capsys):
    message = refused(tmp_path, capsys, Path(sys.executable).read_bytes()[:4096])
    assert "UTF-8" in message or "not valid YAML" in message


def test_a_file_that_is_not_utf8_is_refused(tmp_path, capsys):
    message = refused(tmp_path, capsys, "device_id: café\n".encode("latin-1"))
    assert "not UTF-8 text" in message and "line 1" in message


@pytest.mark.parametrize("content", [b"", b"\n\n", b"# only a comment\n"])
def test_an_empty_file_is_a_mistake(tmp_path, capsys, content):
    message = refused(tmp_path, capsys, content)
    assert "empty" in message


def test_no_file_at_all_is_still_the_demo():
    config = load_config(None)
    assert config.cameras[0].source == "auto" and config.mqtt.embedded


def test_a_duplicate_key_is_refused_naming_the_key_and_its_line(tmp_path, capsys):
    text = (
        "device_id: barn\n"
        "cameras:\n"
        "  - {name: door, source: demo}\n"
        "mqtt: null\n"
        "cameras:\n"
        "  - {name: yard, source: demo}\n"
    )
    message = refused(tmp_path, capsys, text.encode())
    assert "duplicate key 'cameras'" in message and "line 5" in message and "line 2" in message


def test_a_duplicate_key_inside_a_section_is_refused_too(tmp_path, capsys):
    text = "mqtt:\n  host: a.lan\n  port: 1883\n  host: b.lan\n"
    message = refused(tmp_path, capsys, text.encode())
    assert "duplicate key 'host'" in message and "line 4" in message
