"""What the MQTT publisher still has to send, and what it has handed to paho.

- States and events go to the on-disk :class:`~device.publish.spool.Spool` with a per-topic
  ``seq``: consecutive within a run, and above every earlier one after a restart, even onto a
  rolled-back or replaced queue file (the spool starts each run at the clock, in µs).
- Snapshots, source status and stats only keep the newest unsent value per topic, in memory.
- Spooled messages handed to paho are tracked by paho's message id until acknowledged; only
  then are they deleted from the spool.
- The newest retained message handed to paho per topic is remembered, to be sent again after
  a reconnect (a broker restarted without persistence has lost them).

Thread use: any thread adds messages; the publisher's sender thread does everything else,
except :meth:`Outbox.acknowledged` (paho's network thread) and :meth:`Outbox.hold` (paho's
disconnect callback).
"""

from __future__ import annotations

import collections
import threading
from pathlib import Path
from typing import Any, NamedTuple

from device.publish.spool import Spool, SpooledMessage
from device.publish.topics import encode_json

SPOOL_FILE = "mqtt-queue.sqlite3"


class LatestMessage(NamedTuple):
    """A message of which only the newest unsent one per topic matters."""

    body: bytes
    qos: int
    retain: bool


class Outbox:
    """The queue of pending MQTT messages; see the module docstring."""

    def __init__(self, state_dir: Path, max_messages: int) -> None:
        self._spool = Spool(Path(state_dir).expanduser() / SPOOL_FILE, max_messages)
        self._latest_lock = threading.Lock()
        self._latest: dict[str, LatestMessage] = {}
        self._acks: collections.deque[int] = collections.deque()  # mids from paho's on_publish
        # Sender-thread state: paho mid -> spool id of messages handed over and not yet acked.
        self._inflight: dict[int, int] = {}
        self._cursor = 0  # highest spool id handed to paho in this process
        self._holding = False  # set on disconnect: hand nothing new until the inflight is acked
        self._retained: dict[str, tuple[bytes, int]] = {}

    # -- adding (any thread) -------------------------------------------------------------

    def put_json(self, topic: str, body: dict[str, Any], qos: int, retain: bool) -> None:
        """Spool a JSON message, adding the topic's next ``seq`` unless the body has one.

        Raises ``RuntimeError`` once closed, ``sqlite3.Error`` / ``OSError`` when the disk
        fails."""
        if "seq" in body:
            self._spool.put(topic, encode_json(body), qos, retain)
            return

        def with_seq(seq: int) -> bytes:
            return encode_json(body | {"seq": seq})

        self._spool.put_sequenced(topic, with_seq, qos, retain, topic)

    def set_latest(self, topic: str, message: LatestMessage) -> None:
        """Replace the unsent value of ``topic``."""
        with self._latest_lock:
            self._latest[topic] = message

    def take_latest(self) -> dict[str, LatestMessage]:
        """Every unsent latest-only message; the outbox forgets them."""
        with self._latest_lock:
            latest, self._latest = self._latest, {}
        return latest

    def keep_latest(self, topic: str, message: LatestMessage) -> None:
        """Put back a message paho did not take, unless a newer one arrived meanwhile."""
        with self._latest_lock:
            self._latest.setdefault(topic, message)

    # -- paho's side ---------------------------------------------------------------------

    def acknowledged(self, mid: int) -> None:
        """paho reports message ``mid`` done. Lock-free: paho holds its message lock here."""
        self._acks.append(mid)

    def hold(self) -> None:
        """The connection dropped: paho re-sends what was in flight; let nothing overtake it."""
        self._holding = True

    # -- sender thread -------------------------------------------------------------------

    @property
    def holding(self) -> bool:
        return self._holding

    def collect_acks(self) -> int:
        """Delete the acknowledged messages from the spool; returns how many there were."""
        done: list[int] = []
        while self._acks:
            spool_id = self._inflight.pop(self._acks.popleft(), None)
            if spool_id is not None:
                done.append(spool_id)
        self._spool.remove(done)  # also retries deletes a full disk refused before
        if self._holding and not self._inflight:
            self._holding = False
        return len(done)

    def next_to_send(self, max_inflight: int) -> list[SpooledMessage]:
        """Spooled messages not yet handed to paho, leaving at most ``max_inflight`` in
        flight; none while holding after a reconnect."""
        if self._holding:
            return []
        room = max_inflight - len(self._inflight)
        if room <= 0:
            return []
        return self._spool.peek(room, after=self._cursor)

    def handed_over(self, message: SpooledMessage, mid: int | None) -> None:
        """paho took ``message``; ``mid`` to wait for, or None when it is done (QoS 0)."""
        if mid is not None:
            self._inflight[mid] = message.id
        if message.retain:
            self.remember_retained(message.topic, message.payload, message.qos)
        self._cursor = message.id

    def sent(self, spool_ids: list[int]) -> None:
        """QoS 0 messages paho wrote on a live connection: nothing more will come of them."""
        self._spool.remove(spool_ids)

    def remember_retained(self, topic: str, body: bytes, qos: int) -> None:
        self._retained[topic] = (body, qos)

    def retained(self) -> dict[str, tuple[bytes, int]]:
        """The newest retained message handed to paho per topic."""
        return dict(self._retained)

    # -- counters and state --------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Messages in the spool (sent ones included until acknowledged)."""
        return len(self._spool)

    @property
    def dropped(self) -> int:
        """Messages dropped because the spool was full, over the life of the file."""
        return self._spool.dropped

    def counters(self) -> dict[str, int | str | None]:
        """The publisher's stats about the queue: queued, dropped, queue_reset."""
        return {"queued": self.queued, "dropped": self.dropped, "queue_reset": self.queue_reset}

    @property
    def queue_reset(self) -> str | None:
        """Set when the queue file was corrupt at start: where it was moved, and why."""
        return self._spool.reset

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def idle(self) -> bool:
        """Nothing left to send and nothing waiting for an acknowledgement."""
        with self._latest_lock:
            latest = bool(self._latest)
        return not latest and not self._inflight and len(self._spool) == 0

    def close(self) -> None:
        self._spool.close()
