"""The bundle contract: really broken bundles are refused with a message naming the field."""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from device.inference.bundle import (
    LABELS_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    BundleError,
    Manifest,
    load_bundle,
    write_bundle,
)
from device.inference.engine import Classifier


@pytest.fixture
def bundle_copy(tmp_path: Path, shipped_model: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(shipped_model, copy)
    return copy


def edit_manifest(bundle: Path, **changes) -> None:
    path = bundle / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    for dotted, value in changes.items():
        node = manifest
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(json.dumps(manifest))


def test_shipped_bundle_loads(shipped_model):
    bundle = load_bundle(shipped_model)
    assert bundle.manifest.task == "hierarchical"
    assert len(bundle.labels) == 1000
    assert bundle.manifest.input.dtype == "uint8"


def test_truncated_model_is_refused(bundle_copy):
    data = (bundle_copy / MODEL_FILE).read_bytes()
    (bundle_copy / MODEL_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"model\.tflite: model_sha256: expected [0-9a-f]{64}"):
        load_bundle(bundle_copy)


def test_wrong_hash_is_refused(bundle_copy):
    edit_manifest(bundle_copy, model_sha256="ab" * 32)
    with pytest.raises(BundleError, match="model_sha256: expected abab"):
        load_bundle(bundle_copy)


def test_wrong_label_count_is_refused(bundle_copy):
    labels = (bundle_copy / LABELS_FILE).read_text().splitlines()
    (bundle_copy / LABELS_FILE).write_text("\n".join(labels[:-1]) + "\n")
    with pytest.raises(BundleError, match=r"expected the 1000 labels of manifest.json, got 999"):
        load_bundle(bundle_copy)


def test_manifest_label_count_disagreeing_with_the_model_is_refused(bundle_copy):
    manifest = json.loads((bundle_copy / MANIFEST_FILE).read_text())
    extra = [*manifest["labels"], "zebra finch 2"]
    manifest["labels"] = extra
    manifest["output"]["size"] = 1001
    manifest["taxonomy"]["zebra finch 2"] = "bird" if "bird" in manifest["taxonomy"] else None
    (bundle_copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    (bundle_copy / LABELS_FILE).write_text("\n".join(extra) + "\n")
    with pytest.raises(BundleError, match=r"output.size: manifest says 1001, model has 1000"):
        Classifier(bundle_copy, accelerator="cpu")


def test_input_shape_disagreeing_with_the_model_is_refused(bundle_copy):
    edit_manifest(bundle_copy, input__height=240, input__width=240)
    with pytest.raises(BundleError, match=r"input shape: manifest says \(1, 240, 240, 3\)"):
        Classifier(bundle_copy, accelerator="cpu")


def test_input_dtype_disagreeing_with_the_model_is_refused(bundle_copy):
    edit_manifest(bundle_copy, input__dtype="float32")
    with pytest.raises(BundleError, match=r"input.dtype: manifest says float32, model has uint8"):
        Classifier(bundle_copy, accelerator="cpu")


def test_garbage_json_is_refused(bundle_copy):
    (bundle_copy / MANIFEST_FILE).write_text('{"format_version": 1, "name": ')
    with pytest.raises(BundleError, match=r"manifest.json: not valid JSON"):
        load_bundle(bundle_copy)


def test_future_format_is_refused(bundle_copy):
    edit_manifest(bundle_copy, format_version=7)
    with pytest.raises(BundleError, match="format_version: expected 1, got 7"):
        load_bundle(bundle_copy)


def test_invalid_field_is_named(bundle_copy):
    edit_manifest(bundle_copy, task="regression")
    with pytest.raises(BundleError, match="task: Input should be 'binary'"):
        load_bundle(bundle_copy)
    edit_manifest(bundle_copy, task="hierarchical", typo_field=3)
    with pytest.raises(BundleError, match="typo_field: Extra inputs are not permitted"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("name", [MODEL_FILE, LABELS_FILE, MANIFEST_FILE])
def test_missing_file_is_refused(bundle_copy, name):
    (bundle_copy / name).unlink()
    with pytest.raises(BundleError, match=f"missing {name}"):
        load_bundle(bundle_copy)


def test_not_a_folder_is_refused(tmp_path):
    with pytest.raises(BundleError, match="not a bundle folder"):
        load_bundle(tmp_path / "nowhere")


def test_not_a_tflite_model_is_refused_even_with_a_matching_hash(tmp_path, shipped_model):
    fields = json.loads((shipped_model / MANIFEST_FILE).read_text())
    del fields["model_sha256"]
    bundle = write_bundle(tmp_path / "junk", b"this is not a flatbuffer" * 100, fields)
    with pytest.raises(BundleError, match="not a loadable TFLite model"):
        Classifier(bundle, accelerator="cpu")


BASE = {
    "name": "t",
    "task": "multiclass",
    "labels": ["a", "b", "c"],
    "input": {"height": 8, "width": 8, "dtype": "uint8"},
    "output": {"activation": "softmax", "size": 3},
    "quantization": {"scheme": "int8"},
    "model_sha256": "0" * 64,
}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"output": {"activation": "softmax", "size": 4}}, "output.size: expected 3"),
        ({"labels": ["a", "a", "c"]}, "labels must be unique"),
        ({"task": "binary"}, "binary task needs 2 labels"),
        ({"thresholds": {"per_label": {"zzz": 0.4}}}, "unknown labels"),
        ({"task": "hierarchical"}, "needs a taxonomy"),
        (
            {
                "task": "hierarchical",
                "taxonomy": {"a": "x", "b": "x", "c": "y", "x": "y", "y": "x"},
            },
            "cycle",
        ),
        (
            {"task": "hierarchical", "taxonomy": {"a": "x", "b": "x", "c": "q", "x": None}},
            "parents that are not nodes",
        ),
        (
            {
                "input": {
                    "height": 8,
                    "width": 8,
                    "dtype": "uint8",
                    "normalization": {"std": [1, 0, 1]},
                }
            },
            "std must be positive",
        ),
    ],
)
def test_manifest_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        Manifest.model_validate(BASE | changes)


