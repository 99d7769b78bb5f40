"""deploy/: example configs, the Pi installer, the systemd unit, pip constraints, mosquitto.

Nothing here is taken on trust: the examples go through the daemon's own config loader and
their bundles through the bundle validator; the unit file through ``systemd-analyze verify``
when systemd is installed; the mosquitto configuration is started with certificates made by
the same script the README tells users to run, and real TLS clients log in to it.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml

from device.config import KestrelConfig, load_config
from device.inference.bundle import load_bundle
from device.paths import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
EXAMPLES = sorted((DEPLOY / "examples").glob("*.yaml"))
INSTALLER = DEPLOY / "install-pi.sh"
UNIT = DEPLOY / "kestrel.service"
CONSTRAINTS = DEPLOY / "constraints-pi.txt"
MOSQUITTO = DEPLOY / "mosquitto"

# Bundles that examples name but that users train themselves. Only these may be missing.
PLACEHOLDER_BUNDLES = {
    "models/door-person": "door-security.yaml",
    "models/pest-species": "pest-trap.yaml",
}
EXAMPLE_ENV = {"MQTT_PASSWORD": "not-a-real-secret"}


# --- example configurations -----------------------------------------------------------------


def _written_models(raw: dict) -> list[tuple[str, str]]:
    """(where, path as written) for every bundle an example names."""
    found = [("model", raw["model"])] if "model" in raw else []
    for i, camera in enumerate(raw.get("cameras", [])):
        if "model" in camera:
            found.append((f"cameras[{i}].model", camera["model"]))
        for j, stage in enumerate(camera.get("cascade", [])):
            found.append((f"cameras[{i}].cascade[{j}].model", stage["model"]))
    return found


def _known_labels(bundle_dir: Path) -> set[str]:
    """Labels a bundle can answer: its labels, and every taxonomy node when hierarchical."""
    manifest = load_bundle(bundle_dir).manifest
    return set(manifest.labels) | set(manifest.taxonomy or {})


def test_the_three_examples_are_there():
    assert {p.name for p in EXAMPLES} >= {"minimal.yaml", "door-security.yaml", "pest-trap.yaml"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_and_its_bundles_exist(example: Path):
    config = load_config(example, env=EXAMPLE_ENV)
    assert isinstance(config, KestrelConfig)
    raw = yaml.safe_load(example.read_text())
    text = example.read_text()

    resolved = {"model": config.model}
    for i, camera in enumerate(config.cameras):
        if camera.model is not None:
            resolved[f"cameras[{i}].model"] = camera.model
        for j, stage in enumerate(camera.cascade):
            resolved[f"cameras[{i}].cascade[{j}].model"] = stage.model

    placeholders = set()
    for where, written in _written_models(raw):
        path = resolved[where]
        if written in PLACEHOLDER_BUNDLES:
            assert PLACEHOLDER_BUNDLES[written] == example.name, f"{written} in {example.name}"
            assert not path.exists(), f"{written} exists now: drop it from PLACEHOLDER_BUNDLES"
            assert "PLACEHOLDER" in text, f"{example.name} must say that {written} is one"
            placeholders.add(written)
        else:
            load_bundle(path)  # raises BundleError naming the file and field

    # Labels the smoothing and cascades name must be labels the model can answer.
    for camera in config.cameras:
        main = camera.model or config.model
        main_written = next((w for k, w in _written_models(raw) if resolved[k] == main), str(main))
        if main_written not in PLACEHOLDER_BUNDLES:
            known = _known_labels(main)
            named = set(camera.smoothing.include) | set(camera.smoothing.exclude)
            for stage in camera.cascade:
                named |= set(stage.when)
            assert named <= known, f"{example.name}: unknown labels {sorted(named - known)}"
    assert placeholders == {k for k, v in PLACEHOLDER_BUNDLES.items() if v == example.name}


def test_minimal_example_is_the_least_a_user_writes(shipped_model):
    raw = yaml.safe_load((DEPLOY / "examples" / "minimal.yaml").read_text())
    assert set(raw) == {"device_id", "model", "mqtt", "cameras"}
    config = load_config(DEPLOY / "examples" / "minimal.yaml", env={})
    assert config.model == shipped_model
    assert config.cameras[0].source == 0


def test_door_example_keeps_its_secret_in_the_environment():
    example = DEPLOY / "examples" / "door-security.yaml"
    assert "${MQTT_PASSWORD}" in example.read_text()
    config = load_config(example, env=EXAMPLE_ENV)
    assert config.mqtt.password.get_secret_value() == EXAMPLE_ENV["MQTT_PASSWORD"]
    assert config.mqtt.tls.enabled and config.mqtt.port == 8883
    assert config.mqtt.home_assistant.enabled and config.snapshots.enabled
    smoothing = config.cameras[0].smoothing
    assert smoothing.method == "vote" and smoothing.min_dwell > 0 and smoothing.cooldown > 0


def test_systemd_credential_snippet_of_the_readme(tmp_path):
    # deploy/README.md: password_file from LoadCredential, with a default for `config check`.
    line = "password_file: ${CREDENTIALS_DIRECTORY:-/run/credentials/kestrel.service}/mqtt_password"
    assert line in (DEPLOY / "README.md").read_text()
    snippet = f"mqtt:\n  {line}\n"
    path = tmp_path / "kestrel.yaml"
    path.write_text(snippet)
    under_systemd = load_config(path, env={"CREDENTIALS_DIRECTORY": "/run/credentials/x"})
    assert under_systemd.mqtt.password_file == Path("/run/credentials/x/mqtt_password")
    outside = load_config(path, env={})
    assert outside.mqtt.password_file == Path("/run/credentials/kestrel.service/mqtt_password")


def test_pest_example_gates_on_motion_in_a_roi():
    config = load_config(DEPLOY / "examples" / "pest-trap.yaml", env={})
    camera = config.cameras[0]
    assert camera.roi is not None and camera.motion.enabled
    assert camera.motion.force_interval > 0 and camera.max_fps <= 1
    assert {"insect", "arachnid"} <= set(camera.smoothing.include)
    assert camera.cascade and "insect" in camera.cascade[0].when


# --- the installer --------------------------------------------------------------------------


def _installer_paths() -> dict[str, str]:
    out = subprocess.run(
        ["bash", str(INSTALLER), "--print-paths"], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def test_install_script_parses_and_says_what_it_installs():
    subprocess.run(["bash", "-n", str(INSTALLER)], check=True)
    paths = _installer_paths()
    assert paths["venv"] == paths["prefix"] + "/.venv"
    assert paths["kestrel"] == paths["venv"] + "/bin/kestrel"
    assert paths["config"] == "/etc/kestrel/kestrel.yaml"
    bad = subprocess.run(["bash", str(INSTALLER), "--bogus"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown option: --bogus" in bad.stderr
    text = INSTALLER.read_text()
    assert "--system-site-packages" in text and "constraints-pi.txt" in text
    assert "import picamera2" in text and "ai_edge_litert.interpreter import Interpreter" in text


@pytest.mark.parametrize("script", [INSTALLER, MOSQUITTO / "make-certs.sh"], ids=lambda p: p.name)
def test_shell_scripts_pass_shellcheck(script: Path):
    subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt install shellcheck)")
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# --- the systemd unit ------------------------------------------------------------------------


def _parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's INI dialect: repeated keys accumulate (configparser would refuse them)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line}"
        assert "=" in line and not line.endswith("\\"), f"unexpected line: {line}"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_unit_file_settings():
    unit = _parse_unit(UNIT.read_text())
    service = {k: v[-1] for k, v in unit["Service"].items()}
    paths = _installer_paths()
    assert service["Type"] == "notify"
    assert 10 <= int(service["WatchdogSec"]) <= 120
    assert service["Restart"] == "on-failure" and float(service["RestartSec"]) > 0
    assert "StartLimitBurst" in unit["Unit"] and "StartLimitIntervalSec" in unit["Unit"]
    assert int(service["TimeoutStopSec"]) >= 2  # the daemon exits within 2 s of SIGTERM
    assert service["User"] == paths["user"] == "kestrel"
    assert service["ExecStart"] == f"{paths['kestrel']} run --config {paths['config']}"
    assert "/var/lib/" + service["StateDirectory"] == paths["state_dir"]
    assert "/etc/" + service["ConfigurationDirectory"] == str(Path(paths["config"]).parent)
    assert service["EnvironmentFile"] == "-/etc/kestrel/kestrel.env"
    assert "#LoadCredential=mqtt_password:" in UNIT.read_text()  # documented alternative
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["ProtectHome"] == "yes" and service["PrivateTmp"] == "yes"
    # Settings that would hide or block the cameras must stay off.
    assert "PrivateDevices" not in service and "DevicePolicy" not in service
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_file_passes_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart exists: point it at an executable that does here.
    unit = tmp_path / "kestrel.service"
    unit.write_text(UNIT.read_text().replace(_installer_paths()["kestrel"], "/bin/true"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    about_unit = [line for line in result.stderr.splitlines() if str(unit) in line]
    assert result.returncode == 0 and not about_unit, result.stderr


# --- pip constraints for Raspberry Pi OS ------------------------------------------------------


def _requirement(text: str):
    try:
        from packaging.requirements import Requirement
    except ImportError:  # the Pi-profile venv has no packaging; pip carries a copy
        from pip._vendor.packaging.requirements import Requirement
    return Requirement(text)


def _constraints() -> dict[str, object]:
    lines = [line.split("#")[0].strip() for line in CONSTRAINTS.read_text().splitlines()]
    reqs = [_requirement(line) for line in lines if line]
    return {r.name.lower(): r.specifier for r in reqs}


def test_pi_constraints_keep_numpy_1_and_opencv_4_11():
    pins = _constraints()
    assert pins["numpy"].contains("1.26.4") and not pins["numpy"].contains("2.0.0")
    opencv = pins["opencv-python-headless"]
    assert opencv.contains("4.11.0.86") and not opencv.contains("4.12.0.88")
    # The constraints must leave the project's own requirements satisfiable.
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    for dependency in project["dependencies"]:
        req = _requirement(dependency)
        name = req.name.lower()
        if name in pins:
            good = {"numpy": "1.26.4", "opencv-python-headless": "4.11.0.86"}[name]
            assert req.specifier.contains(good) and pins[name].contains(good), dependency


def test_this_environment_matches_the_pi_constraints_when_it_runs_numpy_1():
    if int(version("numpy").split(".")[0]) >= 2:
        pytest.skip("numpy 2 here: the Pi profile is checked in the numpy 1.x test venv")
    pins = _constraints()
    for name, specifier in pins.items():
        assert specifier.contains(version(name)), f"{name} {version(name)} vs {specifier}"


# --- mosquitto ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mosquitto exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"mosquitto did not listen on {port}:\n{log.read_text()}")


@pytest.fixture
def certs(tmp_path) -> Path:
    """A CA and a server certificate for broker.test, made by deploy/mosquitto/make-certs.sh."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (apt install openssl)")
    folder = tmp_path / "certs"
    subprocess.run(
        ["bash", str(MOSQUITTO / "make-certs.sh"), str(folder), "broker.test"],
        check=True,
        capture_output=True,
    )
    return folder


