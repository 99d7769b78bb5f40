"""The Edge TPU in a child process: libedgetpu aborts the whole process on a USB transfer error
(``F driver/usb/usb_driver.cc ... Abort``), so the interpreter with its delegate lives in a
process of its own (Frigate runs its detectors so) and the daemon outlives it.

One child per Coral serves every model that runs on it (a cascade's stages, a model update
being tried): a USB Coral opened by a second process makes the first one abort (google-coral/
edgetpu #237, #645), and a PCIe one refuses the second. Invokes are taken one at a time.

Frames go in and outputs come back through two shared-memory buffers per model, sized from
its tensors; the socket carries short signals only (``a`` + a pickled spec to add a model,
``g`` + the model's number to go, ``r`` + number to remove it, ``d`` done + the child's time
in ns, ``e`` + message for an error the child survived, ``q`` quit), so no frame is pickled.
A child that dies (any signal, any exit) or stops answering raises :class:`AcceleratorFailed`
for every model on it; each answers on its CPU interpreter (see
:class:`device.inference.engine.Classifier`), and the next start is a new child.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import numpy as np

from device.inference.runtime import Runtime, find_runtime, new_interpreter, open_edgetpu

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0  # spawn, import the runtime, load the delegate, first invoke (a Pi is slow)
INVOKE_TIMEOUT_S = 10.0  # a hung USB transfer: give up on the child, answer on the CPU
ADD, GO, REMOVE, DONE, ERROR, QUIT = b"a", b"g", b"r", b"d", b"e", b"q"
_DETAIL_KEYS = ("index", "shape", "dtype", "quantization")
_ENTRY = "from device.inference.edgetpu_child import child_main; child_main"


class AcceleratorUnavailable(RuntimeError):
    """The child could not start an interpreter on the accelerator (the reason says why)."""


class AcceleratorFailed(RuntimeError):
    """The child died, hung or failed an invoke: this frame needs another interpreter."""


@dataclass(frozen=True)
class ChildSpec:
    """What the child builds; pickled once, at start (never a frame)."""

    model_path: Path
    threads: int
    # Called in the child; module-level (picklable). Tests pass a fake Coral's factory.
    runtime_factory: Callable[[], Runtime] = find_runtime
    device: str | None = None
    delegate: bool = True  # False: the CPU in the child (to measure the hop, bench/edgetpu_hop.py)


def _details(interpreter: Any) -> tuple[dict, dict]:
    pick = lambda d: {k: d[k] for k in _DETAIL_KEYS}  # noqa: E731
    return pick(interpreter.get_input_details()[0]), pick(interpreter.get_output_details()[0])


def _view(shm: SharedMemory, detail: dict) -> np.ndarray:
    return np.ndarray(tuple(detail["shape"]), dtype=detail["dtype"], buffer=shm.buf)


def _attach(name: str) -> SharedMemory:
    """The parent's buffer. Python < 3.13 registers an attached segment with this process's
    own resource tracker, which unlinks it when the child exits; the parent owns it."""
    if sys.version_info >= (3, 13):
        return SharedMemory(name, track=False)
    register = resource_tracker.register
    resource_tracker.register = lambda *args: None  # type: ignore[assignment]
    try:
        return SharedMemory(name)
    finally:
        resource_tracker.register = register  # type: ignore[assignment]


def child_main(fd: int) -> None:
    """The child's entry point (``python -c``): serve the parent on socket ``fd``."""
    # The parent owns shutdown: Ctrl-C or systemd's SIGTERM to the group must not kill the TPU
    # first; the child ends when the parent says ``q`` or its end of the socket closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(fd)
    models: dict[int, _Served] = {}
    try:
        sys.path[:] = conn.recv()  # the parent's, so that the specs' factories import here
        while (message := conn.recv_bytes())[:1] != QUIT:
            kind, index = message[:1], message[1] if len(message) > 1 else 0
            if kind == GO:
                models[index].invoke(conn)
            elif kind == ADD:
                served = _add_model(conn, pickle.loads(message[2:]))
                if served is not None:
                    models[index] = served
            elif kind == REMOVE and index in models:
                models.pop(index).close()
    except (EOFError, OSError):
        pass  # the parent is gone
    finally:
        for served in models.values():
            served.close()


