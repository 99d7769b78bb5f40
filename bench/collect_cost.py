"""What ``collect:`` costs the daemon at camera pace: CPU per frame with collection off and on,
side by side in one run (rounds alternate, so the machine's noise falls on both). By hand.

The daemon runs as users run it (``python -m device.cli run``, the shipped model, a real
mosquitto, see bench/harness.py) on the daemon benchmarks' video: 640x480 MJPG at 30 fps, a
new scene every ``--scene-frames`` frames (cat, astronaut, coffee, rocket: with ``alpha: 1``,
``min_dwell: 0`` every scene change is a transition, ~10 a second, and astronaut / rocket are
"unknown": uncertain frames). Three variants per round:

- ``off``: no ``collect`` section;
- ``on``: ``collect: {enabled: true, directory: ...}``, the defaults (6 frames per reason per
  minute: the decision runs on every frame, a few frames are written);
- ``on, unbounded``: ``max_per_minute`` 100000 -- every transition and every unsure frame
  written, i.e. nearly every frame (20-30 JPEG + sidecar pairs a second): the worst case.

Per variant: inferences/s, CPU ms per frame (the daemon's utime + stime over its inferences),
the capture slot's dropped frames, the frames collected and lost, and the CPU ratio to ``off``.
First, in this process, what the inference thread itself spends: ``Collector.observe`` timed on
``--decision-frames`` real predictions of the same scenes (the writer not running).

Usage (from the repository root)::

    python bench/collect_cost.py                       # 2 rounds x 30 s per variant
    python bench/collect_cost.py --rounds 3 --seconds 20 --json collect.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_CHECKOUT = str(Path(__file__).resolve().parents[1])
if _CHECKOUT not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, _CHECKOUT)

import numpy as np  # noqa: E402

from bench.harness import (  # noqa: E402
    PACE_FPS,
    SCENES,
    DaemonRun,
    Listener,
    make_video,
    run_daemon,
)

VARIANTS: dict[str, dict[str, Any] | None] = {
    "off": None,
    "on": {},
    "on, unbounded": {"max_per_minute": 100000},
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds skipped per run")
    parser.add_argument("--scene-frames", type=int, default=3, help="frames per scene")
    parser.add_argument("--decision-frames", type=int, default=600)
    parser.add_argument("--work", type=Path, default=None, help="keep files here")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    return parser.parse_args(argv)


def decision_cost(ctx: argparse.Namespace) -> dict[str, float]:
    """Microseconds ``Collector.observe`` takes on the inference thread, per frame."""
    from device.capture import Frame
    from device.config import KestrelConfig
    from device.inference.engine import Classifier
    from device.inference.preprocess import read_image
    from device.paths import DEFAULT_MODEL, SAMPLES_DIR
    from device.publish.payloads import MAIN_STAGE
    from device.run.cascade import CascadeStage
    from device.run.collect import Collector

    collect = {"enabled": True, "directory": str(ctx.work / "frames-decisions")}
    camera = {"name": "cam", "source": "demo", "smoothing": {"alpha": 1.0, "min_dwell": 0.0}}
    config = KestrelConfig.model_validate(
        {"mqtt": None, "cameras": [camera | {"collect": collect}]}
    )
    (cam,) = config.cameras
    stage = CascadeStage.build(MAIN_STAGE, Classifier(DEFAULT_MODEL, top_k=3), cam.smoothing)
    collector = Collector(cam, queue_frames=ctx.decision_frames)
    images = [read_image(str(SAMPLES_DIR / name), (320, 240)) for name in SCENES]
    times = []
    for i in range(ctx.decision_frames):
        at = i / PACE_FPS
        image = images[(i // ctx.scene_frames) % len(images)]
        stage.classify(image, "BGR", None)
        stage.smooth(at)
        frame = Frame(image, "BGR", i, 1e9 + at, at)
        started = time.perf_counter()
        collector.observe(frame, [stage])
        times.append((time.perf_counter() - started) * 1e6)
    kept = collector.drain()
    figures = {
        "p50_us": float(np.percentile(times, 50)),
        "p99_us": float(np.percentile(times, 99)),
        "mean_us": float(np.mean(times)),
        "kept": kept,
    }
    print(
        f"Collector.observe on the inference thread, {len(times)} frames ({kept} kept): "
        f"p50 {figures['p50_us']:.0f} us, p99 {figures['p99_us']:.0f} us, "
        f"mean {figures['mean_us']:.0f} us",
        flush=True,
    )
    return figures


def one_run(ctx: argparse.Namespace, listener: Listener, variant: str, r: int) -> dict[str, Any]:
    """One daemon run of a variant; its figures, with the last stats' ``collect`` entry."""
    collect = VARIANTS[variant]
    overrides = []
    if collect is not None:
        folder = ctx.work / f"frames-{variant.replace(', ', '-')}-{r}"
        overrides.append(("camera.collect", {"enabled": True, "directory": str(folder)} | collect))
    run_ctx = argparse.Namespace(**vars(ctx) | {"overrides": overrides})
    run: DaemonRun = run_daemon(
        "collect",
        run_ctx,
        listener,
        source_fps=PACE_FPS,
        max_fps=PACE_FPS,
        snapshots=False,
        seconds=ctx.seconds,
    )
    _, stats = listener.take()
    kept = stats[-1]["cameras"]["cam"].get("collect", {}) if stats else {}
    figures = {
        "fps": run.fps,
        "cpu_ms_per_frame": run.cpu_ms_per_frame,
        "dropped": run.dropped_total,
        "others_cores": run.others_cores,
        "saved": sum(kept.get("saved", {}).values()),
        "lost": sum(kept.get("dropped", {}).values()),
        "rate_limited": kept.get("rate_limited", 0),
    }
    print(
        f"  round {r + 1} {variant:<14} {run.fps:5.1f} fps, {run.cpu_ms_per_frame:5.2f} CPU "
        f"ms/frame, dropped {run.dropped_total}, collected {figures['saved']} (lost "
        f"{figures['lost']}, over the rate {figures['rate_limited']}), others "
        f"{run.others_cores:.2f} cores",
        flush=True,
    )
    return figures


def summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Medians per variant, printed as a table with the CPU ratio to ``off``."""
    base = statistics.median(x["cpu_ms_per_frame"] for x in runs["off"])
    print("\n  | variant | frames/s | CPU ms/frame | x off | dropped | collected | lost |")
    print("  |---|---|---|---|---|---|---|")
    out = {}
    for variant, rs in runs.items():
        cpu = statistics.median(x["cpu_ms_per_frame"] for x in rs)
        fps = statistics.median(x["fps"] for x in rs)
        row = {
            "fps": fps,
            "cpu_ms_per_frame": cpu,
            "ratio_to_off": cpu / base,
            "dropped": sum(x["dropped"] for x in rs),
            "collected": sum(x["saved"] for x in rs),
            "lost": sum(x["lost"] for x in rs),
        }
        print(
            f"  | {variant} | {fps:.1f} | {cpu:.2f} | {cpu / base:.3f} | {row['dropped']} | "
            f"{row['collected']} | {row['lost']} |"
        )
        out[variant] = row
    return out


def main(argv: list[str] | None = None) -> int:
    from tests.device.broker import Mosquitto

    ctx = parse_args(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="kestrel-collect-bench-") as tmp:
        ctx.work = Path(ctx.work or tmp).resolve()
        ctx.work.mkdir(parents=True, exist_ok=True)
        ctx.video = ctx.work / "scenes-640x480.avi"
        frames = make_video(ctx.video, 60.0, ctx.scene_frames)
        print(
            f"video {ctx.video.name}: {frames} frames 640x480 MJPG at {PACE_FPS:g} fps, a scene "
            f"change every {ctx.scene_frames} frames; {os.cpu_count()} cores, load "
            f"{os.getloadavg()[0]:.2f}"
        )
        decisions = decision_cost(ctx)
        broker = Mosquitto(ctx.work / "mosquitto").start()
        ctx.port = broker.port
        listener = Listener(broker.port)
        runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
        try:
            for r in range(ctx.rounds):
                for variant in VARIANTS:
                    runs[variant].append(one_run(ctx, listener, variant, r))
        finally:
            listener.close()
            broker.stop()
        results = summary(runs)
        if ctx.json:
            ctx.json.write_text(
                json.dumps({"decisions": decisions, "runs": runs, "summary": results}, indent=2)
                + "\n"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
