"""The folder being labelled: the server's source of truth, and the only code that moves files.

* Unlabeled images lie directly in ``DIR``; labelling moves an image (and its ``.json``
  sidecar) into ``DIR/<class>/``. Nothing is ever deleted or overwritten: a name already taken
  in the class folder gets a ``-1``, ``-2`` ... suffix, and every move goes through a hard link
  (which fails rather than replace a file) then the removal of the old name.
* Every change is a line in ``DIR/.kestrel-label.log`` (JSON per line), written and synced
  *before* the files move, so each move can be reversed (``undo``), also after a crash.
* Paths in requests are relative to ``DIR``; anything else (absolute, ``..``, a symlink, a
  symlinked class folder, a file outside ``DIR``) is refused with :class:`Refused`. Symlinks are
  never followed, when listing either.
* Requests naming an image that is no longer where the client saw it (another tab moved it)
  get :class:`Stale` (HTTP 409) and change nothing. One lock (a thread lock plus ``flock`` on
  the log, for a second server on the same folder) orders all changes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.paths import is_image_file
from training.curate.discover import read_guess, sidecar_path
from training.data.layouts import IGNORED_FOLDERS

LOG_NAME = ".kestrel-label.log"
_LABEL = re.compile(r"^[^/\\\x00-\x1f.][^/\\\x00-\x1f]{0,99}$")


class Refused(ValueError):
    """A request that is not allowed (bad path, bad class name): HTTP 400."""


class Stale(RuntimeError):
    """A request about images that are no longer where the client saw them: HTTP 409."""

    def __init__(self, message: str, paths: list[str]) -> None:
        super().__init__(message)
        self.paths = paths


@dataclass(frozen=True)
class Entry:
    """One image as the page sees it."""

    path: str  # relative to DIR, "/"-separated
    label: str | None
    guess: str | None


class LabelStore:
    """Moves images of ``root`` into class folders, with an undo log."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))
        if not self.root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder")
        self.log_path = self.root / LOG_NAME
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- reading

    def classes(self) -> list[str]:
        """Class folders: visible, real (not symlinked) subfolders of ``root``."""
        names = []
        with os.scandir(self.root) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False) and _visible(e.name):
                    names.append(e.name)
        return sorted(names)

    def images(self) -> list[Entry]:
        """Unlabeled images (directly in ``root``), then each class folder's, by path."""
        out = [Entry(name, None, read_guess(self.root / name)) for name in self._files(self.root)]
        for label in self.classes():
            folder = self.root / label
            for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
                dirnames[:] = sorted(d for d in dirnames if _visible(d))
                for name in sorted(filenames):
                    path = Path(dirpath) / name
                    if _regular_image(path):
                        rel = path.relative_to(self.root).as_posix()
                        out.append(Entry(rel, label, read_guess(path)))
        return out

    def _files(self, folder: Path) -> list[str]:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if _regular_image(Path(e.path)))

    def history(self) -> list[dict[str, Any]]:
        """The log's changes that are not undone, oldest first."""
        done: dict[int, dict[str, Any]] = {}
        for record in self._records():
            if "undo" in record:
                done.pop(int(record["undo"]), None)
            elif "moves" in record:
                done[int(record["id"])] = record
        return list(done.values())

    def version(self) -> int:
        """Changes so far (labelled or undone): a page whose version differs reloads."""
        return sum(1 for _ in self._records())

    def _records(self) -> Iterator[dict[str, Any]]:
        try:
            lines = self.log_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash: its moves were not made (see _append)
            if isinstance(record, dict):
                yield record

    # ---------------------------------------------------------------- changing

    def label(self, paths: list[str], label: str) -> dict[str, Any]:
        """Move the images ``paths`` (and their sidecars) into ``root/label/``."""
        label = check_label(label)
        if not paths:
            raise Refused("no images given")
        with self._locked():
            sources = [self.resolve(p) for p in paths]
            missing = [p for p, src in zip(paths, sources, strict=True) if src is None]
            if missing:
                raise Stale(
                    f"{len(missing)} images are no longer there (moved elsewhere?)", missing
                )
            target = self.root / label
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                raise Refused(f"{label!r} is not a real folder in {self.root}")
            moves = self._plan(sources, target)
            if not moves:
                return {"id": None, "moved": 0}
            record = {
                "id": self._next_id(),
                "time": time.time(),
                "label": label,
                "moves": moves,
                "created": not target.exists(),
            }
            self._append(record)
            target.mkdir(exist_ok=True)
            self._apply(moves, record["id"])
        return {"id": record["id"], "moved": sum(1 for m in moves if not m[0].endswith(".json"))}

    def undo(self, change: int | None = None) -> dict[str, Any]:
        """Reverse change ``change`` (default: the latest one not undone)."""
        with self._locked():
            history = self.history()
            if not history:
                raise Stale("nothing to undo", [])
            wanted = [r for r in history if change is None or int(r["id"]) == change]
            if not wanted:
                raise Stale(f"change {change} is already undone (or unknown)", [])
            record = wanted[-1]
            back = [(now, before) for before, now in reversed(record["moves"])]
            blocked = [now for now, before in back if not self._movable(now, before)]
            if blocked:
                raise Stale("these files changed since; undo the later changes first", blocked)
            self._append({"undo": int(record["id"]), "time": time.time()})
            for now, before in back:
                _move_no_replace(self.root / now, self.root / before)
            if record.get("created"):
                self._prune_empty(record["label"])
        return {"undone": int(record["id"]), "moved": len(back)}

    def _plan(self, sources: list[Path], target: Path) -> list[list[str]]:
        """``[src, dst]`` pairs (relative), images and their sidecars, no name reused."""
        taken = {p.name for p in target.iterdir()} if target.is_dir() else set()
        moves: list[list[str]] = []
        for src in sources:
            if src.parent == target:
                continue  # already in this class
            name = _free_name(src, taken)
            pairs = [(src, target / name)]
            side = sidecar_path(src)
            if side.is_file() and not side.is_symlink():
                pairs.append((side, target / Path(name).with_suffix(".json").name))
            for a, b in pairs:
                taken.add(b.name)
                moves.append(
                    [a.relative_to(self.root).as_posix(), b.relative_to(self.root).as_posix()]
                )
        return moves

    def _apply(self, moves: list[list[str]], change: int) -> None:
        done: list[list[str]] = []
        try:
            for src, dst in moves:
                _move_no_replace(self.root / src, self.root / dst)
                done.append([src, dst])
        except OSError as exc:
            for src, dst in reversed(done):
                _move_no_replace(self.root / dst, self.root / src)
            self._append({"undo": change, "time": time.time(), "failed": str(exc)})
            raise Refused(f"could not move {src} to {dst}: {exc.strerror or exc}") from None

    def _movable(self, now: str, before: str) -> bool:
        """The file is still where the change put it (a real file), and its old place is free."""
        try:
            mode = os.lstat(self.root / now).st_mode
        except OSError:
            return False
        return stat.S_ISREG(mode) and not os.path.lexists(self.root / before)

    def _prune_empty(self, label: str) -> None:
        """The class folder a change created goes with its undo (only if left empty)."""
        with suppress(OSError):
            (self.root / label).rmdir()

    def _next_id(self) -> int:
        return 1 + max((int(r.get("id", 0)) for r in self._records() if "moves" in r), default=0)

    def _append(self, record: dict[str, Any]) -> None:
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock, self.log_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ---------------------------------------------------------------- paths

    def resolve(self, rel: str) -> Path | None:
        """The image ``rel`` names inside ``root``; None when it is not there (any more).

        Raises :class:`Refused` for a path that leaves ``root``, goes through a symlink or is
        not an image file name.
        """
        if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel:
            raise Refused(f"bad path {rel!r}")
        parts = rel.split("/")
        if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise Refused(f"{rel!r}: paths must be relative to the folder, without '..'")
        if any(p.startswith(".") for p in parts) or not is_image_file(Path(parts[-1])):
            raise Refused(f"{rel!r}: not an image of this folder")
        current = self.root
        for part in parts:
            current = current / part
            try:
                mode = os.lstat(current).st_mode
            except FileNotFoundError:
                return None
            if stat.S_ISLNK(mode):
                raise Refused(f"{rel!r}: symlinks are not followed")
        if not stat.S_ISREG(mode):
            raise Refused(f"{rel!r}: not a file")
        return current


def check_label(label: object) -> str:
    """A class name usable as a folder name (Refused otherwise)."""
    if not isinstance(label, str) or not _LABEL.match(label.strip()) or label != label.strip():
        raise Refused(
            f"bad class name {label!r}: 1-100 characters, no '/', '\\' or control "
            "characters, not starting with '.'"
        )
    if label in IGNORED_FOLDERS:
        raise Refused(f"{label!r} is a folder name tools ignore; choose another")
    return label


def _visible(name: str) -> bool:
    return not name.startswith(".") and name not in IGNORED_FOLDERS


def _regular_image(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode) and is_image_file(path)
    except OSError:
        return False


def _free_name(src: Path, taken: set[str]) -> str:
    name, n = src.name, 0
    while name in taken or Path(name).with_suffix(".json").name in taken:
        n += 1
        name = f"{src.stem}-{n}{src.suffix}"
    return name


def _move_no_replace(src: Path, dst: Path) -> None:
    """Move a file without ever replacing one: hard link then unlink (or, where the
    filesystem has no hard links, a rename after checking, under the store's lock)."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "already exists", str(dst)) from None
        os.rename(src, dst)
        return
    os.unlink(src)