@dataclass
class _Served:
    """One model in the child: its interpreter and its views of the parent's buffers."""

    interpreter: Any
    buffers: tuple[SharedMemory, SharedMemory]
    tensor_in: np.ndarray
    tensor_out: np.ndarray
    input_index: int
    output_index: int

    def invoke(self, conn: Connection) -> None:
        try:
            started = time.perf_counter_ns()
            self.interpreter.set_tensor(self.input_index, self.tensor_in)
            self.interpreter.invoke()
            self.tensor_out[...] = self.interpreter.get_tensor(self.output_index)
            conn.send_bytes(DONE + (time.perf_counter_ns() - started).to_bytes(8, "little"))
        except (RuntimeError, ValueError) as exc:
            conn.send_bytes(ERROR + str(exc).encode(errors="replace"))

    def close(self) -> None:
        del self.tensor_in, self.tensor_out  # views must go before the buffers
        for shm in self.buffers:
            shm.close()


def _add_model(conn: Connection, spec: ChildSpec) -> _Served | None:
    """Build the spec's interpreter, attach the buffers the parent makes for it, warm up."""
    try:
        runtime = spec.runtime_factory()
        if spec.delegate:
            interpreter = open_edgetpu(runtime, spec.model_path, spec.threads, spec.device)
        else:
            interpreter = new_interpreter(runtime, spec.model_path, spec.threads)
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        conn.send(("unavailable", str(exc).strip()))
        return None
    input_detail, output_detail = _details(interpreter)
    conn.send(("details", input_detail, output_detail))
    shm_in, shm_out = (_attach(name) for name in conn.recv())
    served = _Served(
        interpreter,
        (shm_in, shm_out),
        _view(shm_in, input_detail),
        _view(shm_out, output_detail),
        input_detail["index"],
        output_detail["index"],
    )
    served.invoke(conn)  # the warm-up, on the zeros of fresh buffers
    return served


def _death(process: subprocess.Popen) -> str:
    try:
        code = process.wait(1.0)
    except subprocess.TimeoutExpired:
        return "the Edge TPU process stopped answering"
    if code < 0:
        try:
            return f"the Edge TPU process died ({signal.Signals(-code).name})"
        except ValueError:
            return f"the Edge TPU process died (signal {-code})"
    return f"the Edge TPU process exited (code {code})"


def _stop(process: subprocess.Popen, conn: Connection, buffers: list[SharedMemory]) -> None:
    with contextlib.suppress(OSError):
        conn.send_bytes(QUIT)
    try:
        process.wait(2.0)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    conn.close()
    for shm in buffers:
        shm.close()
        shm.unlink()


