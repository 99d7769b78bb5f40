"""The ``mqtt`` section: the broker, credentials, TLS, QoS, reconnect backoff, Home Assistant."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from device.config.section import BackoffConfig, Section


class TlsConfig(Section):
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


class QosConfig(Section):
    """MQTT quality of service per kind of message (0, 1 or 2)."""

    state: Literal[0, 1, 2] = Field(1, description="Retained debounced state.")
    event: Literal[0, 1, 2] = Field(1, description="start / change / end events.")
    snapshot: Literal[0, 1, 2] = Field(0, description="Retained JPEG of the last transition.")
    stats: Literal[0, 1, 2] = Field(0, description="Periodic statistics.")


class HomeAssistantConfig(Section):
    """Home Assistant MQTT discovery: one device per Kestrel, sensors per camera."""

    enabled: bool = Field(True, description="Publish discovery messages.")
    discovery_prefix: str = Field("homeassistant", description="Home Assistant's prefix.")


class MqttConfig(Section):
    """The MQTT broker and what is published to it. Topics: ``<prefix>/<device_id>/...``."""

    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    embedded: bool = Field(
        False,
        description="When no broker listens on host:port, start mosquitto as a child of the "
        "daemon there (loopback only, nothing kept on disk), for a zero-setup demo. Use a "
        "broker of its own (mosquitto as a service) in production.",
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

    @field_validator("host")
    @classmethod
    def _host_given(cls, host: str) -> str:
        # e.g. ${MQTT_HOST:-} left empty: paho would fail at start, under systemd in a loop.
        if not host.strip():
            raise ValueError("empty: give the broker's host name or address")
        return host

    @model_validator(mode="after")
    def _one_password(self) -> MqttConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        return self
