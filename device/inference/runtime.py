"""The inference runtime seam: which TFLite interpreter, which accelerator.

Runtime fallback order: ai_edge_litert -> tflite_runtime. The device never imports TensorFlow
(it is far too big for a Pi); a caller that has it, such as training on a workstation, passes
its own :class:`Runtime` in (see ``training/runtime.py``).
Accelerator: ``cpu``, ``edgetpu`` (Coral, via ``libedgetpu``) or ``auto`` (the Edge TPU when
its delegate loads, else the CPU). A failed delegate falls back to the CPU with one log line;
the caller reports which accelerator is in use. :class:`device.inference.engine.Classifier`
runs the Edge TPU in a child process (:mod:`device.inference.edgetpu_child`): libedgetpu aborts
the whole process on USB transfer errors, so the daemon must not be that process.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import os
import platform
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

Accelerator = Literal["auto", "cpu", "edgetpu"]
RUNTIME_MODULES = ("ai_edge_litert", "tflite_runtime")
EDGETPU_LIBRARY = {
    "Linux": "libedgetpu.so.1",
    "Darwin": "libedgetpu.1.dylib",
    "Windows": "edgetpu.dll",
}

# pycoral's device strings, passed to libedgetpu as the delegate's "device" option.
EDGETPU_DEVICE_PATTERN = r"^(:[0-9]+|usb(:[0-9]+)?|pci(:[0-9]+)?)$"
# Printed by the runtime's C++ logger on stderr at every interpreter creation; nothing to act on.
_RUNTIME_NOISE = re.compile(
    rb"^INFO: (Created TensorFlow Lite XNNPACK delegate for CPU|"
    rb"Initialized TensorFlow Lite runtime)\.\r?$"
)

# (library, options) -> delegate. The one seam for accelerators; faked in tests.
DelegateLoader = Callable[[str, dict[str, Any]], Any]


def edgetpu_library() -> str:
    """libedgetpu's file name on this platform."""
    return EDGETPU_LIBRARY.get(platform.system(), "libedgetpu.so.1")


def edgetpu_options(device: str | None) -> dict[str, str]:
    """The Edge TPU delegate's options for ``device`` (None: the first Coral found)."""
    if device is None:
        return {}
    if not re.match(EDGETPU_DEVICE_PATTERN, device):
        raise ValueError(
            f"accelerator_device: expected ':N', 'usb', 'usb:N', 'pci' or 'pci:N', got {device!r}"
        )
    return {"device": device}


def _probe_library(library: str) -> None:
    ctypes.CDLL(library)


class RuntimeMissing(RuntimeError):
    """No TensorFlow Lite runtime can be imported."""


@dataclass(frozen=True)
class Runtime:
    """A TFLite interpreter class and its delegate loader, as one runtime package provides."""

    name: str
    interpreter_class: type
    load_delegate: DelegateLoader
    # library -> None, OSError when it does not open: cheap, loads no delegate, opens no device.
    probe: Callable[[str], Any] = field(default=_probe_library)

    @classmethod
    def checked(cls, name: str, interpreter_class: type, load_delegate: DelegateLoader) -> Runtime:
        """A runtime whose delegate loader first checks that the library opens at all.

        ai_edge_litert's Delegate prints a spurious traceback at exit when its library is
        missing; opening it with ctypes first raises the same OSError without that noise.
        """

        def load(library: str, options: dict[str, Any]) -> Any:
            ctypes.CDLL(library)
            return load_delegate(library, options)

        return cls(name, interpreter_class, load)


def _import_runtime(name: str) -> Runtime:
    if name == "ai_edge_litert":
        module = importlib.import_module("ai_edge_litert.interpreter")
        return Runtime.checked(name, module.Interpreter, module.load_delegate)
    if name == "tflite_runtime":
        import numpy as np

        # tflite-runtime 2.14 imports under numpy 2 but crashes creating an interpreter.
        if int(np.__version__.split(".")[0]) >= 2:
            raise ImportError("tflite_runtime needs numpy<2")
        module = importlib.import_module("tflite_runtime.interpreter")
        return Runtime.checked(name, module.Interpreter, module.load_delegate)
    raise ValueError(f"unknown runtime {name!r}; choose from {', '.join(RUNTIME_MODULES)}")