class EdgeTpuHost:
    """The parent's end of one child process, serving any number of models one invoke at a
    time. ``dead`` says why it can serve no more (then every model needs a new host)."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        # A fresh interpreter, not multiprocessing's spawn: that re-runs the caller's main
        # module, which a script without a __main__ guard does not survive.
        self._process = subprocess.Popen(
            [sys.executable, "-c", f"{_ENTRY}({theirs.fileno()})"],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=2,  # the console's stdout carries results: the child's chatter goes to stderr
        )
        theirs.close()  # so that our recv sees EOF when the child dies
        self._conn = Connection(ours.detach())
        self._buffers: list[SharedMemory] = []
        self._finalizer = weakref.finalize(self, _stop, self._process, self._conn, self._buffers)
        self._lock = threading.Lock()  # one exchange at a time on the socket
        self._models = 0  # numbers given so far
        self._views: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # model -> (input, output)
        self.dead: str | None = None
        try:
            self._conn.send(sys.path)
        except OSError as exc:
            self._die(f"cannot reach the Edge TPU process ({exc})")

    @property
    def pid(self) -> int:
        return self._process.pid

    def add(self, spec: ChildSpec) -> tuple[int, dict, dict, list[SharedMemory]]:
        """Start serving ``spec``: (its number, input detail, output detail, its buffers)."""
        with self._lock:
            try:
                return self._add(spec)
            except OSError:  # the child is gone
                raise AcceleratorUnavailable(self._die(_death(self._process))) from None
            except AcceleratorUnavailable as exc:
                if not self._views:  # nothing else runs here: no idle child left behind
                    self._die(str(exc))
                raise

    def _add(self, spec: ChildSpec) -> tuple[int, dict, dict, list[SharedMemory]]:
        if self.dead:
            raise AcceleratorUnavailable(self.dead)
        index, self._models = self._models, self._models + 1
        if index > 255:
            raise AcceleratorUnavailable("too many models added to one Edge TPU process")
        self._conn.send_bytes(ADD + bytes([index]) + pickle.dumps(spec))
        reply = self._receive(START_TIMEOUT_S, "starting")
        if reply[0] == "unavailable":
            raise AcceleratorUnavailable(reply[1])
        _, input_detail, output_detail = reply
        buffers = []
        for detail in (input_detail, output_detail):
            size = int(np.prod(detail["shape"])) * np.dtype(detail["dtype"]).itemsize
            buffers.append(SharedMemory(create=True, size=size))
        self._buffers.extend(buffers)
        self._conn.send(tuple(shm.name for shm in buffers))
        if self._receive(START_TIMEOUT_S, "warming up", raw=True)[:1] != DONE:
            raise AcceleratorUnavailable("the first invoke failed")
        self._views[index] = (_view(buffers[0], input_detail), _view(buffers[1], output_detail))
        return index, input_detail, output_detail, buffers

    def _receive(self, timeout: float, doing: str, raw: bool = False) -> Any:
        try:
            if not self._conn.poll(timeout):
                self._process.kill()
                raise AcceleratorUnavailable(self._die(f"no answer in {timeout:g} s while {doing}"))
            return self._conn.recv_bytes() if raw else self._conn.recv()
        except (EOFError, OSError):
            raise AcceleratorUnavailable(
                self._die(f"{_death(self._process)} while {doing}")
            ) from None

    def invoke(self, index: int, tensor: np.ndarray) -> tuple[bytes, np.ndarray]:
        """One frame of model ``index``: (the child's reply, a copy of the output). The
        buffers are touched under the lock only: a dead child's are unmapped."""
        with self._lock:
            if self.dead:
                raise AcceleratorFailed(self.dead)
            tensor_in, tensor_out = self._views[index]
            tensor_in[0] = tensor
            try:
                self._conn.send_bytes(GO + bytes([index]))
                if not self._conn.poll(INVOKE_TIMEOUT_S):
                    self._process.kill()
                    raise AcceleratorFailed(self._die(f"no answer in {INVOKE_TIMEOUT_S:g} s"))
                reply = self._conn.recv_bytes()
            except (EOFError, OSError):
                raise AcceleratorFailed(self._die(_death(self._process))) from None
            return reply, tensor_out.copy()

    def remove(self, index: int) -> None:
        """Model ``index`` is done with; the last one out stops the child."""
        with self._lock:
            self._views.pop(index, None)
            if self.dead or not self._views:
                self._die("closed")
                return
            with contextlib.suppress(OSError):
                self._conn.send_bytes(REMOVE + bytes([index]))

    def _die(self, why: str) -> str:
        """Stop the child and free every buffer (called with the lock held)."""
        self.dead = self.dead or why
        self._views.clear()  # views must go before the buffers
        self._finalizer()
        return self.dead


# One host per Coral (and runtime): see the module docstring. CPU-in-child hosts (the hop's
# benchmark) are never shared.
_HOSTS: dict[tuple[Any, ...], EdgeTpuHost] = {}
_HOSTS_LOCK = threading.Lock()


def _host_for(spec: ChildSpec) -> EdgeTpuHost:
    if not spec.delegate:
        return EdgeTpuHost()
    key = (spec.device or "", spec.runtime_factory)
    with _HOSTS_LOCK:
        host = _HOSTS.get(key)
        if host is None or host.dead:
            host = _HOSTS[key] = EdgeTpuHost()
        return host


class EdgeTpuProcess:
    """One model served by the child process of its Coral. ``accelerator`` says what it runs
    on; :meth:`infer` is one frame; :meth:`close` (or garbage collection, or exit) ends it."""

    def __init__(self, spec: ChildSpec) -> None:
        self.accelerator = "edgetpu" if spec.delegate else "cpu-in-child"
        self.last_invoke_ms = 0.0  # the child's own time of the last frame (tensors + invoke)
        self._host = _host_for(spec)
        self._index, self.input_detail, self.output_detail, self._buffers = self._host.add(spec)
        self._finalizer = weakref.finalize(self, self._host.remove, self._index)

    @property
    def pid(self) -> int | None:
        return self._host.pid

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """One prepared (H, W, C) tensor -> a copy of the raw output; AcceleratorFailed when
        the child cannot answer (then use a new one)."""
        reply, output = self._host.invoke(self._index, tensor)
        if reply[:1] != DONE:
            raise AcceleratorFailed(reply[1:].decode(errors="replace"))
        self.last_invoke_ms = int.from_bytes(reply[1:9], "little") / 1e6
        return output

    def close(self) -> None:
        """This model is done with (its host stops with the last); idempotent."""
        self._finalizer()
