"""What a device does with a whole pushed archive, or a rollback, on the OTA thread.

An install goes: already active? -> signature (when ``ota.trusted_keys``) -> unpack into the
store -> start-up checks and config labels -> load -> smoke test -> hand-over -> the pointer
switched. Any refusal before the hand-over deletes what was unpacked and leaves every camera
on its model: the active one is never touched. A rollback loads each camera's previous bundle
and hands it over the same way.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device.config import CameraConfig, KestrelConfig
from device.inference.bundle import BundleError, load_bundle
from device.inference.engine import Classifier
from device.ota.archive import ArchiveError
from device.ota.protocol import Rollback
from device.ota.receiver import MIB, Received
from device.ota.signing import SigningError, verify
from device.ota.store import ModelRef, ModelStore, Slot
from device.ota.swap import hand_over
from device.ota.verify import (
    VerifyError,
    config_label_problems,
    latest_frames,
    load_classifier,
    smoke_test,
)

if TYPE_CHECKING:
    from device.run.daemon import Daemon

log = logging.getLogger(__name__)


class UpdateRefused(Exception):
    """An update or rollback the device refuses; the message is the status's reason."""


@dataclass(frozen=True)
class Outcome:
    """What the status says after a job (see ``model_status_payload``)."""

    status: str
    name: str
    sha256: str
    previous: str | None
    reason: str = ""


class Updates:
    """The jobs; ``slots`` is shared with the service (camera -> its slot in the store)."""

    def __init__(
        self, config: KestrelConfig, store: ModelStore, keys: Sequence[Any], slots: dict
    ) -> None:
        self.config = config
        self.store = store
        self.keys = list(keys)
        self.slots: dict[str, Slot] = slots
        self._config_refs: dict[Path, ModelRef] = {}

    def current(self, camera: CameraConfig) -> ModelRef:
        """The bundle the camera runs: its slot's, else the config's (hashed once)."""
        slot = self.slots.get(camera.name)
        if slot is not None:
            return slot.current
        path = camera.model or self.config.model
        if path not in self._config_refs:
            name = load_bundle(path, verify_hash=False).name
            self._config_refs[path] = ModelRef.of_folder(path, name)
        return self._config_refs[path]

    def targets(self, camera: str | None) -> list[CameraConfig]:
        if camera is None:
            return list(self.config.cameras)
        found = [c for c in self.config.cameras if c.name == camera]
        if not found:
            names = ", ".join(c.name for c in self.config.cameras)
            raise UpdateRefused(f"no camera named {camera!r} on this device (it has {names})")
        return found

    # ------------------------------------------------------------------ install

    def install(self, daemon: Daemon, received: Received) -> Outcome:
        chunk = received.chunk
        try:
            cameras = self.targets(chunk.camera)
            replaced = {c.name: self.current(c) for c in cameras}
            before = replaced[cameras[0].name].sha256
            if all(ref.sha256 == chunk.sha256 for ref in replaced.values()):
                return Outcome("active", chunk.name, chunk.sha256, before, "already active")
            signer = verify(chunk.sha256, chunk.signature, self.keys)
            path = self.store.install(
                received.path, chunk.sha256, int(self.config.ota.max_mb * MIB)
            )
        except SigningError as exc:
            raise UpdateRefused(f"signature: {exc}") from None
        except ArchiveError as exc:
            raise UpdateRefused(f"archive: {exc}") from None
        except OSError as exc:  # a full disk, a file where a folder should be
            raise UpdateRefused(f"cannot store the bundle: {exc}") from None
        finally:
            received.path.unlink(missing_ok=True)
        try:
            classifier = self._checked(daemon, path, cameras)
        except VerifyError as exc:
            self.store.discard(path)
            raise UpdateRefused(str(exc)) from None
        hand_over(daemon, list(replaced), classifier, chunk.sha256)
        new = ModelRef(chunk.sha256, classifier.bundle.name, path)
        for name, old in replaced.items():
            self.slots[name] = Slot(new, None if old.sha256 == new.sha256 else old)
        reason = f"signed by key {signer}" if signer else ""
        try:
            self.store.activate(new, replaced)
            self.store.start_probation(new.sha256)
        except OSError as exc:  # it runs; a restart would go back to the previous pointer
            reason = f"active until the next restart: cannot record it ({exc})"
        return Outcome("active", new.name, new.sha256, before, reason)

    def _checked(self, daemon: Daemon, path: Path, cameras: list[CameraConfig]) -> Classifier:
        """The new model's classifier once it passed every check; raises VerifyError."""
        try:
            bundle = load_bundle(path)
        except BundleError as exc:
            raise VerifyError(f"bundle: {exc}") from None
        problems = config_label_problems(bundle, cameras)
        if problems:
            raise VerifyError("; ".join(problems))
        try:
            classifier = load_classifier(bundle, self.config, cameras[0].top_k)
        except (BundleError, RuntimeError, OSError, ValueError) as exc:
            raise VerifyError(f"failed to load: {exc}") from None
        frames = {
            c.name: (c, latest_frames(daemon.slots[c.name], self.config.ota.smoke_frames))
            for c in cameras
        }
        try:
            reference = _reference_ms(daemon, cameras[0], frames[cameras[0].name][1])
            result = smoke_test(classifier, frames, reference, self.config.ota.latency_factor)
        except BaseException:
            classifier.close()
            raise
        log.info(
            "%s: smoke test passed on %d frame(s): %.1f ms per invoke (current model %.1f ms)",
            bundle.name,
            result.frames,
            result.invoke_ms,
            result.reference_ms,
        )
        return classifier

    # ------------------------------------------------------------------ rollback

    def roll_back(self, daemon: Daemon, command: Rollback) -> Outcome:
        cameras = self.targets(command.camera)
        groups: dict[ModelRef, list[str]] = defaultdict(list)
        for camera in cameras:
            slot = self.slots.get(camera.name)
            if slot is None or slot.previous is None:
                raise UpdateRefused(f"camera {camera.name}: no previous model to roll back to")
            groups[slot.previous].append(camera.name)
        for previous, names in groups.items():
            try:
                bundle = load_bundle(previous.path)
                classifier = load_classifier(bundle, self.config, cameras[0].top_k)
            except (BundleError, RuntimeError, OSError, ValueError) as exc:
                raise UpdateRefused(f"the previous bundle does not load: {exc}") from None
            hand_over(daemon, names, classifier, previous.sha256)
        changed = self.store.roll_back([c.name for c in cameras])
        self.slots.update(changed)
        self.store.end_probation()
        now = changed[cameras[0].name]
        assert now.previous is not None
        return Outcome(
            "rolled_back", now.current.name, now.current.sha256, now.previous.sha256, "asked for"
        )


def _reference_ms(daemon: Daemon, camera: CameraConfig, frames: list[Any]) -> float:
    """The current model's invoke time on this camera: the worker's running figure, else
    one invoke measured on a frame (under the stage's lock, like a frame of the worker)."""
    worker = next(w for w in daemon.workers if w.camera.name == camera.name)
    measured = worker.stats.ms.get("invoke")
    if measured is not None or not frames:
        return measured or 0.0
    stage = worker.stages[0]
    with stage.lock:
        tensor = stage.classifier.preprocess(frames[0].image, frames[0].format, camera.roi)
        t0 = time.perf_counter()
        stage.classifier.infer(tensor)
        return (time.perf_counter() - t0) * 1e3
