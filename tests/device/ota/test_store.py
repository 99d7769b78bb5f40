"""state_dir/models: the pointer (current + previous per camera), installs, pruning, the
crash-loop record, the status kept across restarts. Real files, a real bundle."""

from __future__ import annotations

import json

import pytest

from device.inference.bundle import load_bundle
from device.ota.archive import ArchiveError, archive_sha256, pack
from device.ota.store import ModelRef, ModelStore, Slot, crashes_so_far, rolled_back
from device.paths import DEFAULT_MODEL

MIB = 1 << 20


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("archive") / "bundle.tar"
    path.write_bytes(pack(DEFAULT_MODEL))
    return path


def test_install_activate_and_roll_back(tmp_path, archive):
    store = ModelStore(tmp_path)
    config_ref = ModelRef.of_folder(DEFAULT_MODEL, "lite0")
    assert config_ref.sha256 == archive_sha256(DEFAULT_MODEL)
    sha = "a" * 64  # stands for the sha256 of another archive
    path = store.install(archive, sha, 64 * MIB)
    assert path == tmp_path / "models" / sha and load_bundle(path).name
    assert store.install(archive, sha, 64 * MIB) == path  # there already: reused

    new = ModelRef(sha, "door-v2", path)
    store.activate(new, {"door": config_ref, "yard": config_ref})
    assert store.slots() == {"door": Slot(new, config_ref), "yard": Slot(new, config_ref)}
    pointer = json.loads((tmp_path / "models" / "active.json").read_text())
    assert pointer["cameras"]["door"]["current"]["sha256"] == sha

    assert store.roll_back(["door"]) == {"door": Slot(config_ref, new)}
    assert store.slots()["door"] == Slot(config_ref, new)
    assert store.slots()["yard"] == Slot(new, config_ref)
    assert store.roll_back(["door"]) == {"door": Slot(new, config_ref)}  # and back again
    assert store.roll_back(["nowhere"]) == {}


def test_only_the_current_and_previous_bundles_are_kept(tmp_path, archive):
    store = ModelStore(tmp_path)
    previous = ModelRef.of_folder(DEFAULT_MODEL, "lite0")
    refs = []
    for digit in "abc":
        sha = digit * 64
        refs.append(ModelRef(sha, digit, store.install(archive, sha, 64 * MIB)))
        store.activate(refs[-1], {"door": previous})
        previous = refs[-1]
    kept = sorted(p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith("json"))
    assert kept == ["b" * 64, "c" * 64]
    store.install(archive, "d" * 64, 64 * MIB)  # refused after unpacking: discarded
    store.discard(tmp_path / "models" / ("d" * 64))
    assert not (tmp_path / "models" / ("d" * 64)).exists()
    assert DEFAULT_MODEL.is_dir()  # a config bundle is never the store's to delete
    store.discard(refs[2].path)  # referenced: not deleted
    assert refs[2].path.is_dir()


def test_a_failed_install_leaves_no_folder(tmp_path):
    broken = tmp_path / "broken.tar"
    broken.write_bytes(pack(DEFAULT_MODEL)[:100_000])
    store = ModelStore(tmp_path)
    with pytest.raises(ArchiveError):
        store.install(broken, "d" * 64, 64 * MIB)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == []


def test_unreadable_pointer_files_count_as_empty(tmp_path):
    store = ModelStore(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "active.json").write_text("{not json")
    assert store.slots() == {}
    (tmp_path / "models" / "active.json").write_text('{"cameras": {"door": {"current": 1}}}')
    assert store.slots() == {}


def test_two_unclean_runs_on_probation_make_a_crash_loop(tmp_path):
    store = ModelStore(tmp_path)
    assert store.health() is None
    store.start_probation("e" * 64)  # the update went live, the daemon runs
    health = store.health()
    assert health is not None and crashes_so_far(health) == 1  # it died: not stopped cleanly
    store.record_start(crashes_so_far(health))  # restarted
    store.stopped_cleanly()  # a clean stop is no crash
    health = store.health()
    assert health is not None and crashes_so_far(health) == 1
    store.record_start(crashes_so_far(health))  # restarted, and dies again
    assert crashes_so_far(store.health()) == 2
    store.proven()  # ... unless it had run long enough
    assert store.health() is None


def test_rolled_back_swaps_only_cameras_with_a_previous():
    a, b = (ModelRef(d * 64, d, DEFAULT_MODEL) for d in "ab")
    slots = {"door": Slot(b, a), "yard": Slot(b)}
    assert rolled_back(slots, ["door", "yard", "gone"]) == {"door": Slot(a, b)}


def test_the_status_is_kept(tmp_path):
    store = ModelStore(tmp_path)
    assert store.last_status() is None
    store.save_status({"status": "active", "sha256": "f" * 64})
    assert ModelStore(tmp_path).last_status() == {"status": "active", "sha256": "f" * 64}
