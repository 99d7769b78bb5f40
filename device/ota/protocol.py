"""Model update messages on the wire: the chunks of a bundle archive, and rollbacks.

Every message to ``<prefix>/model/set`` (or ``<topic_prefix>/group/<g>/model/set``) is a
one-line JSON header, a newline, and the chunk's bytes::

    {"kestrel_ota":1,"kind":"chunk","request":"1718000000-3fa2c1d0","camera":null,
     "index":0,"count":81,"size":5304320,"sha256":"<archive>","chunk_sha256":"<these bytes>",
     "name":"<bundle name>","signature":"<base64 Ed25519, first chunk only>"}
    <up to CHUNK_BYTES bytes>

A rollback is a header alone (``"kind":"rollback"``). ``request`` ties the device's status
messages to the push that caused them. Chunks go with QoS 1: in order and at least once per
subscriber, so the receiver ignores a repeated chunk and refuses a gap. 64 KiB chunks pass
brokers with small packet limits (AWS IoT: 128 KB) and mosquitto's defaults alike.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from device.config.section import TOPIC_SAFE

PROTOCOL = 1
CHUNK_BYTES = 64 * 1024
MAX_HEADER_BYTES = 4096
SHA256_PATTERN = r"^[0-9a-f]{64}$"
REQUEST_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class ProtocolError(ValueError):
    """A message that is not a valid model update message; the text says what is wrong."""


class _Header(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kestrel_ota: Literal[1] = PROTOCOL
    request: str = Field(pattern=REQUEST_PATTERN)
    camera: str | None = Field(None, pattern=TOPIC_SAFE)


class Chunk(_Header):
    """One piece of a bundle archive."""

    kind: Literal["chunk"] = "chunk"
    index: int = Field(ge=0)
    count: int = Field(ge=1)
    size: int = Field(ge=1, description="Bytes of the whole archive.")
    sha256: str = Field(pattern=SHA256_PATTERN, description="Of the whole archive.")
    chunk_sha256: str = Field(pattern=SHA256_PATTERN, description="Of this chunk's bytes.")
    name: str = Field(min_length=1, max_length=200, description="The bundle's name.")
    signature: str | None = Field(None, max_length=200)

    @model_validator(mode="after")
    def _index_in_range(self) -> Chunk:
        if self.index >= self.count:
            raise ValueError(f"index {self.index} is not below count {self.count}")
        return self


class Rollback(_Header):
    """Go back to the bundle that was active before the current one."""

    kind: Literal["rollback"] = "rollback"


Message = Chunk | Rollback
_MESSAGE: TypeAdapter[Message] = TypeAdapter(
    Annotated[Chunk | Rollback, Field(discriminator="kind")]
)


def new_request() -> str:
    """A request id: the time (so ids sort) and randomness (so two pushes never share one)."""
    return f"{int(time.time())}-{secrets.token_hex(4)}"


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'header'}: {e['msg']}" for e in exc.errors()
    )


def decode(payload: bytes) -> tuple[Message, bytes]:
    """(header, data) of a message; :class:`ProtocolError` when it is none of ours. The
    chunk's own hash is checked by the receiver, which knows what to drop when it fails."""
    newline = payload.find(b"\n", 0, MAX_HEADER_BYTES)
    if newline < 0:
        raise ProtocolError(
            f"not a model update message (no JSON header line in its first {MAX_HEADER_BYTES} "
            f"bytes; {len(payload)} bytes in all)"
        )
    try:
        header = _MESSAGE.validate_json(payload[:newline])
    except ValidationError as exc:
        raise ProtocolError(f"not a model update message ({_describe(exc)})") from None
    data = payload[newline + 1 :]
    if isinstance(header, Rollback) and data:
        raise ProtocolError("a rollback message carries no data")
    return header, data


def encode(header: Message, data: bytes = b"") -> bytes:
    return header.model_dump_json().encode("utf-8") + b"\n" + data


def chunk_messages(
    archive: bytes,
    *,
    request: str,
    name: str,
    camera: str | None = None,
    signature: str | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> list[bytes]:
    """The messages that carry ``archive``; the signature rides on the first."""
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    sha = hashlib.sha256(archive).hexdigest()
    pieces = [archive[i : i + chunk_bytes] for i in range(0, len(archive), chunk_bytes)]
    return [
        encode(
            Chunk(
                request=request,
                camera=camera,
                index=i,
                count=len(pieces),
                size=len(archive),
                sha256=sha,
                chunk_sha256=hashlib.sha256(piece).hexdigest(),
                name=name,
                signature=signature if i == 0 else None,
            ),
            piece,
        )
        for i, piece in enumerate(pieces)
    ]


def rollback_message(request: str, camera: str | None = None) -> bytes:
    return encode(Rollback(request=request, camera=camera))
