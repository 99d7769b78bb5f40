"""The Edge TPU in a child process: libedgetpu aborts the whole process on a USB transfer error
(``F driver/usb/usb_driver.cc ... Abort``), so the interpreter with its delegate lives in a
process of its own (Frigate runs its detectors so) and the daemon outlives it.

Frames go in and outputs come back through two shared-memory buffers sized from the model's
tensors; the socket carries short signals only (``g`` go, ``d`` done + the child's time in ns,
``e`` + message for an error the child survived, ``q`` quit), so no frame is pickled. A child
that dies (any signal, any exit) or stops answering raises :class:`AcceleratorFailed` in the
parent, which answers the frame on its CPU interpreter (see
:class:`device.inference.engine.Classifier`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import sys
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
GO, DONE, ERROR, QUIT = b"g", b"d", b"e", b"q"
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
    try:
        sys.path[:] = conn.recv()  # the parent's, so that the spec's factory imports here
        spec: ChildSpec = conn.recv()
    except EOFError:
        return
    try:
        runtime = spec.runtime_factory()
        if spec.delegate:
            interpreter = open_edgetpu(runtime, spec.model_path, spec.threads, spec.device)
        else:
            interpreter = new_interpreter(runtime, spec.model_path, spec.threads)
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        conn.send(("unavailable", str(exc).strip()))
        return
    input_detail, output_detail = _details(interpreter)
    conn.send(("details", input_detail, output_detail))
    try:
        input_name, output_name = conn.recv()
    except EOFError:
        return
    shm_in, shm_out = _attach(input_name), _attach(output_name)
    tensor_in, tensor_out = _view(shm_in, input_detail), _view(shm_out, output_detail)
    try:
        _serve(conn, interpreter, tensor_in, tensor_out, input_detail["index"], output_detail)
    finally:
        del tensor_in, tensor_out
        shm_in.close()
        shm_out.close()


def _serve(
    conn: Connection,
    interpreter: Any,
    tensor_in: np.ndarray,
    tensor_out: np.ndarray,
    input_index: int,
    output_detail: dict,
) -> None:
    output_index = output_detail["index"]
    message = GO  # the first round is the warm-up, on the zeros of a fresh buffer
    while message == GO:
        try:
            started = time.perf_counter_ns()
            interpreter.set_tensor(input_index, tensor_in)
            interpreter.invoke()
            tensor_out[...] = interpreter.get_tensor(output_index)
            conn.send_bytes(DONE + (time.perf_counter_ns() - started).to_bytes(8, "little"))
        except (RuntimeError, ValueError) as exc:
            conn.send_bytes(ERROR + str(exc).encode(errors="replace"))
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return


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


class EdgeTpuProcess:
    """The parent's end: one child process running one interpreter. ``accelerator`` says
    what it runs on; :meth:`infer` is one frame; :meth:`close` (or garbage collection, or
    exit) stops the child and frees the buffers."""

    def __init__(self, spec: ChildSpec) -> None:
        self.accelerator = "edgetpu" if spec.delegate else "cpu-in-child"
        self.last_invoke_ms = 0.0  # the child's own time of the last frame (tensors + invoke)
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
        try:
            self._conn.send(sys.path)
            self._conn.send(spec)
            self.input_detail, self.output_detail = self._handshake()
        except BaseException:
            self.close()
            raise

    def _handshake(self) -> tuple[dict, dict]:
        reply = self._receive(START_TIMEOUT_S, "starting")
        if reply[0] == "unavailable":
            raise AcceleratorUnavailable(reply[1])
        _, input_detail, output_detail = reply
        for detail in (input_detail, output_detail):
            size = int(np.prod(detail["shape"])) * np.dtype(detail["dtype"]).itemsize
            self._buffers.append(SharedMemory(create=True, size=size))
        self._in = _view(self._buffers[0], input_detail)
        self._out = _view(self._buffers[1], output_detail)
        self._conn.send(tuple(shm.name for shm in self._buffers))
        if self._receive(START_TIMEOUT_S, "warming up", raw=True)[:1] != DONE:
            raise AcceleratorUnavailable("the first invoke failed")
        return input_detail, output_detail

    def _receive(self, timeout: float, doing: str, raw: bool = False) -> Any:
        try:
            if not self._conn.poll(timeout):
                self._process.kill()
                raise AcceleratorUnavailable(f"no answer in {timeout:g} s while {doing}")
            return self._conn.recv_bytes() if raw else self._conn.recv()
        except (EOFError, OSError):
            raise AcceleratorUnavailable(f"{_death(self._process)} while {doing}") from None

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """One prepared (H, W, C) tensor -> a copy of the raw output; AcceleratorFailed when
        the child cannot answer (it is then stopped: use a new one)."""
        self._in[0] = tensor
        try:
            self._conn.send_bytes(GO)
            if not self._conn.poll(INVOKE_TIMEOUT_S):
                self._process.kill()
                raise AcceleratorFailed(f"no answer in {INVOKE_TIMEOUT_S:g} s")
            reply = self._conn.recv_bytes()
        except (EOFError, OSError):
            reason = _death(self._process)
            self.close()
            raise AcceleratorFailed(reason) from None
        except AcceleratorFailed:
            self.close()
            raise
        if reply[:1] != DONE:
            raise AcceleratorFailed(reply[1:].decode(errors="replace"))
        self.last_invoke_ms = int.from_bytes(reply[1:9], "little") / 1e6
        return self._out.copy()

    def close(self) -> None:
        """Stop the child (politely, then by force) and free the shared memory; idempotent."""
        self._in = self._out = None  # type: ignore[assignment]  # views must go before the buffers
        self._finalizer()
