"""Bundle archives: a bundle folder as one plain tar, packed byte-for-byte the same way every
time, and unpacked only when every member is a plain file inside the folder.

The archive's sha256 is the bundle's identity in a model update (the folder under
``state_dir/models/``, the ``sha256`` of the status): packing the same folder twice gives the
same archive, so a bundle pushed again is recognised, and the bundle a device started with
has an identity too. Plain tar, not gzip: int8 weights shrink by ~16% only, and a gzip stream
is a decompression bomb to guard against, with a packer-dependent byte stream.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path, PurePosixPath

MAX_MEMBERS = 64  # a bundle is a handful of files
MIB = 1 << 20


class ArchiveError(ValueError):
    """An archive that is no tar, is cut short, or holds something other than plain files
    inside its folder. The message names the member."""


def bundle_files(folder: Path) -> list[tuple[str, Path]]:
    """(name in the archive, file) of every file under ``folder``, sorted by name.

    A symbolic link is refused: what it points to may change after the bundle was checked."""
    found: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(root) / name
            if path.is_symlink():
                raise ArchiveError(f"{path}: a symbolic link; a bundle holds plain files")
        for name in files:
            path = Path(root) / name
            if not path.is_file():
                raise ArchiveError(f"{path}: not a regular file")
            found.append((path.relative_to(folder).as_posix(), path))
    return sorted(found)


def pack(folder: Path) -> bytes:
    """The bundle folder as a tar with fixed metadata (mtime 0, root, mode 0644)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in bundle_files(Path(folder)):
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mode, info.mtime, info.uid, info.gid = 0o644, 0, 0, 0
            with path.open("rb") as data:
                tar.addfile(info, data)
    return buffer.getvalue()


def archive_sha256(folder: Path) -> str:
    """The identity of a bundle folder: the sha256 of :func:`pack`."""
    return hashlib.sha256(pack(folder)).hexdigest()


def _problem(member: tarfile.TarInfo) -> str | None:
    """Why a member may not be unpacked, or None."""
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (parts and ":" in parts[0]):
        return "an absolute path"
    if ".." in parts:
        return "a path outside the bundle folder (..)"
    if any(ord(c) < 32 for c in name) or "\\" in name:
        return "a name with control characters or backslashes"
    if member.issym() or member.islnk():
        return f"a link to {member.linkname!r}; a bundle holds plain files"
    if member.ischr() or member.isblk() or member.isfifo():
        return "a device or FIFO; a bundle holds plain files"
    if not (member.isreg() or member.isdir()) or member.issparse():
        return "not a plain file"
    return None


def checked_members(tar: tarfile.TarFile, max_bytes: int) -> list[tarfile.TarInfo]:
    """Every member, once each of them is known to be safe; raises :class:`ArchiveError`."""
    members: list[tarfile.TarInfo] = []
    seen: set[str] = set()
    total = 0
    for member in tar:
        if len(members) >= MAX_MEMBERS:
            raise ArchiveError(f"more than {MAX_MEMBERS} members; a bundle is a few files")
        problem = _problem(member)
        if problem:
            raise ArchiveError(f"member {member.name!r}: {problem}")
        name = PurePosixPath(member.name).as_posix()
        if name in seen:
            raise ArchiveError(f"member {member.name!r} appears twice")
        seen.add(name)
        total += member.size
        if total > max_bytes:
            raise ArchiveError(
                f"unpacks to more than {max_bytes / MIB:g} MiB (ota.max_mb) at {member.name!r}"
            )
        members.append(member)
    if not members:
        raise ArchiveError("an empty archive")
    return members


def unpack(archive: Path, dest: Path, max_bytes: int) -> None:
    """Unpack ``archive`` into the new folder ``dest``, refusing anything but plain files
    inside it (:class:`ArchiveError`). A full disk raises the OSError it is."""
    dest.mkdir()
    try:
        with tarfile.open(archive, mode="r:") as tar:
            members = checked_members(tar, max_bytes)
            # The data filter again refuses links, devices and paths outside dest.
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError) as exc:
        raise ArchiveError(f"not a complete tar archive ({exc})") from None
