"""The daemon's configuration: one YAML file, validated by pydantic.

Every field is documented (the docs end up in the JSON schema, ``kestrel config schema``).
Unknown keys are refused. ``${VAR}`` / ``${VAR:-default}`` in string values is replaced from
the environment, so secrets stay out of the file. A config error names the file, the field
and what was expected, and the daemon exits before touching a camera or a broker.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from device.inference.preprocess import Roi
from device.paths import DEFAULT_MODEL, REPO_ROOT

_TOPIC_SAFE = r"^[A-Za-z0-9_-]+$"
_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file and the field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Section):
    """TLS to the broker. With only ``ca_file``, the broker is verified; add ``cert_file`` and
    ``key_file`` for client-certificate authentication."""

    enabled: bool = Field(False, description="Connect with TLS (usually port 8883).")
    ca_file: Path | None = Field(None, description="CA certificate that signed the broker's.")
    cert_file: Path | None = Field(None, description="Client certificate (PEM), optional.")
    key_file: Path | None = Field(None, description="Client private key (PEM), optional.")
    insecure: bool = Field(
        False, description="Skip the broker hostname check. Only for testing: it allows MITM."
    )

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: give both or neither")
        return self


class QosConfig(_Section):
    """MQTT quality of service per kind of message (0, 1 or 2)."""

    state: Literal[0, 1, 2] = Field(1, description="Retained debounced state.")
    event: Literal[0, 1, 2] = Field(1, description="start / change / end events.")
    snapshot: Literal[0, 1, 2] = Field(0, description="Retained JPEG of the last transition.")
    stats: Literal[0, 1, 2] = Field(0, description="Periodic statistics.")


class BackoffConfig(_Section):
    """Exponential backoff between attempts (doubling, with jitter)."""

    min_delay: float = Field(1.0, gt=0, description="First delay in seconds.")
    max_delay: float = Field(30.0, gt=0, description="Longest delay in seconds.")

    @model_validator(mode="after")
    def _order(self) -> BackoffConfig:
        if self.max_delay < self.min_delay:
            raise ValueError(f"max_delay ({self.max_delay}) is below min_delay ({self.min_delay})")
        return self


class HomeAssistantConfig(_Section):
    """Home Assistant MQTT discovery: one device per Kestrel, sensors per camera."""

    enabled: bool = Field(True, description="Publish discovery messages.")
    discovery_prefix: str = Field("homeassistant", description="Home Assistant's prefix.")


class MqttConfig(_Section):
    """The MQTT broker and what is published to it. Topics: ``<prefix>/<device_id>/...``."""

    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    embedded: bool = Field(
        False,
        description="Run a small broker inside the daemon (amqtt) on host:port, for a "
        "zero-setup demo. Use a real broker (mosquitto) in production.",
    )
    client_id: str | None = Field(None, description="MQTT client id (default kestrel-<device_id>).")
    username: str | None = Field(None, description="User name, if the broker wants one.")
    password: SecretStr | None = Field(
        None,
        description="Password; write ${MQTT_PASSWORD} to take it from the environment. "
        "Never logged.",
    )
    password_file: Path | None = Field(
        None, description="File whose first line is the password (e.g. a systemd credential)."
    )
    tls: TlsConfig = Field(default_factory=TlsConfig)
    topic_prefix: str = Field("kestrel", description="First topic level.")
    qos: QosConfig = Field(default_factory=QosConfig)
    keepalive: int = Field(30, ge=5, le=3600, description="Keep-alive in seconds.")
    reconnect: BackoffConfig = Field(default_factory=lambda: BackoffConfig(max_delay=60.0))
    queue_max_messages: int = Field(
        10000,
        ge=10,
        description="Bound of the on-disk queue of states and events kept while "
        "the broker is away; the oldest are dropped (and counted) beyond it.",
    )
    stats_interval: float = Field(30.0, gt=0, description="Seconds between stats messages.")
    home_assistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig)

    @model_validator(mode="after")
    def _one_password(self) -> MqttConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        return self


class MotionConfig(_Section):
    """Skip inference while the scene is static; still infer every ``force_interval`` s."""

    enabled: bool = Field(False, description="Gate inference on motion.")
    pixel_delta: int = Field(
        25, ge=1, le=255, description="Gray-level change that counts a pixel as changed."
    )
    min_area: float = Field(
        0.01, gt=0, le=1, description="Fraction of changed pixels that counts as motion."
    )
    force_interval: float = Field(
        10.0, gt=0, description="Seconds after which inference runs even on a static scene."
    )


class SmoothingConfig(_Section):
    """Debouncing of per-frame predictions into a stable state.

    ``ema`` averages scores over time (``alpha`` weight of the newest frame); ``vote`` takes
    the label that won ``votes`` of the last ``window`` frames. A label enters the state when
    its smoothed score reaches ``enter`` and leaves when it falls below ``exit`` (hysteresis).
    """

    method: Literal["ema", "vote"] = Field("ema", description="ema or vote (k-of-n).")
    alpha: float = Field(0.5, gt=0, le=1, description="ema: weight of the newest frame.")
    window: int = Field(5, ge=1, le=100, description="vote: frames considered (n).")
    votes: int = Field(3, ge=1, le=100, description="vote: frames that must agree (k).")
    enter: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Smoothed score to enter a label, relative to the bundle's calibrated "
        "threshold of that label: 0.5 = at the threshold (scores are scaled by 0.5 / threshold; "
        "a bundle without thresholds is judged on its probabilities).",
    )
    exit: float = Field(
        0.35, ge=0, le=1, description="Smoothed score below which it leaves (same scale)."
    )
    min_dwell: float = Field(
        1.0, ge=0, description="Seconds a new state must hold before it is published."
    )
    cooldown: float = Field(
        0.0, ge=0, description="Seconds before the same label may start a new event again."
    )
    include: list[str] = Field(
        default_factory=list, description="Only these labels count (empty: all)."
    )
    exclude: list[str] = Field(default_factory=list, description="Labels that never count.")

    @model_validator(mode="after")
    def _consistent(self) -> SmoothingConfig:
        if self.exit > self.enter:
            raise ValueError(f"exit ({self.exit}) must not exceed enter ({self.enter})")
        if self.votes > self.window:
            raise ValueError(f"votes ({self.votes}) cannot exceed window ({self.window})")
        overlap = set(self.include) & set(self.exclude)
        if overlap:
            raise ValueError(f"labels both included and excluded: {sorted(overlap)}")
        return self


class CascadeConfig(_Section):
    """A second model run on the same frame when the camera's state is one of ``when``
    (e.g. an "insect / no insect" gate, then a species model only when needed)."""

    name: str = Field(pattern=_TOPIC_SAFE, description="Name of this level in the state.")
    model: Path = Field(description="Bundle folder of the second model.")
    when: list[str] = Field(min_length=1, description="Labels of the first level that trigger it.")
    top_k: int = Field(3, ge=1, le=20, description="Scores kept per frame.")
    smoothing: SmoothingConfig = Field(default_factory=SmoothingConfig)


class CameraConfig(_Section):
    """One camera (or stand-in) and how its frames are classified."""

    name: str = Field(pattern=_TOPIC_SAFE, description="Topic-safe name, e.g. door.")
    source: int | str = Field(
        description="0 (USB camera index), /dev/video0, /dev/v4l/by-id/..., rtsp://..., "
        "picamera2, a video file, a folder of images, or demo (the shipped sample photos)."
    )
    loop: bool = Field(False, description="Video files and image folders: start over at the end.")
    width: int | None = Field(None, gt=0, description="Requested capture width (camera default).")
    height: int | None = Field(None, gt=0, description="Requested capture height.")
    source_fps: float | None = Field(
        None,
        gt=0,
        description="Pace files and folders at this rate (default: the file's own "
        "rate for videos, 2 fps for image folders; .inf: as fast as inference takes them). "
        "Live cameras deliver at their own pace.",
    )
    max_fps: float = Field(5.0, gt=0, description="Upper bound on inferences per second.")
    roi: tuple[float, float, float, float] | None = Field(
        None, description="Region of interest [x, y, width, height] as fractions of the frame."
    )
    model: Path | None = Field(None, description="Bundle for this camera (default: the top one).")
    top_k: int = Field(3, ge=1, le=20, description="Scores kept per frame.")
    motion: MotionConfig = Field(default_factory=MotionConfig)
    smoothing: SmoothingConfig = Field(default_factory=SmoothingConfig)
    cascade: list[CascadeConfig] = Field(default_factory=list, description="Second-stage models.")
    reopen: BackoffConfig = Field(default_factory=BackoffConfig)

    @model_validator(mode="after")
    def _roi(self) -> CameraConfig:
        if self.roi is not None:
            x, y, w, h = self.roi
            if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 and 0 < h <= 1):
                raise ValueError(
                    f"roi {list(self.roi)}: x, y in [0, 1) and width, height in (0, 1]"
                )
            if x + w > 1.0001 or y + h > 1.0001:
                raise ValueError(f"roi {list(self.roi)} reaches beyond the frame")
        return self

    @property
    def roi_tuple(self) -> Roi | None:
        return self.roi


class SnapshotConfig(_Section):
    """JPEG of the frame that caused each state transition."""

    enabled: bool = Field(True, description="Save and publish snapshots.")
    directory: Path | None = Field(
        None, description="Where to save (default <state_dir>/snapshots)."
    )
    max_files: int = Field(200, ge=0, description="Oldest snapshots are deleted beyond this.")
    jpeg_quality: int = Field(
        85,
        ge=10,
        le=100,
        description="JPEG quality of snapshots that Kestrel encodes (an MJPEG camera's own JPEG "
        "is used as it is).",
    )


class KestrelConfig(_Section):
    """Kestrel daemon configuration (``kestrel run --config FILE``)."""

    device_id: str = Field("kestrel", pattern=_TOPIC_SAFE, description="Name of this device.")
    model: Path = Field(DEFAULT_MODEL, description="Bundle folder used by every camera.")
    accelerator: Literal["auto", "cpu", "edgetpu"] = Field(
        "auto", description="auto: the Coral Edge TPU when present, else the CPU."
    )
    accelerator_retry: float = Field(
        60.0,
        ge=0,
        description="Seconds between attempts to get back on the Edge TPU while running on the "
        "CPU although it was asked for (auto or edgetpu), e.g. after a USB Coral was unplugged; "
        "0 = never.",
    )
    threads: int | None = Field(None, ge=1, description="Interpreter threads (default: cores).")
    state_dir: Path = Field(
        Path("~/.local/state/kestrel"),
        description="Queue of unsent messages and snapshots (systemd: /var/lib/kestrel).",
    )
    mqtt: MqttConfig | None = Field(
        default_factory=MqttConfig, description="The broker; null to run without MQTT."
    )
    console: bool = Field(True, description="Print state changes on standard output.")
    snapshots: SnapshotConfig = Field(default_factory=SnapshotConfig)
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve Prometheus /metrics on this port (off if null)."
    )
    cameras: Annotated[list[CameraConfig], Field(min_length=1)] = Field(
        default_factory=lambda: [CameraConfig(name="demo", source="auto", loop=True)],
        description="Cameras; source auto picks a USB/Pi camera if present, else the demo.",
    )

    @model_validator(mode="after")
    def _unique_cameras(self) -> KestrelConfig:
        names = [c.name for c in self.cameras]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"camera names must be unique, repeated: {dupes}")
        return self


def substitute_env(value: Any, env: dict[str, str] | None = None, where: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed YAML tree."""
    env = dict(os.environ) if env is None else env
    if isinstance(value, dict):
        return {
            k: substitute_env(v, env, f"{where}.{k}" if where else str(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [substitute_env(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {name} is not set")

    return _ENV_PATTERN.sub(replace, value)


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"  {where}: {err['msg']}{shown}")
    return "\n".join(lines)


def parse_config(
    data: Any, source: str = "<config>", env: dict[str, str] | None = None
) -> KestrelConfig:
    """Validate an already-parsed YAML tree; :class:`ConfigError` names source and field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    try:
        data = substitute_env(data, env)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        return KestrelConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid configuration\n{_describe(exc)}") from None


def load_config(path: str | Path | None, env: dict[str, str] | None = None) -> KestrelConfig:
    """Read and validate a YAML file; ``None`` gives the embedded defaults."""
    if path is None:
        # Zero-setup defaults: the shipped model, a camera or the demo, an in-process broker.
        config = KestrelConfig(mqtt=MqttConfig(embedded=True))
        return _resolve_paths(config, Path.cwd())
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: not valid YAML ({problem})") from None
    config = parse_config(data, str(path), env)
    return _resolve_paths(config, path.parent)


def _resolve_paths(config: KestrelConfig, base: Path) -> KestrelConfig:
    """Relative model paths are taken from the config file's folder, then the repository."""

    def resolve(p: Path) -> Path:
        if p.is_absolute():
            return p
        for root in (base, REPO_ROOT):
            if (root / p).exists():
                return root / p
        return base / p

    def resolve_source(source: int | str) -> int | str:
        # A relative video file or image folder is taken from the config file's folder.
        if isinstance(source, str) and not source.isdigit() and "://" not in source:
            candidate = base / source
            if not Path(source).is_absolute() and candidate.exists():
                return str(candidate)
        return source

    cameras = [
        c.model_copy(
            update={
                "model": resolve(c.model) if c.model else None,
                "source": resolve_source(c.source),
                "cascade": [s.model_copy(update={"model": resolve(s.model)}) for s in c.cascade],
            }
        )
        for c in config.cameras
    ]
    return config.model_copy(
        update={
            "model": resolve(config.model),
            "cameras": cameras,
            "state_dir": config.state_dir.expanduser(),
        }
    )


def config_schema() -> dict[str, Any]:
    """The JSON schema of the configuration file (checked in as deploy/config.schema.json)."""
    schema = KestrelConfig.model_json_schema()
    # The default model path is the machine's; show it relative to the repository instead.
    schema["properties"]["model"]["default"] = "models/imagenet-efficientnet-lite0"
    return schema


def schema_text() -> str:
    return json.dumps(config_schema(), indent=2, sort_keys=True) + "\n"