@pytest.fixture
def broker(tmp_path, certs) -> Iterator[dict]:
    """deploy/mosquitto/kestrel.conf with its paths moved into tmp_path, running."""
    for tool in ("mosquitto", "mosquitto_passwd"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt install mosquitto)")
    users = {"kestrel": "kestrel-pw", "homeassistant": "ha-pw", "dashboard": "dash-pw"}
    passwd = tmp_path / "passwd"
    for i, (user, password) in enumerate(users.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(["mosquitto_passwd", *create, "-b", str(passwd), user, password], check=True)
    shutil.copy(MOSQUITTO / "acl.example", tmp_path / "acl")

    tls_port, plain_port = _free_port(), _free_port()
    conf = (MOSQUITTO / "kestrel.conf").read_text()
    for old, new in [
        ("/etc/mosquitto/certs", str(certs)),
        ("/etc/mosquitto/passwd", str(passwd)),
        ("/etc/mosquitto/acl", str(tmp_path / "acl")),
        ("listener 8883\n", f"listener {tls_port} 127.0.0.1\n"),
        ("listener 1883 127.0.0.1\n", f"listener {plain_port} 127.0.0.1\n"),
    ]:
        assert old in conf, f"kestrel.conf no longer has {old!r}"
        conf = conf.replace(old, new)
    if os.geteuid() == 0:
        # As root, mosquitto drops to user "mosquitto", which cannot read pytest's 0700 tmp.
        conf += "user root\n"
    (tmp_path / "mosquitto.conf").write_text(conf)
    log = tmp_path / "mosquitto.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["mosquitto", "-c", str(tmp_path / "mosquitto.conf")],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        _wait_for_port(tls_port, proc, log)
        _wait_for_port(plain_port, proc, log)
        yield {"tls": tls_port, "plain": plain_port, "ca": certs / "ca.crt", "users": users}
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Client:
    """A paho client that connects synchronously and records what it receives."""

    def __init__(self, port: int, user: str | None, password: str | None, ca: Path | None):
        self.connected = threading.Event()
        self.reason: mqtt.ReasonCode | None = None
        self.messages: list[tuple[str, bytes]] = []
        self.got = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}"
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        if ca is not None:
            context = ssl.create_default_context(cafile=str(ca))
            # Python 3.13's default strictness, whatever Python runs the test.
            context.verify_flags |= ssl.VERIFY_X509_STRICT
            self.client.tls_set_context(context)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.port = port

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.reason = reason_code
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        # A TLS listener answers plain MQTT by closing the connection: no CONNACK at all.
        if not self.connected.is_set():
            self.reason = reason_code
            self.connected.set()

    def _on_message(self, client, userdata, message):
        self.messages.append((message.topic, message.payload))
        self.got.set()

    def connect(self) -> bool:
        """True when the broker accepted us; False when it refused or TLS failed."""
        try:
            self.client.connect("127.0.0.1", self.port, keepalive=10)
        except (ssl.SSLError, OSError):
            return False
        self.client.loop_start()
        ok = self.connected.wait(5) and self.reason is not None and not self.reason.is_failure
        if not ok:
            self.close()
        return ok

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _retained(broker: dict, topic: str) -> bytes | None:
    reader = _Client(broker["tls"], "homeassistant", broker["users"]["homeassistant"], broker["ca"])
    assert reader.connect()
    try:
        reader.client.subscribe(topic, qos=1)
        reader.got.wait(2)
        return reader.messages[0][1] if reader.messages else None
    finally:
        reader.close()


