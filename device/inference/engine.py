"""The inference engine: one bundle, one interpreter built once, frames in, predictions out."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from device.inference.bundle import Bundle, BundleError, TensorQuantization, load_bundle
from device.inference.coral_usb import SYSFS_ROOT, USB2_MBPS, coral_usb_speed_mbps
from device.inference.decode import Decoder, Prediction, make_decoder
from device.inference.edgetpu_child import AcceleratorFailed, ChildSpec, EdgeTpuProcess
from device.inference.frames import FrameFormat, Roi
from device.inference.preprocess import InputQuantizer, prepare
from device.inference.runtime import (
    Accelerator,
    BuiltInterpreter,
    Runtime,
    build_interpreter,
    edgetpu_library,
    edgetpu_options,
    find_runtime,
)

log = logging.getLogger(__name__)

# The config's accelerators, and the CPU in the child process (bench/edgetpu_hop.py).
EngineAccelerator = Accelerator | Literal["cpu-in-child"]

_DTYPES = {"uint8": np.uint8, "int8": np.int8, "float32": np.float32}


@dataclass
class StageTimes:
    """Milliseconds spent in each stage of the last call."""

    preprocess_ms: float = 0.0
    invoke_ms: float = 0.0
    decode_ms: float = 0.0


def _tensor_quantization(detail: dict) -> TensorQuantization | None:
    scale, zero_point = detail["quantization"]
    return TensorQuantization(scale=float(scale), zero_point=int(zero_point)) if scale else None


class Classifier:
    """Runs a bundle: preprocess -> invoke -> decode, with per-stage timings.

    Builds and warms up the CPU interpreter once; checks the model's tensors against the
    manifest and refuses a bundle that disagrees (:class:`BundleError` naming the field).

    The Edge TPU (``auto`` or ``edgetpu``) runs in a child process
    (:class:`device.inference.edgetpu_child.EdgeTpuProcess`): libedgetpu aborts its process on
    a USB transfer error. When the child dies, hangs or fails mid-frame, the classifier answers
    that frame on its warm CPU interpreter and stays there, so no frame is lost
    (``accelerator_failures`` counts it). Coming back is the caller's choice:
    :meth:`accelerator_candidate` (slow: starts a child) then :meth:`adopt` (fast, under the
    caller's lock), as the daemon does every ``accelerator_retry`` seconds.

    ``runtime`` is the TFLite runtime of the CPU interpreter (default: the device's own,
    :func:`device.inference.runtime.find_runtime`). ``runtime_factory`` makes the runtime in
    the child (and, when ``runtime`` is not given, here): a module-level callable, since the
    child gets it pickled; tests fake a Coral with it. ``accelerator_device`` picks the Coral
    (pycoral's ``:0``, ``usb``, ``usb:1``, ``pci``...; None: the first found).
    ``cpu-in-child`` runs the CPU interpreter in the child, to measure the hop.
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        accelerator: EngineAccelerator = "auto",
        threads: int | None = None,
        top_k: int = 5,
        min_score: float = 0.0,
        runtime: Runtime | None = None,
        runtime_factory: Callable[[], Runtime] | None = None,
        accelerator_device: str | None = None,
        sysfs_root: Path = SYSFS_ROOT,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        manifest = self.bundle.manifest
        if accelerator not in ("auto", "cpu", "edgetpu", "cpu-in-child"):
            raise ValueError(f"accelerator: expected auto, cpu or edgetpu, got {accelerator!r}")
        edgetpu_options(accelerator_device)  # a malformed device string fails here, named
        self.requested_accelerator = accelerator
        self._device, self._sysfs_root = accelerator_device, sysfs_root
        self._threads = threads or os.cpu_count() or 1
        self._runtime_factory = runtime_factory or find_runtime
        self._runtime = runtime or (runtime_factory() if runtime_factory else None)
        self.accelerator_failures = 0  # Edge TPU frames that failed: answered on the CPU
        self.accelerator_recoveries = 0  # times it went back to the Edge TPU
        self.usb_speed_mbps: int | None = None  # of the USB Coral in use; 480 = a USB 2 port
        self._child: EdgeTpuProcess | None = None
        self._use_cpu(self._build_cpu())
        spec = manifest.input
        self.quantizer = InputQuantizer.build(
            spec.dtype, spec.normalization, _tensor_quantization(self._input), spec.channels
        )
        self.output_quantization = _tensor_quantization(self._output)
        self.decoder: Decoder = make_decoder(manifest, self.output_quantization, top_k, min_score)
        self.timings = StageTimes()
        if accelerator != "cpu":
            child, self.fallback_reason = self._start_child(quiet=False)
            if child is not None:
                self._adopt_child(child)

    @property
    def accelerator(self) -> str:
        """Where frames run now: ``edgetpu`` (in the child), ``cpu`` (here), or
        ``cpu-in-child``."""
        return self._child.accelerator if self._child is not None else "cpu"

    @property
    def accelerator_process(self) -> EdgeTpuProcess | None:
        """The child process frames run in, when they run in one."""
        return self._child

    def _build_cpu(self) -> BuiltInterpreter:
        try:
            return build_interpreter(
                self.bundle.model_path, "cpu", self._threads, self._runtime or find_runtime()
            )
        except ValueError as exc:
            raise BundleError(str(exc)) from exc

    def _use_cpu(self, built: BuiltInterpreter) -> None:
        """Check and warm up the in-process CPU interpreter; the fallback of every frame."""
        interpreter = built.interpreter
        details = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        self._check_tensors(*details)
        self._warm_up(interpreter)
        self._input, self._output = details
        self.interpreter = interpreter
        self.runtime = built.runtime
        self.fallback_reason = ""

    def _start_child(self, quiet: bool) -> tuple[EdgeTpuProcess | None, str]:
        """A started, warmed-up child on the accelerator, or None and why not."""
        if self.requested_accelerator == "cpu-in-child":
            return self._checked(EdgeTpuProcess(self._spec(delegate=False))), ""
        library = edgetpu_library()
        try:
            (self._runtime or self._runtime_factory()).probe(library)  # no child without it
            child = EdgeTpuProcess(self._spec(delegate=True))
        except (OSError, ValueError, RuntimeError) as exc:
            reason = f"Edge TPU unavailable: {exc}"
            level = logging.WARNING if self.requested_accelerator == "edgetpu" else logging.INFO
            log.log(logging.DEBUG if quiet else level, "%s; running on the CPU", reason)
            return None, reason
        log.info("Edge TPU delegate loaded (%s) in process %s", library, child.pid)
        return self._checked(child), ""

    def _spec(self, delegate: bool) -> ChildSpec:
        model = (self.bundle.edgetpu_model_path if delegate else None) or self.bundle.model_path
        return ChildSpec(model, self._threads, self._runtime_factory, self._device, delegate)

    def _checked(self, child: EdgeTpuProcess) -> EdgeTpuProcess:
        try:
            self._check_tensors(child.input_detail, child.output_detail)
        except BundleError:
            child.close()
            raise
        return child

    def _adopt_child(self, child: EdgeTpuProcess) -> None:
        self._child = child
        self.fallback_reason = ""
        self.usb_speed_mbps = None
        if child.accelerator == "edgetpu" and not (self._device or "").startswith("pci"):
            self.usb_speed_mbps = coral_usb_speed_mbps(self._sysfs_root)
            if self.usb_speed_mbps == USB2_MBPS:
                log.warning(
                    "the USB Coral is on a USB 2 port (480 Mbps): inference is several times "
                    "slower than on a USB 3 port"
                )

    def accelerator_candidate(self) -> EdgeTpuProcess | None:
        """A child on the Edge TPU, started and warmed up, when one was asked for, this runs
        on the CPU, and the Edge TPU loads again; else None. Slow (starts a process): call it
        outside the lock that guards :meth:`classify`, then pass the result to :meth:`adopt`."""
        if self.requested_accelerator in ("cpu", "cpu-in-child") or self._child is not None:
            return None
        return self._start_child(quiet=True)[0]

    def adopt(self, child: EdgeTpuProcess) -> None:
        """Switch to a child from :meth:`accelerator_candidate` (under the lock)."""
        self._adopt_child(child)
        self.accelerator_recoveries += 1
        log.warning("%s: back on the Edge TPU", self.bundle.name)

    def close(self) -> None:
        """Stop the accelerator's child process, if any (also done at exit)."""
        if self._child is not None:
            self._child.close()
            self._child = None

    def _check_tensors(self, input_detail: dict, output_detail: dict) -> None:
        manifest = self.bundle.manifest
        where = self.bundle.model_path
        spec = manifest.input
        expected_in = (1, spec.height, spec.width, spec.channels)
        actual_in = tuple(int(x) for x in input_detail["shape"])
        if actual_in != expected_in:
            raise BundleError(
                f"{where}: input shape: manifest says {expected_in}, model has {actual_in}"
            )
        actual_dtype = np.dtype(input_detail["dtype"]).name
        if actual_dtype != spec.dtype:
            raise BundleError(
                f"{where}: input.dtype: manifest says {spec.dtype}, model has {actual_dtype}"
            )
        size = int(np.prod(output_detail["shape"]))
        if size != manifest.output.size:
            raise BundleError(
                f"{where}: output.size: manifest says {manifest.output.size}, "
                f"model has {size} (shape {tuple(output_detail['shape'])})"
            )
        for name, detail, recorded in (
            ("input", input_detail, manifest.quantization.input),
            ("output", output_detail, manifest.quantization.output),
        ):
            actual = _tensor_quantization(detail)
            if recorded is not None and (
                actual is None
                or not np.isclose(actual.scale, recorded.scale, rtol=1e-5)
                or actual.zero_point != recorded.zero_point
            ):
                raise BundleError(
                    f"{where}: quantization.{name}: manifest says {recorded}, model has {actual}"
                )

    def _warm_up(self, interpreter: Any) -> None:
        # The first invoke pays for XNNPACK's weight packing; keep it out of frame timings.
        spec = self.bundle.manifest.input
        zeros = np.zeros((1, spec.height, spec.width, spec.channels), dtype=_DTYPES[spec.dtype])
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], zeros)
        interpreter.invoke()

    def preprocess(
        self, frame: np.ndarray, frame_format: FrameFormat = "BGR", roi: Roi | None = None
    ) -> np.ndarray:
        return prepare(frame, self.bundle.manifest.input, self.quantizer, frame_format, roi)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Invoke on one prepared (H, W, C) tensor; returns a copy of the raw output.

        An Edge TPU that fails moves the classifier to the CPU, which runs the same tensor."""
        if self._child is not None:
            try:
                return self._child.infer(tensor)
            except AcceleratorFailed as exc:
                self._fail_over(str(exc))
        return self._invoke(tensor)

    def _fail_over(self, why: str) -> None:
        reason = f"Edge TPU failed while running ({why})"
        log.warning("%s: %s; switching to the CPU", self.bundle.name, reason)
        self.close()
        self.fallback_reason = reason
        self.usb_speed_mbps = None
        self.accelerator_failures += 1

    def _invoke(self, tensor: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._input["index"], tensor[None])
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output["index"])

    def classify(
        self, frame: np.ndarray, frame_format: FrameFormat = "BGR", roi: Roi | None = None
    ) -> Prediction:
        """One frame -> one prediction; per-stage times land in :attr:`timings`."""
        t0 = time.perf_counter()
        tensor = self.preprocess(frame, frame_format, roi)
        t1 = time.perf_counter()
        raw = self.infer(tensor)
        t2 = time.perf_counter()
        prediction = self.decoder(raw)
        t3 = time.perf_counter()
        self.timings = StageTimes((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
        return prediction
