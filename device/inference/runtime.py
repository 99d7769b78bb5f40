"""The inference runtime seam: which TFLite interpreter, which accelerator.

Runtime fallback order: ai_edge_litert -> tflite_runtime. The device never imports TensorFlow
(it is far too big for a Pi); a caller that has it, such as training on a workstation, passes
its own :class:`Runtime` in (see ``training/runtime.py``).
Accelerator: ``cpu``, ``edgetpu`` (Coral, via ``libedgetpu``) or ``auto`` (the Edge TPU when
its delegate loads, else the CPU). A failed delegate falls back to the CPU with one log line;
the caller reports which accelerator is in use (and :class:`device.inference.engine.Classifier`
moves to the CPU when the Edge TPU fails while running, and back when it returns).
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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

# (library, options) -> delegate. The one seam for accelerators; faked in tests.
DelegateLoader = Callable[[str, dict[str, Any]], Any]


class RuntimeMissing(RuntimeError):
    """No TensorFlow Lite runtime can be imported."""


@dataclass(frozen=True)
class Runtime:
    """A TFLite interpreter class and its delegate loader, as one runtime package provides."""

    name: str
    interpreter_class: type
    load_delegate: DelegateLoader

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
) -> BuiltInterpreter:
    """Build (once) an allocated interpreter, on the Edge TPU when asked and possible.

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
        library = EDGETPU_LIBRARY.get(platform.system(), "libedgetpu.so.1")
        loader = delegate_loader or runtime.load_delegate
        tpu_model = edgetpu_model_path or model_path
        try:
            delegate = loader(library, {})
            interpreter = runtime.interpreter_class(
                model_path=str(tpu_model), experimental_delegates=[delegate], num_threads=threads
            )
            interpreter.allocate_tensors()
            log.info("Edge TPU delegate loaded (%s), model %s", library, tpu_model.name)
            return BuiltInterpreter(interpreter, "edgetpu", runtime.name, tpu_model)
        except (OSError, ValueError, RuntimeError) as exc:
            reason = f"Edge TPU unavailable: {exc}"
            level = logging.WARNING if accelerator == "edgetpu" else logging.INFO
            log.log(logging.DEBUG if quiet else level, "%s; running on the CPU", reason)
    try:
        interpreter = runtime.interpreter_class(model_path=str(model_path), num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"{model_path}: not a loadable TFLite model ({exc})") from exc
    return BuiltInterpreter(interpreter, "cpu", runtime.name, model_path, reason)