def test_mosquitto_example_config_serves_tls_with_passwords_and_acl(broker):
    users = broker["users"]
    kestrel = _Client(broker["tls"], "kestrel", users["kestrel"], broker["ca"])
    assert kestrel.connect(), "kestrel could not log in over TLS"
    try:
        info = kestrel.client.publish("kestrel/barn/available", b"online", qos=1, retain=True)
        info.wait_for_publish(5)
    finally:
        kestrel.close()
    # Home Assistant reads it over TLS.
    assert _retained(broker, "kestrel/barn/available") == b"online"

    # The ACL: a read-only dashboard account cannot overwrite it (the broker acks and drops).
    dashboard = _Client(broker["tls"], "dashboard", users["dashboard"], broker["ca"])
    assert dashboard.connect()
    try:
        info = dashboard.client.publish("kestrel/barn/available", b"spoofed", qos=1, retain=True)
        info.wait_for_publish(5)
    finally:
        dashboard.close()
    assert _retained(broker, "kestrel/barn/available") == b"online"

    # Refused: a wrong password, no password on the local listener, plain MQTT on the TLS port.
    assert not _Client(broker["tls"], "kestrel", "wrong", broker["ca"]).connect()
    assert not _Client(broker["plain"], None, None, None).connect()
    assert not _Client(broker["tls"], "kestrel", users["kestrel"], None).connect()
    # The local listener takes the same accounts without TLS.
    local = _Client(broker["plain"], "kestrel", users["kestrel"], None)
    assert local.connect()
    local.close()


def test_server_certificate_names_the_broker(certs):
    # make-certs.sh put the host name given to it into subjectAltName, next to localhost.
    ca, server_crt = certs / "ca.crt", certs / "server.crt"
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(server_crt)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:broker.test" in text and "IP Address:127.0.0.1" in text
    # Running it again renews the server certificate under the same CA.
    ca_before = ca.read_bytes()
    subprocess.run(
        ["bash", str(MOSQUITTO / "make-certs.sh"), str(certs), "other.test"],
        check=True,
        capture_output=True,
    )
    assert ca.read_bytes() == ca_before
    assert (
        "DNS:other.test"
        in subprocess.run(
            ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(server_crt)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", str(ca), str(server_crt)],
        check=True,
        capture_output=True,
    )
