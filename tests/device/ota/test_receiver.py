"""The receiver assembles the real chunks of the shipped bundle's archive, and refuses broken
transfers: out of order, missing, damaged, oversize, a wrong archive hash, stalled."""

from __future__ import annotations

import hashlib
import json

import pytest

from device.ota.archive import pack
from device.ota.protocol import Chunk, ProtocolError, Rollback, chunk_messages, decode, encode
from device.ota.protocol import rollback_message as rollback
from device.ota.receiver import Received, Receiver, Refused, Started
from device.paths import DEFAULT_MODEL

MIB = 1 << 20


@pytest.fixture(scope="module")
def archive() -> bytes:
    return pack(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def messages(archive) -> list[bytes]:
    return chunk_messages(archive, request="push-1", name="lite0", signature="c2ln")


def _receiver(tmp_path, max_mb: float = 64, timeout: float = 60) -> Receiver:
    return Receiver(tmp_path / "incoming", int(max_mb * MIB), timeout)


def _rewrite(message: bytes, **changes) -> bytes:
    header, data = decode(message)
    return encode(header.model_copy(update=changes), data)


def test_chunks_in_order_make_the_archive(tmp_path, archive, messages):
    receiver = _receiver(tmp_path)
    results = [receiver.feed(m, now=0.0) for m in messages]
    assert isinstance(results[0], Started) and results[0].chunk.signature == "c2ln"
    assert results[1:-1] == [None] * (len(messages) - 2)
    done = results[-1]
    assert isinstance(done, Received)
    assert done.path.read_bytes() == archive
    assert done.chunk.sha256 == hashlib.sha256(archive).hexdigest()
    assert len(messages) == -(-len(archive) // (64 * 1024))  # 64 KiB chunks


def test_a_repeated_chunk_is_ignored(tmp_path, archive, messages):
    receiver = _receiver(tmp_path)
    for i, message in enumerate(messages[:-1]):
        receiver.feed(message)
        if i in (0, 5):
            assert receiver.feed(message) is None  # QoS 1 re-delivery
    assert isinstance(receiver.feed(messages[-1]), Received)


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        (lambda ms: [ms[0], ms[1], ms[3]], r"chunk 3 of \d+ arrived after chunk 1"),
        (lambda ms: [ms[0], ms[2], ms[1]], r"chunk 2 of \d+ arrived after chunk 0"),
        (lambda ms: [ms[1]], r"chunk 1 of \d+ arrived first: chunks 0 to 0 are missing"),
    ],
    ids=["missing", "swapped", "first-missing"],
)
def test_out_of_order_or_missing_chunks_refuse_the_transfer(tmp_path, messages, order, expected):
    receiver = _receiver(tmp_path)
    with pytest.raises(Refused, match=expected) as refused:
        for message in order(messages):
            receiver.feed(message)
    assert refused.value.request == "push-1" and refused.value.name == "lite0"
    assert list((tmp_path / "incoming").glob("*")) == []  # the partial file is gone
    # The rest of that transfer is not refused again, chunk by chunk.
    assert all(receiver.feed(m) is None for m in messages[4:8])


def test_a_damaged_chunk_is_refused(tmp_path, messages):
    receiver = _receiver(tmp_path)
    receiver.feed(messages[0])
    damaged = bytearray(messages[1])
    damaged[-100] ^= 0xFF
    with pytest.raises(Refused, match="chunk 1: sha256 mismatch"):
        receiver.feed(bytes(damaged))


def test_an_archive_that_does_not_hash_as_announced_is_refused(tmp_path, messages):
    receiver = _receiver(tmp_path)
    forged = [_rewrite(m, sha256="0" * 64) for m in messages]  # every chunk fine on its own
    with pytest.raises(Refused, match=f"announced {'0' * 64}, got "):
        for message in forged:
            receiver.feed(message)
    assert list((tmp_path / "incoming").glob("*")) == []


def test_an_oversize_bundle_is_refused_before_anything_is_written(tmp_path, messages):
    receiver = _receiver(tmp_path, max_mb=4)
    with pytest.raises(Refused, match=r"the bundle is 5.1 MiB, over ota.max_mb \(4 MiB\)"):
        receiver.feed(messages[0])
    assert not (tmp_path / "incoming").exists()


def test_bytes_beyond_the_announced_size_are_refused(tmp_path, archive):
    small = chunk_messages(archive[:100_000], request="r", name="x", chunk_bytes=50_000)
    header, data = decode(small[1])
    grown = encode(header, data + b"more")
    fixed = _rewrite(grown, chunk_sha256=hashlib.sha256(data + b"more").hexdigest())
    receiver = _receiver(tmp_path)
    receiver.feed(small[0])
    with pytest.raises(Refused, match="more bytes than the 100000 announced"):
        receiver.feed(fixed)


def test_a_chunk_that_disagrees_with_the_first_is_refused(tmp_path, messages):
    receiver = _receiver(tmp_path)
    receiver.feed(messages[0])
    with pytest.raises(Refused, match="chunk 1 disagrees with chunk 0's header"):
        receiver.feed(_rewrite(messages[1], name="another"))


def test_a_stalled_transfer_expires(tmp_path, messages):
    receiver = _receiver(tmp_path, timeout=30)
    for message in messages[:3]:
        receiver.feed(message, now=100.0)
    assert receiver.expire(now=129.0) == []
    (refused,) = receiver.expire(now=131.0)
    assert refused.reason == (
        f"transfer stalled: 3 of {len(messages)} chunks received, nothing for 30 s (chunks missing)"
    )
    assert list((tmp_path / "incoming").glob("*")) == []


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"hello", "no JSON header line"),
        (b'{"kestrel_ota": 1}\n', "kind"),
        (b'{"kestrel_ota": 2, "kind": "rollback", "request": "r"}\n', "kestrel_ota"),
        (b"[1, 2]\n", "not a model update message"),
        (b'{"kind": "rollback", "request": "../x"}\n', "request"),
        (b'{"kind": "rollback", "request": "r", "extra": 1}\n', "extra"),
        (b'{"kind": "rollback", "request": "r"}\nsome data', "carries no data"),
    ],
)
def test_what_is_not_a_model_update_message_is_refused(tmp_path, payload, expected):
    with pytest.raises(Refused, match=expected) as refused:
        _receiver(tmp_path).feed(payload)
    assert refused.value.request is None


def test_index_beyond_count_is_not_a_chunk():
    header = json.loads(
        decode(chunk_messages(b"abc", request="r", name="n")[0])[0].model_dump_json()
    )
    header["index"] = 1
    with pytest.raises(ProtocolError, match="index 1 is not below count 1"):
        decode(json.dumps(header).encode() + b"\nabc")


def test_a_rollback_is_passed_on(tmp_path):
    result = _receiver(tmp_path).feed(rollback("r-2", camera="door"))
    assert result == Rollback(request="r-2", camera="door")
    assert isinstance(decode(chunk_messages(b"x", request="r", name="n")[0])[0], Chunk)


def test_a_disk_that_refuses_the_write_refuses_the_transfer(tmp_path, messages):
    (tmp_path / "incoming").write_text("a file where the folder should be")
    with pytest.raises(Refused, match=r"cannot store the bundle: .*(File exists|Not a directory)"):
        _receiver(tmp_path).feed(messages[0])
