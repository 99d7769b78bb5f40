"""The whole configuration file: :class:`KestrelConfig`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from device.config.cameras import CameraConfig, SnapshotConfig
from device.config.mqtt import MqttConfig
from device.config.ota import OtaConfig
from device.config.section import TOPIC_SAFE, Section
from device.config.web import WebConfig
from device.inference.runtime import EDGETPU_DEVICE_PATTERN
from device.paths import DEFAULT_MODEL


class KestrelConfig(Section):
    """Kestrel daemon configuration (``kestrel run --config FILE``)."""

    device_id: str = Field("kestrel", pattern=TOPIC_SAFE, description="Name of this device.")
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
    accelerator_device: str | None = Field(
        None,
        pattern=EDGETPU_DEVICE_PATTERN,
        description="Which Coral (pycoral's device string): ':0' (the first), 'usb', 'usb:1', "
        "'pci', 'pci:0'; null = the first found.",
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
    metrics_host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Address /metrics listens on: 127.0.0.1 (this machine only; it has no "
        "authentication) or e.g. 0.0.0.0 for a Prometheus elsewhere.",
    )
    web: WebConfig = Field(default_factory=WebConfig)
    ota: OtaConfig = Field(default_factory=OtaConfig)
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
