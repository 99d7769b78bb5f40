"""Reading a configuration: YAML, ``${VAR}`` substitution, validation, relative paths.

A config error names the file, the field and what was expected, so the daemon can exit before
touching a camera or a broker.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from device.config.kestrel import KestrelConfig
from device.config.mqtt import MqttConfig
from device.paths import REPO_ROOT

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file and the field."""


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: the
    last one would silently win (``cameras:`` written twice drops the first cameras)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            # Merged keys (``<<: *anchor``) may be overridden; only keys written here count.
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"line {line}: duplicate key {key!r} (first given on line {seen[key]})"
                )
            seen[key] = line
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path) -> Any:
    """The parsed file; ConfigError naming the file for every way it can be unreadable."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
            "a configuration is a UTF-8 YAML file, is this one binary or in another encoding?"
        ) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: not valid YAML ({problem})") from None
    if data is None:
        # No file at all is the zero-setup demo; an empty one is a mistake (a failed copy?).
        raise ConfigError(
            f"{path}: empty (no settings); write at least one, e.g. cameras, or run without "
            "--config for the built-in demo"
        )
    return data


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
        # Zero-setup defaults: the shipped model, a camera or the demo, a mosquitto of its own.
        config = KestrelConfig(mqtt=MqttConfig(embedded=True))
        return _resolve_paths(config, Path.cwd())
    path = Path(path)
    config = parse_config(_read_yaml(path), str(path), env)
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
