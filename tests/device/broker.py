"""Test helpers: a real mosquitto on a free 127.0.0.1 port, a subscriber, and a TCP gate.

- :class:`Mosquitto` writes a config file, starts the Debian ``mosquitto`` binary, waits until
  it accepts connections, and can stop (SIGTERM), kill (SIGKILL), pause (SIGSTOP) and restart
  it ON THE SAME PORT. Optional TLS (certificates made with the ``openssl`` CLI) and a password
  file (``mosquitto_passwd``).
- :class:`Subscriber` is a separate paho client that records every message it receives.
- :class:`TcpGate` is a relay between a client and the broker that the test can close and
  open. A test that restarts the broker lets its subscriber reconnect first and only then opens
  the gate, so no message reaches a broker before anyone listens (mosquitto without persistence
  forgets sessions when it dies).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt


def mosquitto_binary() -> str | None:
    """The broker executable (Debian installs it in /usr/sbin, often not on PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0, up: bool = True) -> None:
    """Wait until 127.0.0.1:port accepts connections (or refuses them, with ``up=False``)."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            accepting = sock.connect_ex(("127.0.0.1", port)) == 0
        if accepting == up:
            return
        if time.monotonic() > deadline:
            state = "accept" if up else "refuse"
            raise TimeoutError(f"127.0.0.1:{port} did not {state} connections in {timeout} s")
        time.sleep(0.02)


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_certificates(folder: Path) -> TlsFiles:
    """A throw-away CA and a server certificate for 127.0.0.1 / localhost (EC P-256: fast)."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(command: str) -> None:  # no argument here contains a space
        args = ["openssl", *command.split()]
        subprocess.run(args, cwd=folder, check=True, capture_output=True)

    ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
    openssl(f"req -x509 {ec} -keyout ca.key -out ca.crt -subj /CN=kestrel-test-ca")
    openssl(f"req {ec} -keyout server.key -out server.csr -subj /CN=localhost")
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
        "-out server.crt -extfile san.ext"
    )
    return TlsFiles(folder / "ca.crt", folder / "server.crt", folder / "server.key")


class Mosquitto:
    """One mosquitto process on a fixed port, restartable; see the module docstring."""

    def __init__(
        self,
        folder: Path,
        *,
        port: int | None = None,
        tls: TlsFiles | None = None,
        users: dict[str, str] | None = None,
        debug: bool = False,
    ) -> None:
        """``debug``: log every packet too (what :meth:`packets_from` reads)."""
        binary = mosquitto_binary()
        if binary is None:
            raise FileNotFoundError("mosquitto is not installed (apt install mosquitto)")
        self.binary = binary
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.folder / "mosquitto.log"
        self.config_path = self.folder / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            "set_tcp_nodelay true",
            "max_queued_messages 100000",
            "max_inflight_messages 0",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if debug:
            lines.append("log_type debug")
        if os.geteuid() == 0:
            lines.append(f"user {getpass.getuser()}")  # else it switches to user "mosquitto"
        if users:
            passwd = self.folder / "passwd"
            passwd.write_text("")
            for user, password in users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(passwd), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}"]
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> Mosquitto:
        if self.running:
            return self
        # Appending: the log of every run of this broker stays readable after a failure.
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_port(self.port, timeout)
        except TimeoutError:
            self.kill()
            raise RuntimeError(f"mosquitto did not start; log:\n{self.log()}") from None
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, the usual service stop."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without closing anything cleanly."""
        self._signal(signal.SIGKILL, 5.0)

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing is read or answered."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGSTOP)

    def restart(self, kill: bool = True, timeout: float = 10.0) -> None:
        """Kill (or stop) and start again on the same port."""
        self.kill() if kill else self.stop()
        wait_for_port(self.port, timeout, up=False)
        self.start(timeout)

    def _signal(self, sig: int, timeout: float) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def packets_from(self, client_id: str) -> list[str]:
        """What the client itself sent, in order (needs ``debug=True``): ``"PUBLISH topic
        <size>"`` and ``"DISCONNECT"``. A last will never appears here: the broker publishes
        it for a client that is gone, and only after a connection ends without DISCONNECT."""
        packets = []
        for line in self.log().splitlines():
            if (match := _RECEIVED.search(line)) and match["client"] == client_id:
                kind = match["kind"]
                packets.append(
                    f"PUBLISH {match['topic']} {match['size']}" if kind == "PUBLISH" else kind
                )
        return packets


# mosquitto's debug log of a packet from a client, e.g.
# "Received PUBLISH from kestrel-x (d0, q1, r1, m1, 'kestrel/x/available', ... (7 bytes))"
_RECEIVED = re.compile(
    r"Received (?P<kind>PUBLISH|DISCONNECT) from (?P<client>\S+)"
    r"(?: \([^']*'(?P<topic>[^']*)', \.\.\. \((?P<size>\d+) bytes\)\))?"
)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int


class Subscriber:
    """A separate MQTT client that records (topic, payload, retain, qos) of every message."""

    def __init__(
        self,
        port: int,
        topics: Iterable[str] = ("#",),
        *,
        host: str = "127.0.0.1",
        qos: int = 1,
        client_id: str = "test-subscriber",
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.topics = list(topics)
        self.qos = qos
        self.messages: list[Received] = []
        self.subscriptions = 0  # how many times the subscription was (re)made
        self._cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.reconnect_delay_set(0.05, 0.2)
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            self.client.tls_set(ca_certs=str(ca_file))
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe([(t, self.qos) for t in self.topics])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._cond:
            self.subscriptions += 1
            self._cond.notify_all()

    def _on_message(self, client, userdata, message) -> None:
        with self._cond:
            self.messages.append(
                Received(message.topic, bytes(message.payload), bool(message.retain), message.qos)
            )
            self._cond.notify_all()

    def wait_subscribed(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until the subscription was made ``count`` times in total (1 after the first
        connect, 2 after a broker restart, ...)."""
        self.wait_until(lambda: self.subscriptions >= count, timeout, "subscription")

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0
    ) -> list[Received]:
        """Wait until ``predicate(messages)`` holds; returns a copy of the messages."""
        self.wait_until(lambda: predicate(self.messages), timeout, "messages")
        return self.received()

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [(m.topic, m.payload[:80]) for m in self.messages[-10:]]
                    raise TimeoutError(f"no {what} in {timeout} s; last messages: {got}")
                self._cond.wait(left)

    def received(self, topic: str | None = None) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if topic is None or m.topic == topic]

    def payloads(self, topic: str) -> list[bytes]:
        return [m.payload for m in self.received(topic)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class TcpGate:
    """A TCP relay 127.0.0.1:port -> 127.0.0.1:target that can be closed and reopened.

    Closed: the port refuses connections (like a broker that is down) and the relayed
    connections are cut. Open: each accepted connection is relayed to the target; if the
    target refuses, the client's connection is closed at once.
    """

    def __init__(self, target_port: int, *, open_: bool = True) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        if open_:
            self.open()

    def open(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(16)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in sockets:
            self._drop(sock)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
                upstream.settimeout(None)
            except OSError:
                self._drop(client)
                continue
            with self._lock:
                if self._listener is not listener:  # closed meanwhile
                    self._drop(client)
                    self._drop(upstream)
                    return
                self._sockets |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        # One side ended (or was reset): cut both, as a dying broker would.
        self._drop(src)
        self._drop(dst)

    @staticmethod
    def _drop(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
