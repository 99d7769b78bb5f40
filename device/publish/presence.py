"""Who holds a ``device_id`` on the broker: two daemons with the same id must not share its
topics (the second's retained ``offline`` at exit would lie about the first).

Each publisher claims the id with a retained JSON message on ``<prefix>/instance``
(``instance``, ``host``, ``pid``, ``started``, and ``claims``: one more at every connect) at
every connect, and subscribes to it. Another instance's claim is a sign of life when it is
delivered live (as it is published), or found retained with more ``claims`` than seen before
(it reconnected meanwhile: two daemons with one client id take the connection from each other,
and mosquitto 2.0 says nothing but closes the socket):

- A claim found retained at the first subscribe is someone's earlier claim: a live instance,
  or a stale one (a daemon that was killed). It is remembered, not acted on.
- A sign of life from the instance found so -> it was here first: *refuse*.
- A live claim from any other instance -> a newcomer claimed the id after us: *reassert* our
  claim once (the newcomer then sees a live claim from the one it found retained, and
  refuses). A second live claim from the same instance (both started at once) is settled by
  the earlier ``started``, then the instance id.

A connection publishes nothing spooled until it is *settled*: our own claim came back (so
every retained claim has been seen), plus ``GRACE`` seconds on the first connect when a claim
was found retained (time for a live holder to answer); ``CLAIM_WAIT`` seconds at most (a broker
whose ACL hides the instance topic). A refused newcomer so overwrites none of the holder's
retained states.

Refusing is the publisher's job (:mod:`device.publish.mqtt`): it logs an error naming the
holder, disconnects for good, and publishes no ``offline`` at exit; the daemon keeps running.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from device.publish.payloads import now_iso
from device.publish.topics import encode_json

Verdict = Literal["ok", "reassert", "refuse"]

GRACE = 1.0  # seconds for a live holder to answer our claim
CLAIM_WAIT = 2.0  # seconds at most before publishing when our claim never comes back


class Presence:
    """This process's claim of a device id, and the verdicts on the claims it sees."""

    def __init__(self) -> None:
        started = time.time()
        self.claim: dict[str, Any] = {
            "instance": uuid.uuid4().hex,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": now_iso(started),
            "started_ts": round(started, 6),
            "claims": 0,
        }
        self._lock = threading.Lock()
        self._confirmed = False  # our claim came back: later retained ones are no rivals
        self._older: dict[str, Any] | None = None  # found retained before our first claim
        self._reasserted: set[str] = set()
        self._seen: dict[str, int] = {}  # instance -> the most claims seen of it
        self.holder: dict[str, Any] | None = None  # who made us refuse
        self._generation = 0  # one per connection: timers of an old one do nothing
        self._settled = -1
        self._settle: Callable[[], None] = lambda: None

    @property
    def instance(self) -> str:
        return self.claim["instance"]

    def payload(self) -> bytes:
        return encode_json(self.claim)

    def claim_again(self) -> bytes:
        """The claim of a new connection."""
        with self._lock:
            self.claim["claims"] += 1
            return encode_json(self.claim)

    def connecting(self, settle: Callable[[], None]) -> None:
        """A new connection just claimed the id; ``settle()`` is called once it may publish."""
        with self._lock:
            self._generation += 1
            self._settle = settle
            generation = self._generation
        self._later(CLAIM_WAIT, generation)

    def disconnected(self) -> None:
        with self._lock:
            self._generation += 1

    def judge(self, payload: bytes, retained: bool) -> Verdict:
        """The verdict on one message of the instance topic."""
        claim = parse(payload)
        if claim is None:
            return "ok"  # cleared (empty) or not a claim
        with self._lock:
            if claim["instance"] == self.instance:
                first, self._confirmed = not self._confirmed, True
                wait = GRACE if first and self._older is not None else 0.0
                generation = self._generation
            else:
                return self._judge_other(claim, retained)
        self._later(wait, generation)
        return "ok"

    def _judge_other(self, claim: dict[str, Any], retained: bool) -> Verdict:
        """Another instance's claim (the lock held)."""
        instance, claims = claim["instance"], _int(claim.get("claims"))
        before = self._seen.get(instance)
        self._seen[instance] = max(claims, before or 0)
        if retained and not self._confirmed:
            self._older = claim
            return "ok"
        alive = not retained or (before is not None and claims > before)
        if not alive:
            return "ok"
        if self._older is not None and instance == self._older["instance"]:
            return self._refuse(claim)
        if retained:
            return "ok"  # claimed while we were away; our claim at this connect answers it
        if claim["instance"] not in self._reasserted:
            self._reasserted.add(claim["instance"])
            return "reassert"
        mine = (self.claim["started_ts"], self.instance)
        theirs = (float(claim.get("started_ts") or 0.0), claim["instance"])
        return self._refuse(claim) if theirs < mine else "reassert"

    def _later(self, seconds: float, generation: int) -> None:
        if seconds <= 0:
            self._settle_now(generation)
            return
        timer = threading.Timer(seconds, self._settle_now, args=(generation,))
        timer.daemon = True
        timer.start()

    def _settle_now(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation or self._settled == generation or self.holder:
                return
            self._settled = generation
            settle = self._settle
        settle()

    def _refuse(self, claim: dict[str, Any]) -> Verdict:
        self.holder = claim
        return "refuse"

    def refusal_text(self, device_id: str, address: str) -> str:
        return (
            f"device_id {device_id!r} is already in use on {address} by "
            f"{self.describe(self.holder)}; not publishing (give this daemon its own "
            "device_id, or stop the other one)"
        )

    def newcomer_text(self, payload: bytes, device_id: str) -> str:
        return (
            f"{self.describe(parse(payload))} connected with device_id {device_id!r} too; "
            "this instance keeps it (the other one should stop publishing)"
        )

    @staticmethod
    def describe(claim: dict[str, Any] | None) -> str:
        if claim is None:
            return "another kestrel"
        return (
            f"kestrel on host {claim.get('host', '?')} (pid {claim.get('pid', '?')}, "
            f"started {claim.get('started', '?')})"
        )


def parse(payload: bytes) -> dict[str, Any] | None:
    try:
        claim = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(claim, dict) or not isinstance(claim.get("instance"), str):
        return None
    return claim


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0
