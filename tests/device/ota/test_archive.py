"""Bundle archives: packed the same way every time, unpacked only when every member is a plain
file inside the folder. Each refusal is a really broken tar, built with tarfile."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from device.inference.bundle import load_bundle
from device.ota.archive import ArchiveError, archive_sha256, pack, unpack
from device.paths import DEFAULT_MODEL

MIB = 1 << 20


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def _unpack(tmp_path: Path, data: bytes, max_bytes: int = 64 * MIB) -> Path:
    archive = tmp_path / "bundle.tar"
    archive.write_bytes(data)
    dest = tmp_path / "store" / "bundle"
    dest.parent.mkdir()
    unpack(archive, dest, max_bytes)
    return dest


def test_the_same_folder_packs_to_the_same_bytes_and_unpacks_to_a_valid_bundle(tmp_path):
    first, second = pack(DEFAULT_MODEL), pack(DEFAULT_MODEL)
    assert first == second
    assert archive_sha256(DEFAULT_MODEL) == hashlib.sha256(first).hexdigest()
    bundle = load_bundle(_unpack(tmp_path, first))
    assert bundle.name == "imagenet-efficientnet-lite0"
    assert sorted(p.name for p in bundle.path.iterdir()) == sorted(
        p.name for p in DEFAULT_MODEL.iterdir()
    )


def test_a_changed_file_changes_the_identity(tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in DEFAULT_MODEL.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    assert archive_sha256(copy) == archive_sha256(DEFAULT_MODEL)  # mtimes do not count
    (copy / "labels.txt").write_text("x\n")
    assert archive_sha256(copy) != archive_sha256(DEFAULT_MODEL)


def test_a_symlink_in_the_folder_is_not_packed(tmp_path):
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    (folder / "model.tflite").symlink_to("/etc/hostname")
    with pytest.raises(ArchiveError, match="symbolic link"):
        pack(folder)


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([(_member("../evil.txt"), b"x")], r"outside the bundle folder"),
        ([(_member("sub/../../evil.txt"), b"x")], r"outside the bundle folder"),
        ([(_member("/tmp/kestrel-evil.txt"), b"x")], r"absolute path"),
        ([(_member("model.tflite", tarfile.SYMTYPE, "/etc/passwd"), None)], r"a link to"),
        ([(_member("model.tflite", tarfile.LNKTYPE, "/etc/passwd"), None)], r"a link to"),
        ([(_member("dev", tarfile.CHRTYPE), None)], r"device or FIFO"),
        ([(_member("dev", tarfile.BLKTYPE), None)], r"device or FIFO"),
        ([(_member("fifo", tarfile.FIFOTYPE), None)], r"device or FIFO"),
        ([(_member("a.txt"), b"1"), (_member("a.txt"), b"2")], r"appears twice"),
        ([], r"empty archive"),
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "absolute",
        "symlink",
        "hardlink",
        "char-device",
        "block-device",
        "fifo",
        "duplicate",
        "empty",
    ],
)
def test_refused_members_leave_nothing_behind(tmp_path, members, expected):
    with pytest.raises(ArchiveError, match=expected):
        _unpack(tmp_path, _tar(members))
    assert list((tmp_path / "store" / "bundle").iterdir()) == []
    assert not (tmp_path / "store" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/kestrel-evil.txt").exists()


def test_a_bundle_that_unpacks_too_big_is_refused(tmp_path):
    data = _tar([(_member("a.bin"), b"\0" * (2 * MIB)), (_member("b.bin"), b"\0" * MIB)])
    with pytest.raises(ArchiveError, match=r"more than 2 MiB \(ota.max_mb\) at 'b.bin'"):
        _unpack(tmp_path, data, max_bytes=2 * MIB)


def test_too_many_members_are_refused(tmp_path):
    data = _tar([(_member(f"f{i}"), b"x") for i in range(65)])
    with pytest.raises(ArchiveError, match="more than 64 members"):
        _unpack(tmp_path, data)


@pytest.mark.parametrize("keep", [0.5, -20_000], ids=["half", "the-model's-last-bytes"])
def test_a_truncated_archive_is_refused(tmp_path, keep):
    data = pack(DEFAULT_MODEL)
    # Inside model.tflite (the last member), off any block boundary; the last ~11 KB of a
    # tar are end-of-archive padding, whose loss a tar reader does not notice.
    end = int(len(data) * keep) if keep > 0 else len(data) + keep
    with pytest.raises(ArchiveError, match="not a complete tar archive"):
        _unpack(tmp_path, data[: end - 7])


def test_bytes_that_are_no_tar_are_refused(tmp_path):
    with pytest.raises(ArchiveError, match="not a complete tar archive"):
        _unpack(tmp_path, os.urandom(10_000))
