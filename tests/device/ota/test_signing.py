"""Ed25519 signatures of pushed bundles, with real keys made by ``cryptography``."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from device.config import OtaConfig
from device.ota.signing import (
    SigningError,
    key_id,
    load_private_key,
    load_public_key,
    sign,
    verify,
)

SHA = hashlib.sha256(b"an archive").hexdigest()


def _raw_public(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def test_a_signature_verifies_with_the_pem_and_the_raw_public_key(signing_key):
    private_path, public_pem = signing_key
    private = load_private_key(private_path)
    signature = sign(SHA, private)
    for text in (public_pem, _raw_public(private)):
        key = load_public_key(text)
        assert verify(SHA, signature, [key]) == key_id(key)


def test_a_raw_base64_seed_signs_too(tmp_path):
    seed = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    path = tmp_path / "seed"
    path.write_text(base64.b64encode(seed).decode() + "\n")
    private = load_private_key(path)
    assert verify(SHA, sign(SHA, private), [load_public_key(_raw_public(private))])


def test_unsigned_wrongly_signed_and_other_bundles_are_refused(signing_key):
    private_path, public_pem = signing_key
    trusted = [load_public_key(public_pem)]
    signature = sign(SHA, load_private_key(private_path))
    with pytest.raises(SigningError, match="unsigned bundle"):
        verify(SHA, None, trusted)
    stranger = sign(SHA, Ed25519PrivateKey.generate())
    with pytest.raises(SigningError, match="wrong signature: made by none of the 1"):
        verify(SHA, stranger, trusted)
    other = hashlib.sha256(b"another archive").hexdigest()  # the signature of another bundle
    with pytest.raises(SigningError, match="wrong signature"):
        verify(other, signature, trusted)
    with pytest.raises(SigningError, match="not base64"):
        verify(SHA, "%%%", trusted)
    assert verify(SHA, None, []) == ""  # no trusted keys: nothing to check


def test_keys_that_are_not_ed25519_are_refused(tmp_path):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_public = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(SigningError, match="not an Ed25519 key"):
        load_public_key(ec_public.decode())
    with pytest.raises(SigningError, match="32 bytes, this one has 3"):
        load_public_key(base64.b64encode(b"abc").decode())
    with pytest.raises(SigningError, match="neither PEM nor base64"):
        load_public_key("not a key!")
    path = tmp_path / "ec.pem"
    path.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SigningError, match="not an Ed25519 key"):
        load_private_key(path)
    with pytest.raises(SigningError, match="cannot read"):
        load_private_key(tmp_path / "missing.pem")


def test_the_config_refuses_a_bad_trusted_key_naming_it(signing_key):
    OtaConfig(trusted_keys=[signing_key[1]])
    with pytest.raises(ValidationError, match=r"trusted_keys\[1\]: public key: neither PEM"):
        OtaConfig(trusted_keys=[signing_key[1], "garbage!"])
