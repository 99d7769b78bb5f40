"""The ``ota`` section: model bundles pushed over MQTT (``kestrel push``), see :mod:`device.ota`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from device.config.section import TOPIC_SAFE, Section

GroupName = Annotated[str, Field(pattern=TOPIC_SAFE)]


class OtaConfig(Section):
    """Model updates over the broker: a bundle pushed to this device (or one of its groups) is
    verified, smoke-tested on the camera's latest frames and swapped in between two frames;
    the previous one is kept for ``kestrel push --rollback``."""

    enabled: bool = Field(
        False,
        description="Take bundles pushed to <topic_prefix>/<device_id>/model/set (needs mqtt). "
        "The active one is kept in state_dir/models and used at start-up over `model`.",
    )
    groups: list[GroupName] = Field(
        default_factory=list,
        description="Groups this device is in: it also takes the bundles pushed to "
        "<topic_prefix>/group/<name>/model/set (kestrel push --group NAME).",
    )
    trusted_keys: list[str] = Field(
        default_factory=list,
        description="Ed25519 public keys (PEM, or the raw 32-byte key in base64). When set, "
        "only bundles signed by one of them (kestrel push --sign KEY) are taken.",
    )
    max_mb: float = Field(
        64.0, gt=0, description="Largest bundle taken, as sent and as unpacked (MiB)."
    )
    smoke_frames: int = Field(
        3, ge=1, le=50, description="Latest camera frames a new model is tried on first."
    )
    latency_factor: float = Field(
        3.0,
        ge=1,
        description="A new model slower than this many times the current one's invoke time "
        "(plus 2 ms) on the smoke-test frames is refused.",
    )
    transfer_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds without a chunk after which a partial transfer is dropped and "
        "reported (chunks missing).",
    )

    @field_validator("groups")
    @classmethod
    def _unique_groups(cls, groups: list[str]) -> list[str]:
        dupes = sorted({g for g in groups if groups.count(g) > 1})
        if dupes:
            raise ValueError(f"groups must be unique, repeated: {dupes}")
        return groups

    @field_validator("trusted_keys")
    @classmethod
    def _keys_load(cls, keys: list[str]) -> list[str]:
        from device.ota.signing import SigningError, load_public_key

        for i, text in enumerate(keys):
            try:
                load_public_key(text)
            except SigningError as exc:
                raise ValueError(f"trusted_keys[{i}]: {exc}") from None
        return keys
