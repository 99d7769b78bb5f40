"""The bundles a device got over the broker, and which one each camera uses, in
``state_dir/models/``::

    models/
      <sha256>/           an unpacked bundle, named by the sha256 of its archive
      active.json         per camera: the bundle in use ("current") and the one before it
      health.json         the crash-loop record of the latest update
      status.json         the latest model status, published again after a restart
      .incoming/          archives being received
      .<sha256>.partial/  a bundle being unpacked (renamed into place when whole)

The JSON files are replaced atomically (written aside, fsynced, renamed), so a power cut
leaves the old or the new pointer, never half of one. Only the current and the previous
bundle of each camera are kept; a camera without an entry uses the config's ``model``.

Crash loops: an update starts a probation. A run that ends without a clean stop before it
has used the update for :data:`PROBATION_S` seconds counts as a crash; at
:data:`CRASHES_TO_ROLL_BACK` crashes in a row, start-up goes back to the previous bundle.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.ota.archive import archive_sha256, unpack
from device.run.state_dir import LOCK_FILE

log = logging.getLogger(__name__)

PROBATION_S = 60.0
CRASHES_TO_ROLL_BACK = 2
_SHA_DIR = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ModelRef:
    """A bundle by identity (its archive's sha256), name and folder."""

    sha256: str
    name: str
    path: Path

    @classmethod
    def of_folder(cls, path: Path, name: str) -> ModelRef:
        """The ref of a bundle folder that did not come over the broker (the config's)."""
        return cls(archive_sha256(path), name, Path(path))

    def to_json(self) -> dict[str, str]:
        return {"sha256": self.sha256, "name": self.name, "path": str(self.path)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ModelRef:
        return cls(str(raw["sha256"]), str(raw["name"]), Path(raw["path"]))


@dataclass(frozen=True)
class Slot:
    """What one camera runs, and what ``--rollback`` goes back to."""

    current: ModelRef
    previous: ModelRef | None = None


def write_json_durably(path: Path, payload: Any) -> None:
    """``payload`` at ``path`` whole or not at all, on the disk before this returns."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except OSError:
        partial.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # the rename itself, durable too
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ModelStore:
    """``state_dir/models``; see the module docstring."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir).expanduser() / "models"
        self.incoming = self.root / ".incoming"

    def bundle_dir(self, sha256: str) -> Path:
        return self.root / sha256

    def _read(self, name: str) -> Any:
        path = self.root / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # never a reason not to start
            log.error("%s: unreadable, ignored (%s)", path, exc)
            return None

    def _write(self, name: str, payload: Any) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_durably(self.root / name, payload)

    # ------------------------------------------------------------------ the pointer

    def slots(self) -> dict[str, Slot]:
        """Camera -> its slot, as active.json says (an unreadable file counts as empty)."""
        raw = self._read("active.json") or {}
        slots = {}
        try:
            for camera, entry in raw.get("cameras", {}).items():
                previous = entry.get("previous")
                slots[camera] = Slot(
                    ModelRef.from_json(entry["current"]),
                    ModelRef.from_json(previous) if previous else None,
                )
        except (AttributeError, KeyError, TypeError) as exc:
            log.error("%s: malformed, ignored (%s)", self.root / "active.json", exc)
            return {}
        return slots

    def _write_slots(self, slots: Mapping[str, Slot]) -> None:
        cameras = {
            camera: {
                "current": slot.current.to_json(),
                "previous": slot.previous.to_json() if slot.previous else None,
            }
            for camera, slot in slots.items()
        }
        self._write("active.json", {"cameras": cameras})

    def activate(self, new: ModelRef, replaced: Mapping[str, ModelRef]) -> None:
        """Camera ``c`` of ``replaced`` now runs ``new``, with ``replaced[c]`` before it."""
        slots = self.slots()
        for camera, old in replaced.items():
            slots[camera] = Slot(new, None if old.sha256 == new.sha256 else old)
        self._write_slots(slots)
        self.prune(slots)

    def roll_back(self, cameras: Iterable[str]) -> dict[str, Slot]:
        """Swap current and previous of each camera that has a previous; returns the new
        slots of those cameras."""
        slots = self.slots()
        changed = rolled_back(slots, cameras)
        if changed:
            self._write_slots(slots | changed)
        return changed

    # ------------------------------------------------------------------ bundles

    def install(self, archive: Path, sha256: str, max_bytes: int) -> Path:
        """Unpack an archive into ``<sha256>/`` (or reuse that folder when it is there)."""
        final = self.bundle_dir(sha256)
        if final.is_dir():
            return final
        partial = self.root / f".{sha256}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            unpack(archive, partial, max_bytes)
            partial.rename(final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return final

    def discard(self, path: Path) -> None:
        """Delete a bundle folder of the store that no camera refers to (a refused one)."""
        referenced = {ref.path for slot in self.slots().values() for ref in _refs(slot)}
        if path.parent == self.root and _SHA_DIR.match(path.name) and path not in referenced:
            shutil.rmtree(path, ignore_errors=True)

    def prune(self, slots: Mapping[str, Slot] | None = None) -> None:
        """Delete the bundles no camera refers to, and what an interrupted run left."""
        slots = self.slots() if slots is None else slots
        keep = {ref.path.name for slot in slots.values() for ref in _refs(slot)}
        if not self.root.is_dir():
            return
        for entry in self.root.iterdir():
            stale = entry.name.endswith(".partial") and entry.is_dir()
            if stale or (_SHA_DIR.match(entry.name) and entry.name not in keep):
                shutil.rmtree(entry, ignore_errors=True)

    def clear_incoming(self) -> None:
        """At start-up: transfers a previous run did not finish."""
        shutil.rmtree(self.incoming, ignore_errors=True)

    # ------------------------------------------------------------------ crash loops

    def start_probation(self, sha256: str) -> None:
        """An update just went live: its first runs are watched for crashes."""
        self._write(
            "health.json", {"sha256": sha256, "crashes": 0, "running": True, "proven": False}
        )

    def health(self) -> dict[str, Any] | None:
        """The crash-loop record while an update is on probation, else None (read only)."""
        health = self._read("health.json")
        return health if isinstance(health, dict) and not health.get("proven") else None

    def record_start(self, crashes: int) -> None:
        """This run starts on probation, after ``crashes`` (see :func:`crashes_so_far`)."""
        self._set_health(crashes=crashes, running=True)

    def end_probation(self) -> None:
        (self.root / "health.json").unlink(missing_ok=True)

    def _set_health(self, **changes: Any) -> None:
        health = self._read("health.json")
        if isinstance(health, dict) and not health.get("proven"):
            try:
                self._write("health.json", health | changes)
            except OSError as exc:  # a full disk: the record stays as it was
                log.error("%s: cannot update (%s)", self.root / "health.json", exc)

    def proven(self) -> None:
        """The update ran :data:`PROBATION_S` seconds: crashes are no longer its fault."""
        self._set_health(proven=True)

    def stopped_cleanly(self) -> None:
        self._set_health(running=False)

    # ------------------------------------------------------------------ status

    def last_status(self) -> dict[str, Any] | None:
        status = self._read("status.json")
        return status if isinstance(status, dict) else None

    def save_status(self, status: Mapping[str, Any]) -> None:
        self._write("status.json", dict(status))


def state_dir_free(state_dir: Path) -> bool:
    """Whether no other daemon holds ``state_dir``'s lock (device.run.state_dir): tried and
    let go at once, so the crash-loop record can be written before the models load, which is
    before the daemon takes the lock for good."""
    path = Path(state_dir).expanduser() / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def rolled_back(slots: Mapping[str, Slot], cameras: Iterable[str]) -> dict[str, Slot]:
    """The slots of ``cameras`` with current and previous swapped (those with a previous)."""
    return {
        camera: Slot(previous, slots[camera].current)
        for camera in cameras
        if camera in slots and (previous := slots[camera].previous) is not None
    }


def crashes_so_far(health: Mapping[str, Any]) -> int:
    """The crashes of an update on probation, counting the run before this one when it did
    not stop cleanly (it was still marked running)."""
    return int(health.get("crashes", 0)) + bool(health.get("running"))


def _refs(slot: Slot) -> list[ModelRef]:
    return [slot.current] + ([slot.previous] if slot.previous else [])
