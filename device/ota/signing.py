"""Ed25519 signatures of pushed bundles (the ``cryptography`` package, imported when used).

What is signed is the sha256 of the bundle archive (:mod:`device.ota.archive`) behind a
fixed prefix, so a signature made for a bundle means nothing in any other context. Public keys
are PEM (``openssl pkey -pubout``) or the raw 32-byte key in base64; private keys are
unencrypted PEM (``openssl genpkey -algorithm ed25519``) or a raw 32-byte seed in base64.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

SIGNED_PREFIX = b"kestrel-ota-bundle-v1:"


class SigningError(ValueError):
    """A key that does not load, or a bundle whose signature is missing or wrong."""


def signed_message(archive_sha256: str) -> bytes:
    return SIGNED_PREFIX + archive_sha256.encode("ascii")


def _raw_base64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SigningError(f"{what}: neither PEM nor base64") from None
    if len(raw) != 32:
        raise SigningError(f"{what}: a raw Ed25519 key is 32 bytes, this one has {len(raw)}")
    return raw


def load_public_key(text: str) -> Ed25519PublicKey:
    """A trusted key from config text: PEM, or the raw 32-byte key in base64."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_public_key(text.strip().encode("ascii"))
        except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError) as exc:
            raise SigningError(f"not a PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SigningError(f"not an Ed25519 key but {type(key).__name__}")
        return key
    raw = _raw_base64(text, "public key")
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise SigningError(f"not an Ed25519 public key ({exc})") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The signing key of ``kestrel push --sign``: unencrypted PEM or a base64 seed."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise SigningError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise SigningError(f"{path}: not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningError(f"{path}: not an Ed25519 key but {type(key).__name__}")
        return key
    seed = _raw_base64(data.decode("ascii", errors="replace"), str(path))
    return Ed25519PrivateKey.from_private_bytes(seed)


def sign(archive_sha256: str, key: Ed25519PrivateKey) -> str:
    """The base64 signature the push sends with the first chunk."""
    return base64.b64encode(key.sign(signed_message(archive_sha256))).decode("ascii")


def key_id(key: Ed25519PublicKey) -> str:
    """A short fingerprint for logs: the first 16 hex digits of the raw key's sha256."""
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def verify(archive_sha256: str, signature: str | None, keys: Sequence[Ed25519PublicKey]) -> str:
    """Check ``signature`` against the trusted keys; returns the id of the key that made it.

    Raises :class:`SigningError` for an unsigned bundle, a malformed signature, or one that
    none of the keys made. Without trusted keys every bundle passes (returns "")."""
    if not keys:
        return ""
    from cryptography.exceptions import InvalidSignature

    if not signature:
        raise SigningError(
            "unsigned bundle: ota.trusted_keys is set, push it with kestrel push --sign KEY"
        )
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise SigningError("the signature is not base64") from None
    message = signed_message(archive_sha256)
    for key in keys:
        try:
            key.verify(raw, message)
            return key_id(key)
        except InvalidSignature:
            continue
    raise SigningError(f"wrong signature: made by none of the {len(keys)} trusted key(s)")
