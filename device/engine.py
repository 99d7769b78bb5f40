"""The inference engine: one bundle, one interpreter built once, frames in, predictions out."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.bundle import Bundle, BundleError, TensorQuantization, load_bundle
from device.decode import Decoder, Prediction, make_decoder
from device.preprocess import FrameFormat, InputQuantizer, Roi, prepare
from device.runtime import Accelerator, DelegateLoader, Runtime, build_interpreter

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
        try:
            built = build_interpreter(
                self.bundle.model_path,
                accelerator,
                threads,
                runtime,
                self.bundle.edgetpu_model_path,
                delegate_loader,
            )
        except ValueError as exc:
            raise BundleError(str(exc)) from exc
        self.interpreter = built.interpreter
        self.accelerator = built.accelerator
        self.runtime = built.runtime
        self.fallback_reason = built.fallback_reason
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self._check_tensors()
        spec = manifest.input
        self.quantizer = InputQuantizer.build(
            spec.dtype, spec.normalization, _tensor_quantization(self._input), spec.channels
        )
        self.output_quantization = _tensor_quantization(self._output)
        self.decoder: Decoder = make_decoder(manifest, self.output_quantization, top_k, min_score)
        self.timings = StageTimes()
        self._warm_up()

    def _check_tensors(self) -> None:
        manifest = self.bundle.manifest
        where = self.bundle.model_path
        spec = manifest.input
        expected_in = (1, spec.height, spec.width, spec.channels)
        actual_in = tuple(int(x) for x in self._input["shape"])
        if actual_in != expected_in:
            raise BundleError(
                f"{where}: input shape: manifest says {expected_in}, model has {actual_in}"
            )
        actual_dtype = np.dtype(self._input["dtype"]).name
        if actual_dtype != spec.dtype:
            raise BundleError(
                f"{where}: input.dtype: manifest says {spec.dtype}, model has {actual_dtype}"
            )
        size = int(np.prod(self._output["shape"]))
        if size != manifest.output.size:
            raise BundleError(
                f"{where}: output.size: manifest says {manifest.output.size}, "
                f"model has {size} (shape {tuple(self._output['shape'])})"
            )
        for name, detail, recorded in (
            ("input", self._input, manifest.quantization.input),
            ("output", self._output, manifest.quantization.output),
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

    def _warm_up(self) -> None:
        # The first invoke pays for XNNPACK's weight packing; keep it out of frame timings.
        spec = self.bundle.manifest.input
        zeros = np.zeros((spec.height, spec.width, spec.channels), dtype=_DTYPES[spec.dtype])
        self.infer(zeros)

    def preprocess(
        self, frame: np.ndarray, frame_format: FrameFormat = "BGR", roi: Roi | None = None
    ) -> np.ndarray:
        return prepare(frame, self.bundle.manifest.input, self.quantizer, frame_format, roi)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Invoke on one prepared (H, W, C) tensor; returns a copy of the raw output."""
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
