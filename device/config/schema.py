"""The JSON schema of the configuration file (``kestrel config schema``)."""

from __future__ import annotations

import json
from typing import Any

from device.config.kestrel import KestrelConfig


def config_schema() -> dict[str, Any]:
    """The JSON schema of the configuration file (checked in as deploy/config.schema.json)."""
    schema = KestrelConfig.model_json_schema()
    # The default model path is the machine's; show it relative to the repository instead.
    schema["properties"]["model"]["default"] = "models/imagenet-efficientnet-lite0"
    return schema


def schema_text() -> str:
    """The schema as deploy/config.schema.json holds it: indented, sorted keys."""
    return json.dumps(config_schema(), indent=2, sort_keys=True) + "\n"
