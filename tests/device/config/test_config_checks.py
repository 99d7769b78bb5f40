"""What `kestrel config check` and `kestrel run` refuse before starting, naming the file and the
field: models that are not bundles, TLS and password files, state_dir, the broker host, camera
sources; and what `config check` prints (never a password)."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.cli import main

BASE = """\
mqtt: {{host: 127.0.0.1, port: 1{mqtt}}}
state_dir: {state}
cameras:
  - name: door
    source: demo
"""


def write_config(tmp_path: Path, extra: str = "", *, mqtt: str = "", state: str = "") -> Path:
    text = BASE.format(mqtt=mqtt, state=state or tmp_path / "state") + extra
    path = tmp_path / "kestrel.yaml"
    path.write_text(text)
    return path


def not_a_bundle(tmp_path: Path) -> Path:
    folder = tmp_path / "empty-bundle"
    folder.mkdir(exist_ok=True)
    return folder


# Each case: (extra YAML for the camera or the top level, mqtt additions, state_dir,
# the field the message must name, a text the message must hold).
REFUSED = {
    "missing model": lambda t: (f"model: {t / 'nope'}\n", "", "", "model", "not a bundle folder"),
    "model folder that is no bundle": lambda t: (
        f"model: {not_a_bundle(t)}\n",
        "",
        "",
        "model",
        "missing manifest.json",
    ),
    "missing camera model": lambda t: (
        f"    model: {t / 'nope'}\n",
        "",
        "",
        "cameras.0.model",
        "not a bundle folder",
    ),
    "cascade model that is no bundle": lambda t: (
        f"    cascade:\n      - {{name: species, model: {not_a_bundle(t)}, when: [cat]}}\n",
        "",
        "",
        "cameras.0.cascade.0.model",
        "missing manifest.json",
    ),
    "missing TLS ca_file": lambda t: (
        "",
        f", tls: {{enabled: true, ca_file: {t / 'ca.crt'}}}",
        "",
        "mqtt.tls.ca_file",
        "ca.crt",
    ),
    "password without username": lambda t: (
        "",
        ", password: s3cret",
        "",
        "mqtt.password",
        "username",
    ),
    "state_dir that cannot be created": lambda t: (
        "",
        "",
        str(t / "a-file" / "state"),
        "state_dir",
        "a-file",
    ),
}


@pytest.mark.parametrize("command", [["config", "check"], ["run", "--config"]], ids=" ".join)
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_configs_name_the_file_and_the_field(tmp_path, capsys, command, case):
    (tmp_path / "a-file").write_text("not a folder\n")
    extra, mqtt, state, field, text = REFUSED[case](tmp_path)
    path = write_config(tmp_path, extra, mqtt=mqtt, state=state)
    assert main([*command, str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err, err
    assert f"{field}:" in err and text in err, err
    assert "s3cret" not in err


def test_missing_password_file_is_refused_by_run_and_flagged_by_check(tmp_path, capsys):
    """A systemd credential exists only while the service runs: ``config check`` outside the
    service warns (naming the file and field) but passes; ``run`` refuses."""
    secret = tmp_path / "mqtt_password"
    path = write_config(tmp_path, mqtt=f", username: cam, password_file: {secret}")
    assert main(["config", "check", str(path)]) == 0
    err = capsys.readouterr().err
    assert str(path) in err and "mqtt.password_file:" in err and str(secret) in err
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "mqtt.password_file:" in err and str(secret) in err


def test_an_empty_broker_host_is_refused_at_validation(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MQTT_HOST", raising=False)
    path = tmp_path / "kestrel.yaml"
    path.write_text("mqtt:\n  host: ${MQTT_HOST:-}\n")
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "mqtt.host:" in err and "empty" in err


@pytest.mark.parametrize(
    ("source", "hint"),
    [
        ("dmeo", "did you mean demo?"),
        ("foo://x", "unknown scheme foo://"),
        ("rtps://h/s", "did you mean rtsp://"),
    ],
)
def test_unknown_sources_are_refused_with_the_kinds_and_a_hint(tmp_path, capsys, source, hint):
    path = tmp_path / "kestrel.yaml"
    path.write_text(f"mqtt: null\ncameras:\n  - {{name: door, source: '{source}'}}\n")
    for command in (["config", "check"], ["run", "--config"]):
        assert main([*command, str(path)]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and "cameras.0.source:" in err and hint in err, err
        assert "demo" in err and "picamera2" in err and "rtsp://" in err  # the valid kinds


def test_every_kind_of_source_still_passes(tmp_path, capsys, samples_dir):
    video = tmp_path / "door.avi"
    video.write_bytes(b"checked when opened, not here")
    sources = [0, "'2'", "auto", "demo", "picamera2", "/dev/video7", "rtsp://cam.lan/s"]
    sources += ["'http://cam.lan/mjpg'", str(samples_dir), str(video), "door.avi"]
    cameras = "".join(f"  - {{name: c{i}, source: {s}}}\n" for i, s in enumerate(sources))
    path = tmp_path / "kestrel.yaml"
    path.write_text(f"mqtt: null\ncameras:\n{cameras}")
    assert main(["config", "check", str(path)]) == 0, capsys.readouterr().err


def test_config_check_never_prints_a_stream_password(tmp_path, capsys):
    path = tmp_path / "kestrel.yaml"
    path.write_text(
        "mqtt: null\ncameras:\n  - {name: gate, source: 'rtsp://admin:hunter2@10.0.0.1/s'}\n"
    )
    assert main(["config", "check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "hunter2" not in out + err
    assert "gate (rtsp://admin:***@10.0.0.1/s)" in out
