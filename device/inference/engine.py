"""The inference engine: one bundle, one interpreter built once, frames in, predictions out."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.inference.bundle import Bundle, BundleError, TensorQuantization, load_bundle
from device.inference.decode import Decoder, Prediction, make_decoder
from device.inference.frames import FrameFormat, Roi
from device.inference.preprocess import InputQuantizer, prepare
from device.inference.runtime import (
    Accelerator,
    BuiltInterpreter,
    DelegateLoader,
    Runtime,
    build_interpreter,
)

log = logging.getLogger(__name__)

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

    Builds and warms up the interpreter once; checks the model's tensors against the manifest
    and refuses a bundle that disagrees (:class:`BundleError` naming the field).

    Edge TPU failover: when an invoke on the Edge TPU fails (a USB Coral unplugged, a
    transfer error), the classifier rebuilds itself on the CPU at once and runs the same
    frame there, so no frame is lost (``accelerator_failures`` counts it). Coming back is the
    caller's choice: :meth:`accelerator_candidate` (slow: loads the delegate) then
    :meth:`adopt` (fast, under the caller's lock), as the daemon does every
    ``accelerator_retry`` seconds.

    ``runtime`` is the TFLite runtime to build interpreters with (default: the device's own,
    :func:`device.inference.runtime.find_runtime`); ``delegate_loader`` replaces its Edge TPU
    delegate loader (tests fake a Coral with it).
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        accelerator: Accelerator = "auto",
        threads: int | None = None,
        top_k: int = 5,
        min_score: float = 0.0,
        runtime: Runtime | None = None,
        delegate_loader: DelegateLoader | None = None,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        manifest = self.bundle.manifest
        self.requested_accelerator = accelerator
        self._threads, self._runtime, self._delegate_loader = threads, runtime, delegate_loader
        self.accelerator_failures = 0  # Edge TPU invokes that failed: moved to the CPU
        self.accelerator_recoveries = 0  # times it went back to the Edge TPU
        self._use(self._build(accelerator))
        spec = manifest.input
        self.quantizer = InputQuantizer.build(
            spec.dtype, spec.normalization, _tensor_quantization(self._input), spec.channels
        )
        self.output_quantization = _tensor_quantization(self._output)
        self.decoder: Decoder = make_decoder(manifest, self.output_quantization, top_k, min_score)
        self.timings = StageTimes()

    def _build(self, accelerator: Accelerator, quiet: bool = False) -> BuiltInterpreter:
        try:
            return build_interpreter(
                self.bundle.model_path,
                accelerator,
                self._threads,
                self._runtime,
                self.bundle.edgetpu_model_path,
                self._delegate_loader,
                quiet=quiet,
            )
        except ValueError as exc:
            raise BundleError(str(exc)) from exc

    def _use(self, built: BuiltInterpreter, warm: bool = True) -> None:
        """Check (and warm up) ``built``, then make it the classifier's interpreter."""
        interpreter = built.interpreter
        details = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        self._check_tensors(*details)
        if warm:
            self._warm_up(interpreter)
        self._input, self._output = details
        self.interpreter = interpreter
        self.accelerator = built.accelerator
        self.runtime = built.runtime
        self.fallback_reason = built.fallback_reason

    def accelerator_candidate(self) -> BuiltInterpreter | None:
        """An Edge TPU interpreter, built and warmed up, when one was asked for, this runs on
        the CPU, and the Edge TPU loads again; else None. Slow (loads the delegate): call it
        outside the lock that guards :meth:`classify`, then pass the result to :meth:`adopt`."""
        if self.requested_accelerator == "cpu" or self.accelerator == "edgetpu":
            return None
        built = self._build(self.requested_accelerator, quiet=True)
        if built.accelerator != "edgetpu":
            return None
        self._warm_up(built.interpreter)
        return built

    def adopt(self, built: BuiltInterpreter) -> None:
        """Switch to an interpreter from :meth:`accelerator_candidate` (under the lock)."""
        self._use(built, warm=False)  # warmed up by accelerator_candidate
        self.accelerator_recoveries += 1
        log.warning("%s: back on the Edge TPU", self.bundle.name)

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
        try:
            return self._invoke(tensor)
        except RuntimeError as exc:
            if self.accelerator != "edgetpu":
                raise
            reason = f"Edge TPU failed while running ({exc})"
            log.warning("%s: %s; switching to the CPU", self.bundle.name, reason)
            self._use(self._build("cpu"))
            self.fallback_reason = reason
            self.accelerator_failures += 1
            return self._invoke(tensor)

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
