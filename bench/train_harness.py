"""What the training benchmarks share: targets, training through ``kestrel train``'s path, and
the independent device check (held-out files read from disk and classified by the device).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.inference.engine import Classifier
from device.inference.preprocess import read_image
from training.config import TrainConfig


@dataclass
class Check:
    """One target: a figure, the limit, and whether it was met."""

    name: str
    value: float | None
    limit: float
    higher_is_better: bool = True
    unit: str = ""

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    def line(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        shown = "n/a" if self.value is None else f"{self.value:.4g}{self.unit}"
        verdict = "PASS" if self.passed else "MISS"
        return f"{verdict}  {self.name}: {shown} (target {op} {self.limit:g}{self.unit})"


@dataclass
class Outcome:
    name: str
    figures: dict[str, Any]
    checks: list[Check]


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % confidence interval of an accuracy measured on ``n`` images (Wilson score)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def held_out_images(data: Path) -> list[tuple[Path, str]]:
    """(file, leaf label) of every image under ``data/test`` (label = its folder's name)."""
    return [(p, p.parent.name) for p in sorted((data / "test").rglob("*.png"))]


def classify_files(bundle: Path, files: Sequence[Path], top_k: int = 5) -> tuple[list[Any], float]:
    """The device's answers for image files (read from disk, as ``kestrel classify`` does),
    and the mean milliseconds per image of the whole pipeline (read, preprocess, invoke,
    decode)."""
    classifier = Classifier(bundle, accelerator="cpu", top_k=top_k)
    answers = []
    start = time.perf_counter()
    for path in files:
        answers.append(classifier.classify(read_image(str(path)), "BGR"))
    ms = (time.perf_counter() - start) * 1e3 / max(len(files), 1)
    return answers, ms


def changed_settings(config: TrainConfig) -> dict[str, Any]:
    """The settings that differ from TrainConfig's defaults (the task aside)."""
    defaults = TrainConfig()
    return {k: v for k, v in config.to_dict().items() if k != "task" and v != getattr(defaults, k)}


def say(text: str = "") -> None:
    print(text, flush=True)


def figure_text(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def run_training(
    name: str, data: Path, bundle: Path, config: TrainConfig, progress: bool
) -> tuple[dict[str, Any], float]:
    """``kestrel train`` (force: keep the bundle even if the gate fails, to measure it)."""
    from training.train import train

    say(f"[{name}] kestrel train {data} --task {config.task} --out {bundle}")
    changed = changed_settings(config)
    say(f"[{name}] settings changed from the defaults: {changed or 'none'}")
    start = time.perf_counter()
    result = train(data, bundle, config, force=True, progress=progress)
    wall = time.perf_counter() - start
    report = result.report
    say(f"[{name}] trained in {wall:.0f} s; phases (s): {result.timings}")
    training = {k: v for k, v in report.get("training", {}).items() if not k.startswith("seconds")}
    say(f"[{name}] training: {training}")
    say(f"[{name}] gate: {result.gate.get('message')}")
    baselines = {
        k: v.get("map", v.get("accuracy")) if "skipped" not in v else "skipped"
        for k, v in (report.get("baselines") or {}).items()
    }
    say(f"[{name}] classical baselines on the same embeddings: {baselines}")
    return report, wall


@dataclass
class Trained:
    """A benchmark's dataset, trained: where it is, the report, and how long each part took."""

    data: Path
    bundle: Path
    report: dict[str, Any]
    wall_s: float  # ``kestrel train``
    dataset_s: float  # writing the dataset


def prepare_and_train(
    name: str,
    work: Path,
    config: TrainConfig,
    progress: bool,
    write_dataset: Callable[[Path], object],
    figure_keys: Sequence[str] | None,
) -> Trained:
    """Write the dataset into ``work/data``, train it into ``work/bundle`` and print the
    float / int8 figures named by ``figure_keys`` (``None``: the caller prints them)."""
    data, bundle = work / "data", work / "bundle"
    start = time.perf_counter()
    write_dataset(data)
    dataset_s = time.perf_counter() - start
    report, wall = run_training(name, data, bundle, config, progress)
    if figure_keys is not None:
        float_int8_lines(name, report, figure_keys)
    return Trained(data, bundle, report, wall, dataset_s)


def device_accuracy(
    bundle: Path, files: Sequence[tuple[Path, str]], top_k: int, answer: Callable[[Any], str]
) -> tuple[int, float, float, float]:
    """Classify held-out files on the device; (right answers, 95 % CI low, high, ms per image).

    ``answer`` picks, from the device's prediction, the label compared with the file's own.
    """
    answers, ms = classify_files(bundle, [p for p, _ in files], top_k=top_k)
    correct = sum(answer(a) == label for a, (_, label) in zip(answers, files, strict=True))
    low, high = wilson_interval(correct, len(files))
    return correct, low, high, ms


def float_int8_lines(name: str, report: dict[str, Any], keys: Sequence[str]) -> None:
    for key in keys:
        say(
            f"[{name}] {key:>20}: float {figure_text(report['float'].get(key))}  "
            f"int8 {figure_text(report['int8'].get(key))}"
        )
    say(
        f"[{name}] invoke latency p50 (ms): "
        f"float {report['float'].get('latency_ms', {}).get('p50')}  "
        f"int8 {report['int8'].get('latency_ms', {}).get('p50')}"
    )
