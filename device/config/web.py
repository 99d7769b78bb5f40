"""The ``web`` section: the daemon's own page (live MJPEG, state, events, health, metrics)."""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr, field_validator, model_validator

from device.config.section import Section

MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


class WebConfig(Section):
    """The device's web page, served by the daemon itself. Off unless enabled; it listens on
    this machine only unless ``host`` says otherwise, and then a ``token`` is required."""

    enabled: bool = Field(False, description="Serve the page, /api, /healthz and /metrics.")
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Address to listen on: 127.0.0.1 (this machine only), or e.g. 0.0.0.0 for "
        "the network, which requires a token.",
    )
    port: int = Field(8080, ge=1, le=65535, description="TCP port of the page.")
    token: SecretStr | None = Field(
        None,
        description="Access token: write ${KESTREL_WEB_TOKEN} to take it from the environment "
        f"(at least {MIN_TOKEN_LENGTH} characters, e.g. `openssl rand -hex 16`). When set, every "
        "request needs `Authorization: Bearer <token>` or `?token=<token>`. Never logged.",
    )
    stream_fps: float = Field(
        5.0, gt=0, le=30, description="Highest frame rate of a camera's MJPEG stream."
    )
    stream_width: int = Field(
        640, ge=64, le=4096, description="Wider frames are scaled down to this for the stream."
    )
    jpeg_quality: int = Field(70, ge=10, le=100, description="JPEG quality of the stream.")
    events: int = Field(
        50, ge=1, le=1000, description="Last events (with their snapshots) kept for the page."
    )
    health_grace: float = Field(
        10.0,
        ge=0,
        description="Seconds beyond a camera's longest reopen delay (cameras.*.reopen.max_delay) "
        "it may go without frames before /healthz answers 503.",
    )

    @field_validator("token")
    @classmethod
    def _empty_token(cls, token: SecretStr | None) -> SecretStr | None:
        if token is None or not token.get_secret_value().strip():
            return None  # ${KESTREL_WEB_TOKEN:-} left empty: no token
        return token

    @model_validator(mode="after")
    def _token_rules(self) -> WebConfig:
        # Checked here, not in a field validator: a field's error would show the token itself.
        if self.token is not None and len(self.token.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"web.token: at least {MIN_TOKEN_LENGTH} characters (`openssl rand -hex 16`)"
            )
        if self.enabled and self.token is None and not is_loopback(self.host):
            raise ValueError(
                f"web.token is required when web.host ({self.host}) is not a loopback address: "
                "the page shows the cameras to anyone who can reach it (set web.token: "
                "${KESTREL_WEB_TOKEN}, or host: 127.0.0.1)"
            )
        return self
