"""The daemon's configuration: one YAML file, validated by pydantic.

The sections live in :mod:`~device.config.mqtt`, :mod:`~device.config.cameras` and
:mod:`~device.config.kestrel` (the whole file); reading a file in :mod:`~device.config.loading`,
the JSON schema in :mod:`~device.config.schema`. Import them from here.

Every field is documented (the docs end up in the JSON schema, ``kestrel config schema``).
Unknown keys are refused. ``${VAR}`` / ``${VAR:-default}`` in string values is replaced from
the environment, so secrets stay out of the file. A config error names the file, the field
and what was expected, and the daemon exits before touching a camera or a broker.
"""

from device.config.cameras import (
    CameraConfig,
    CascadeConfig,
    MotionConfig,
    SmoothingConfig,
    SnapshotConfig,
)
from device.config.collect import COLLECT_REASONS, CollectConfig
from device.config.kestrel import KestrelConfig
from device.config.loading import ConfigError, load_config, parse_config, substitute_env
from device.config.mqtt import (
    HomeAssistantConfig,
    MqttConfig,
    QosConfig,
    TlsConfig,
)
from device.config.ota import OtaConfig
from device.config.schema import config_schema, schema_text
from device.config.section import BackoffConfig
from device.config.web import WebConfig

__all__ = [
    "COLLECT_REASONS",
    "BackoffConfig",
    "CameraConfig",
    "CascadeConfig",
    "CollectConfig",
    "ConfigError",
    "HomeAssistantConfig",
    "KestrelConfig",
    "MotionConfig",
    "MqttConfig",
    "OtaConfig",
    "QosConfig",
    "SmoothingConfig",
    "SnapshotConfig",
    "TlsConfig",
    "WebConfig",
    "config_schema",
    "load_config",
    "parse_config",
    "schema_text",
    "substitute_env",
]
