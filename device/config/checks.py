"""What the YAML alone cannot tell: the files, folders and sources a configuration names.

``kestrel config check`` and ``kestrel run`` call :func:`check_config` after loading, so that a
model folder that is not a bundle, a missing TLS file, a password without a user name, a
``state_dir`` that cannot exist or a misspelt camera source is refused naming the config file
and the field, before any camera or broker is touched. Some things exist only once the service
runs (a systemd credential as ``password_file``, ``StateDirectory=``): ``config check`` warns
about those and ``run`` refuses them.

Not imported by :mod:`device.config` itself: it uses :mod:`device.capture`, which imports the
config models.
"""

from __future__ import annotations

import os
from pathlib import Path

from device.capture.registry import source_problem
from device.config.collect import CollectConfig
from device.config.kestrel import KestrelConfig
from device.config.loading import ConfigError
from device.config.mqtt import MqttConfig
from device.inference.bundle import BundleError, load_bundle

Problems = list[tuple[str, str]]  # (field, what is wrong)


def check_config(config: KestrelConfig, source: str, *, running: bool) -> list[str]:
    """Raise :class:`ConfigError` naming ``source`` and every field that cannot work; return
    warnings (``running=False``, i.e. ``config check``: what only the service can provide).

    With ``running`` (``kestrel run``), what only the service provides is an error too.
    """
    errors: Problems = []
    warnings: Problems = []
    _check_models(config, errors)
    for i, camera in enumerate(config.cameras):
        problem = source_problem(camera.source)
        if problem:
            errors.append((f"cameras.{i}.source", problem))
        _check_collect(camera.collect, f"cameras.{i}.collect.directory", warnings)
    if config.mqtt is not None:
        _check_mqtt(config.mqtt, errors, warnings if not running else errors, running=running)
    _check_state_dir(config.state_dir, errors, warnings, running=running)
    if config.ota.enabled and config.mqtt is None:
        errors.append(("ota.enabled", "updates come through the broker, but mqtt is null"))
    if errors:
        lines = "\n".join(f"  {field}: {problem}" for field, problem in errors)
        raise ConfigError(f"{source}: invalid configuration\n{lines}")
    return [f"{source}: {field}: {problem}" for field, problem in warnings]


def _check_models(config: KestrelConfig, errors: Problems) -> None:
    models = {"model": config.model}
    for i, camera in enumerate(config.cameras):
        if camera.model is not None:
            models[f"cameras.{i}.model"] = camera.model
        for j, stage in enumerate(camera.cascade):
            models[f"cameras.{i}.cascade.{j}.model"] = stage.model
    verdicts: dict[Path, str | None] = {}  # a bundle used twice is read once
    for field, path in models.items():
        if path not in verdicts:
            try:
                load_bundle(path)
                verdicts[path] = None
            except BundleError as exc:
                verdicts[path] = str(exc)
        if verdicts[path]:
            errors.append((field, verdicts[path]))


def _check_mqtt(mqtt: MqttConfig, errors: Problems, later: Problems, *, running: bool) -> None:
    """``later``: where a password file that cannot be read now goes (a systemd credential
    exists only while the service runs)."""
    if (mqtt.password is not None or mqtt.password_file is not None) and not mqtt.username:
        field = "mqtt.password" if mqtt.password is not None else "mqtt.password_file"
        errors.append((field, "needs mqtt.username (MQTT 3.1.1 sends no password without one)"))
    if mqtt.password_file is not None:
        path = mqtt.password_file.expanduser()
        try:
            with path.open(encoding="utf-8") as f:
                f.readline()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            note = "" if running else " (fine if the service gets it, e.g. a systemd credential)"
            later.append(("mqtt.password_file", f"{path}: cannot read ({why}){note}"))
    if mqtt.tls.enabled:
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(mqtt.tls, name)
            if path is not None and not path.expanduser().is_file():
                what = "not a file" if path.expanduser().exists() else "no such file"
                errors.append((f"mqtt.tls.{name}", f"{path}: {what}"))


def _nearest_existing(path: Path) -> Path:
    """``path`` or the closest ancestor of it that exists (what creating it would start from)."""
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    return existing


def _check_collect(collect: CollectConfig, field: str, warnings: Problems) -> None:
    """Never refused: the daemon classifies on without the frames (and counts them)."""
    if not collect.enabled or collect.directory is None:
        return
    path = collect.directory.expanduser()
    existing = _nearest_existing(path)
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        why = "is not a folder" if not existing.is_dir() else "is not writable by this user"
        warnings.append((field, f"{path}: {existing} {why}; no frame would be kept"))


def _check_state_dir(path: Path, errors: Problems, warnings: Problems, *, running: bool) -> None:
    """Without creating it: a refused config leaves nothing behind (the daemon creates it)."""
    path = path.expanduser()
    existing = _nearest_existing(path)
    if not existing.is_dir():
        problem = f"{path}: cannot keep the MQTT queue there, nor snapshots"
        errors.append(("state_dir", f"{problem} ({existing} is not a folder)"))
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{path}: {existing} is not writable by this user"
        if running:
            errors.append(("state_dir", problem))
        else:  # systemd creates StateDirectory= for the service when it starts
            warnings.append(("state_dir", f"{problem} (fine if the service creates it)"))
