"""A bundle that carries ``model_edgetpu.tflite`` (edgetpu_compiler's output): the Edge TPU's
child runs that file, the CPU fallback the plain model, and the file is held to its hash like
the model itself. (The fake Coral's delegate runs any model, so the "compiled" file here is a
copy of the plain one with a byte of padding: a different file, with a different hash.)"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from inference.fake_edgetpu import FakeCoral

from device.inference.bundle import EDGETPU_MODEL_FILE, BundleError, load_bundle, sha256_file
from device.inference.engine import Classifier
from device.inference.preprocess import read_image


def mapped(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` mapped (the runtime mmaps the model it runs)."""
    return str(path.resolve()) in Path(f"/proc/{pid}/maps").read_text()


def with_edgetpu_model(shipped_model: Path, folder: Path, recorded_hash: str | None) -> Path:
    bundle = folder / "bundle"
    shutil.copytree(shipped_model, bundle)
    compiled = bundle / EDGETPU_MODEL_FILE
    compiled.write_bytes((bundle / "model.tflite").read_bytes() + b"\0")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["edgetpu_model_sha256"] = recorded_hash or sha256_file(compiled)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def test_the_edge_tpu_runs_the_compiled_model_and_the_cpu_the_plain_one(
    shipped_model, tmp_path, samples_dir
):
    bundle = with_edgetpu_model(shipped_model, tmp_path, None)
    coral = FakeCoral(tmp_path / "coral")
    classifier = Classifier(bundle, accelerator="edgetpu", runtime_factory=coral.runtime_factory)
    try:
        child = classifier.accelerator_process
        assert classifier.accelerator == "edgetpu" and child is not None
        assert mapped(child.pid, bundle / EDGETPU_MODEL_FILE)
        assert not mapped(child.pid, bundle / "model.tflite")
        assert mapped(os.getpid(), bundle / "model.tflite")  # the warm CPU interpreter's
        cat = read_image(str(samples_dir / "cat-chelsea.jpg"))
        assert classifier.classify(cat).label == "cat"
        coral.plugged = False  # the next invoke aborts the child: the CPU answers
        assert classifier.classify(cat).label == "cat" and classifier.accelerator == "cpu"
    finally:
        classifier.close()


def test_a_compiled_model_that_does_not_match_its_hash_is_refused(shipped_model, tmp_path):
    bundle = with_edgetpu_model(shipped_model, tmp_path, "0" * 64)
    with pytest.raises(BundleError, match=EDGETPU_MODEL_FILE) as info:
        load_bundle(bundle)
    assert "edgetpu_model_sha256" in str(info.value)
