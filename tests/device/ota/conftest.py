"""Fixtures of the model-update tests: a second valid bundle, signing keys, and (for the
daemon tests) the ``kestrel run`` helpers of tests/device/run, reused rather than copied."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from device.paths import DEFAULT_MODEL

_RUN_TESTS = Path(__file__).resolve().parents[1] / "run"
if str(_RUN_TESTS) not in sys.path:
    sys.path.insert(0, str(_RUN_TESTS))  # daemon_process, as the run tests import it


def _run_fixtures():
    spec = importlib.util.spec_from_file_location(
        "kestrel_run_fixtures", _RUN_TESTS / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_run = _run_fixtures()
photos = _run.photos  # the cat and coffee sample photos at the video size
start_daemon = _run.start_daemon  # daemons killed at the end, their logs printed


def renamed_bundle(folder: Path, name: str) -> Path:
    """A copy of the shipped bundle under another name: a second valid, distinct bundle (its
    archive differs; the model file, and so model_sha256, is the same)."""
    shutil.copytree(DEFAULT_MODEL, folder)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["name"] = name
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


@pytest.fixture(scope="session")
def bundle_b(tmp_path_factory) -> Path:
    return renamed_bundle(tmp_path_factory.mktemp("bundles") / "door-v2", "door-v2")


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory):
    """(private key PEM file, public key PEM text) of a fresh Ed25519 key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    path = tmp_path_factory.mktemp("keys") / "ota.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return path, public.decode("ascii")
