"""Configuration: validation messages, env substitution, defaults, the checked-in schema."""

import json

import pytest

from device.cli import main
from device.config import (
    ConfigError,
    KestrelConfig,
    load_config,
    parse_config,
    schema_text,
    substitute_env,
)
from device.paths import SCHEMA_PATH

MINIMAL = """\
device_id: barn
model: models/imagenet-efficientnet-lite0
mqtt: {host: 127.0.0.1, port: 1883}
cameras:
  - name: door
    source: 0          # or /dev/video0, rtsp://..., picamera2, a video file, a folder
"""


def write(tmp_path, text: str, name: str = "kestrel.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_least_a_user_writes(tmp_path, shipped_model):
    config = load_config(write(tmp_path, MINIMAL))
    assert config.device_id == "barn"
    assert config.model == shipped_model  # resolved from the repository
    assert config.cameras[0].source == 0 and config.cameras[0].smoothing.method == "ema"
    assert config.mqtt.qos.state == 1 and config.mqtt.qos.event == 1
    assert not config.mqtt.embedded


def test_no_config_gives_the_zero_setup_defaults(shipped_model):
    config = load_config(None)
    assert config.model == shipped_model
    assert config.mqtt.embedded and config.console
    assert config.cameras[0].source == "auto"
    assert "~" not in str(config.state_dir)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL.replace("port: 1883", "port: 99999"), "mqtt.port: Input should be less than"),
        (MINIMAL + "    fps_max: 3\n", "cameras.0.fps_max: Extra inputs are not permitted"),
        (MINIMAL.replace("name: door", "name: front door"), "cameras.0.name: String should match"),
        (MINIMAL + "    roi: [0.5, 0.5, 0.8, 0.2]\n", "reaches beyond the frame"),
        (MINIMAL + "    smoothing: {enter: 0.3, exit: 0.5}\n", "exit (0.5) must not exceed enter"),
        (MINIMAL.replace("device_id: barn", "device_id: [1, 2]"), "device_id: Input should be"),
        (MINIMAL + "  - name: door\n    source: 1\n", "camera names must be unique"),
        ("cameras: []\n", "cameras: List should have at least 1 item"),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_yaml_syntax_error_gives_the_line(tmp_path):
    path = write(tmp_path, "device_id: barn\ncameras:\n  - name: [door\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+: not valid YAML"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_env_substitution_keeps_secrets_out_of_the_file(tmp_path):
    text = MINIMAL.replace(
        "mqtt: {host: 127.0.0.1, port: 1883}",
        "mqtt: {host: '${BROKER:-localhost}', username: cam, password: '${MQTT_PASSWORD}'}",
    )
    config = load_config(write(tmp_path, text), env={"MQTT_PASSWORD": "s3cret"})
    assert config.mqtt.host == "localhost"
    assert config.mqtt.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config) and "s3cret" not in str(config.model_dump())
    with pytest.raises(ConfigError, match=r"mqtt\.password: environment variable MQTT_PASSWORD"):
        load_config(write(tmp_path, text), env={})


def test_substitute_env_only_touches_strings():
    tree = {"a": "${X}-${Y:-d}", "b": [1, "${X}"], "c": 2.5}
    assert substitute_env(tree, {"X": "x"}) == {"a": "x-d", "b": [1, "x"], "c": 2.5}


def test_non_mapping_is_refused():
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_config(["a", "b"], "list.yaml")


def test_checked_in_schema_is_current():
    assert SCHEMA_PATH.read_text() == schema_text(), (
        "deploy/config.schema.json is stale: regenerate it with "
        "`kestrel config schema > deploy/config.schema.json`"
    )


def test_every_field_is_documented():
    def walk(schema, defs, path):
        for name, prop in schema.get("properties", {}).items():
            if "$ref" in prop or any("$ref" in x for x in prop.get("anyOf", [])):
                continue
            assert prop.get("description"), f"{path}{name} has no description"

    schema = json.loads(schema_text())
    walk(schema, schema["$defs"], "")
    for name, sub in schema["$defs"].items():
        walk(sub, schema["$defs"], f"{name}.")


def test_config_check_command(tmp_path, capsys):
    good = write(tmp_path, MINIMAL)
    assert main(["config", "check", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    bad = write(tmp_path, MINIMAL + "    max_fps: -1\n", "bad.yaml")
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "cameras.0.max_fps" in err


def test_config_schema_command(capsys):
    assert main(["config", "schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "KestrelConfig"


def test_defaults_pass_their_own_validation(shipped_model):
    # pydantic does not validate defaults: validate a dump of them to prove they are valid.
    defaults = KestrelConfig()
    assert KestrelConfig.model_validate(defaults.model_dump()) == defaults
    assert defaults.model == shipped_model and defaults.cameras[0].source == "auto"
    assert defaults.metrics_port is None and defaults.metrics_host == "127.0.0.1"