def find_runtime(order: Sequence[str] = RUNTIME_MODULES) -> Runtime:
    """The first runtime of ``order`` that imports; a clear message when none does."""
    reasons = []
    for name in order:
        try:
            runtime = _import_runtime(name)
        except ImportError as exc:
            reasons.append(f"{name}: {exc}")
            continue
        log.debug("TFLite runtime: %s", runtime.name)
        return runtime
    raise RuntimeMissing(
        "no TensorFlow Lite runtime found. Install one with `pip install ai-edge-litert` "
        "(or `pip install tflite-runtime 'numpy<2'` on systems without ai-edge-litert wheels). "
        "Tried: " + "; ".join(reasons)
    )


_STDERR_LOCK = threading.Lock()  # fd 2 is process-wide: one redirection at a time


@contextlib.contextmanager
def runtime_noise_filtered() -> Iterator[None]:
    """Run the block with fd 2 going to a temporary file, then write back what it printed but
    the runtime's INFO lines: its C++ logger has no switch in the Python API, and real errors
    must stay visible (they are, after the block)."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().splitlines(keepends=True)
                if not _RUNTIME_NOISE.match(line.rstrip(b"\n"))
            ]
            if kept:
                os.write(2, b"".join(kept))


def new_interpreter(
    runtime: Runtime, model_path: Path, threads: int, delegates: Sequence[Any] = ()
) -> Any:
    """An allocated interpreter of ``model_path``, without the runtime's INFO line."""
    kwargs: dict[str, Any] = {"num_threads": threads}
    if delegates:
        kwargs["experimental_delegates"] = list(delegates)
    with runtime_noise_filtered():
        interpreter = runtime.interpreter_class(model_path=str(model_path), **kwargs)
        interpreter.allocate_tensors()
    return interpreter


def open_edgetpu(
    runtime: Runtime,
    model_path: Path,
    threads: int,
    device: str | None = None,
    delegate_loader: DelegateLoader | None = None,
) -> Any:
    """An interpreter of ``model_path`` on the Edge TPU. Raises OSError when libedgetpu is
    missing, ValueError when it loads but finds no Coral (``device``), RuntimeError when the
    model does not build with the delegate. A USB transfer error later aborts the process:
    call it in a process that may die (:mod:`device.inference.edgetpu_child`)."""
    loader = delegate_loader or runtime.load_delegate
    delegate = loader(edgetpu_library(), edgetpu_options(device))
    return new_interpreter(runtime, model_path, threads, [delegate])


@dataclass
class BuiltInterpreter:
    interpreter: Any
    accelerator: Literal["cpu", "edgetpu"]
    runtime: str
    model_path: Path
    fallback_reason: str = ""


def build_interpreter(
    model_path: Path,
    accelerator: Accelerator = "auto",
    threads: int | None = None,
    runtime: Runtime | None = None,
    edgetpu_model_path: Path | None = None,
    delegate_loader: DelegateLoader | None = None,
    quiet: bool = False,
    device: str | None = None,
) -> BuiltInterpreter:
    """Build (once) an allocated interpreter in this process, on the Edge TPU when asked and
    possible (the engine asks only for the CPU: its Edge TPU runs in a child process).

    ``quiet`` logs a missing Edge TPU at debug level only (periodic retries).

    An Edge TPU needs a model compiled by ``edgetpu_compiler``; the bundle's
    ``model_edgetpu.tflite`` when there is one, else the plain model (every op then falls back
    to the CPU inside the delegate, which still works but gains nothing).
    """
    runtime = runtime or find_runtime()
    threads = threads or os.cpu_count() or 1
    if accelerator not in ("auto", "cpu", "edgetpu"):
        raise ValueError(f"accelerator: expected auto, cpu or edgetpu, got {accelerator!r}")
    reason = ""
    if accelerator != "cpu":
        tpu_model = edgetpu_model_path or model_path
        try:
            interpreter = open_edgetpu(runtime, tpu_model, threads, device, delegate_loader)
            log.info("Edge TPU delegate loaded, model %s", tpu_model.name)
            return BuiltInterpreter(interpreter, "edgetpu", runtime.name, tpu_model)
        except (OSError, ValueError, RuntimeError) as exc:
            reason = f"Edge TPU unavailable: {exc}"
            level = logging.WARNING if accelerator == "edgetpu" else logging.INFO
            log.log(logging.DEBUG if quiet else level, "%s; running on the CPU", reason)
    try:
        interpreter = new_interpreter(runtime, model_path, threads)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"{model_path}: not a loadable TFLite model ({exc})") from exc
    return BuiltInterpreter(interpreter, "cpu", runtime.name, model_path, reason)
