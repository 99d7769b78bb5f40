"""Every refusal with a really broken bundle, sent to a running daemon that trusts one signing
key: each is reported ``rejected`` with its reason, and the daemon classifies on with the
model it had. Then a good signed bundle goes in."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import tarfile

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from daemon_process import START_TIMEOUT, started
from ota_daemon import Pusher, ota_config, states, stats, statuses, subscriptions_of, wait_answer

from device.ota.archive import pack
from device.ota.protocol import chunk_messages, decode, encode, rollback_message
from device.ota.signing import load_private_key, sign

ORIGINAL = "imagenet-efficientnet-lite0"


def _messages(
    archive: bytes, key, request: str, sha: str | None = None, camera: str | None = None
) -> list[bytes]:
    """The chunks of ``archive``, signed by ``key`` (None: unsigned); ``sha`` announces
    another archive hash (signed as announced)."""
    true_sha = hashlib.sha256(archive).hexdigest()
    announced = sha or true_sha
    signature = sign(announced, key) if key is not None else None
    messages = chunk_messages(
        archive, request=request, name="broken", signature=signature, camera=camera
    )
    if sha is None:
        return messages
    return [encode(h.model_copy(update={"sha256": sha}), d) for h, d in map(decode, messages)]


def _tar(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, linkname
        data = b"evil\n" if kind == tarfile.REGTYPE else b""
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _edited_copy(bundle, folder, edit) -> bytes:
    shutil.copytree(bundle, folder)
    edit(folder)
    return pack(folder)


def _tamper_model(folder) -> None:
    data = bytearray((folder / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "model.tflite").write_bytes(bytes(data))


def _wrong_input_size(folder) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["input"]["height"] = 200
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_broken_bundles_are_refused_and_the_old_model_keeps_classifying(
    tmp_path, photos, debug_mosquitto, make_subscriber, start_daemon, bundle_b, signing_key
):
    key_path, public_pem = signing_key
    key = load_private_key(key_path)
    ota = {"trusted_keys": [public_pem], "max_mb": 6, "transfer_timeout": 1.0, "groups": ["barn"]}
    port = debug_mosquitto.port
    sub = make_subscriber(port, ["kestrel/#"])
    sub.wait_subscribed()
    daemon = start_daemon(ota_config(tmp_path / "dev", port, photos, ota=ota))
    started(daemon, sub)
    sub.wait_for(lambda ms: any(s["label"] for s in states(sub)[-1:]), START_TIMEOUT)
    good = pack(bundle_b)
    padded = tmp_path / "padded"
    oversize = _edited_copy(
        bundle_b, padded, lambda f: (f / "padding.bin").write_bytes(os.urandom(1 << 20))
    )
    cases = {
        "unsigned": (_messages(good, None, "unsigned"), "signature: unsigned bundle"),
        "wrong-signature": (
            _messages(good, Ed25519PrivateKey.generate(), "wrong-signature"),
            "signature: wrong signature",
        ),
        "oversize": (_messages(oversize, key, "oversize"), "over ota.max_mb (6 MiB)"),
        "dotdot": (_messages(_tar("../evil.txt"), key, "dotdot"), "outside the bundle folder"),
        "absolute": (_messages(_tar("/tmp/kestrel-evil"), key, "absolute"), "an absolute path"),
        "symlink": (
            _messages(_tar("model.tflite", tarfile.SYMTYPE, "/etc/passwd"), key, "symlink"),
            "a link to '/etc/passwd'",
        ),
        "device": (_messages(_tar("null", tarfile.CHRTYPE), key, "device"), "a device or FIFO"),
        "wrong-hash": (
            _messages(good, key, "wrong-hash", sha="0" * 64),
            f"archive sha256 mismatch: announced {'0' * 64}",
        ),
        "out-of-order": (
            (lambda ms: [ms[0], ms[2], ms[1], *ms[3:]])(_messages(good, key, "out-of-order")),
            "chunk 2 of 82 arrived after chunk 0: chunks out of order or missing",
        ),
        "missing-last": (
            _messages(good, key, "missing-last")[:-1],
            "transfer stalled: 81 of 82 chunks received, nothing for 1 s (chunks missing)",
        ),
        "truncated": (
            _messages(good[: len(good) // 2 + 1234], key, "truncated"),
            "archive: not a complete tar archive",
        ),
        "model-hash": (
            _messages(
                _edited_copy(bundle_b, tmp_path / "tampered", _tamper_model), key, "model-hash"
            ),
            "model_sha256: expected",
        ),
        "no-such-camera": (
            _messages(good, key, "no-such-camera", camera="gate"),
            "no camera named 'gate' on this device (it has door)",
        ),
        "rollback-to-nothing": ([rollback_message("rollback-to-nothing")], "no previous model"),
        "tensor-shape": (
            _messages(
                _edited_copy(bundle_b, tmp_path / "shape", _wrong_input_size), key, "tensor-shape"
            ),
            "failed to load: ",
        ),
    }
    pusher = Pusher(port)
    try:
        pusher.send([b"\x89PNG this is no model update"])
        sub.wait_for(
            lambda ms: any("not a model update message" in s["reason"] for s in statuses(sub)),
            START_TIMEOUT,
        )
        for request, (messages, reason) in cases.items():
            pusher.send(messages)
            answer = wait_answer(sub, request, timeout=30)
            assert answer["status"] == "rejected", (request, answer)
            assert reason in answer["reason"], (request, answer["reason"])
            assert states(sub)[-1]["model"]["name"] == ORIGINAL, request
        counted = stats(sub)[-1]["cameras"]["door"]["inferences"]
        sub.wait_for(lambda ms: stats(sub)[-1]["cameras"]["door"]["inferences"] > counted + 5)
        assert stats(sub)[-1]["cameras"]["door"]["errors"] == 0
        store = tmp_path / "dev" / "state" / "models"
        assert [p.name for p in store.iterdir() if p.is_dir() and p.name != ".incoming"] == []
        assert not list((store / ".incoming").glob("*"))
        assert not (tmp_path / "dev" / "state" / "evil.txt").exists()
        assert not os.path.exists("/tmp/kestrel-evil")

        # The same bundle, signed: taken.
        pusher.send(_messages(good, key, "signed"))
        answer = wait_answer(sub, "signed", timeout=30)
        assert answer["status"] == "active" and answer["reason"].startswith("signed by key ")
    finally:
        pusher.close()
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    # Only the command topics were subscribed: this device's and its group's.
    assert subscriptions_of(debug_mosquitto.log(), "kestrel-testdev-ota") == [
        "kestrel/testdev/model/set",
        "kestrel/group/barn/model/set",
    ]