def test_write_bundle_is_atomic_and_round_trips(tmp_path, shipped_model):
    fields = {k: v for k, v in BASE.items() if k != "model_sha256"}
    model = (shipped_model / MODEL_FILE).read_bytes()
    out = tmp_path / "models" / "mine"
    first = write_bundle(out, model, fields | {"name": "first"})
    assert first.manifest.name == "first"
    # A failing write (invalid manifest) leaves the previous bundle untouched and no debris.
    with pytest.raises(BundleError, match=r"output.size"):
        write_bundle(out, model, fields | {"output": {"activation": "softmax", "size": 9}})
    assert load_bundle(out).manifest.name == "first"
    # So does a write that fails half way through (here: an extra file that cannot be created).
    with pytest.raises(FileNotFoundError):
        write_bundle(out, model, fields | {"name": "broken"}, {"no-such-dir/report.md": b"x"})
    assert load_bundle(out).manifest.name == "first"
    assert sorted(p.name for p in out.parent.iterdir()) == ["mine"]
    second = write_bundle(out, model, fields | {"name": "second"})
    assert second.manifest.name == "second"
    assert sorted(p.name for p in out.parent.iterdir()) == ["mine"]


@pytest.fixture
def shared_dir():
    """A folder another user can enter (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="kestrel-perm-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# Root reads any file whatever its mode: the child imports what it needs (the interpreter's
# own files sit in a folder only root may enter), then drops to ``nobody`` before it runs.
UNPRIVILEGED = """
import os, sys
import device.cli, device.inference.engine, device.inference.runtime
device.inference.runtime.find_runtime()
device.cli.build_parser()  # loads the entry points' modules
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
sys.exit(device.cli.main(sys.argv[1:]))
"""


def run_as_unprivileged(args: list[str]) -> subprocess.CompletedProcess:
    """``kestrel ARGS`` as a user that file permissions apply to."""
    return subprocess.run(
        [sys.executable, "-c", UNPRIVILEGED, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize("name", [MODEL_FILE, MANIFEST_FILE, LABELS_FILE, "."])
def test_an_unreadable_bundle_is_refused_naming_the_file(
    shared_dir, shipped_model, samples_dir, name
):
    bundle = shared_dir / "bundle"
    shutil.copytree(shipped_model, bundle)
    for path in (shared_dir, bundle, *bundle.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.copy(samples_dir / "coffee.jpg", shared_dir / "coffee.jpg")
    (shared_dir / "coffee.jpg").chmod(0o644)
    (bundle / name).chmod(0o000)
    result = run_as_unprivileged(
        ["classify", "--model", str(bundle), str(shared_dir / "coffee.jpg")]
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "Permission denied" in result.stderr and str(bundle) in result.stderr, result.stderr
