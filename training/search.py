"""The short search that picks the model when the settings leave it open.

:func:`choose_model` takes the candidates of :mod:`training.candidates` and, within the time
budget:

1. *screen* (successive halving): with two or more candidates on a large training split,
   each trains on a stratified quarter of it and the better half (by validation score, float)
   goes on. Fine-tuning candidates skip it: they start from the head they refine and keep its
   weights when fine-tuning does not lower the validation loss, so they are never worse than
   it, and a quarter of the data with an epoch or two says nothing about them (measured on
   Fashion-MNIST: one epoch on 1,280 images raised the validation loss; on the whole split, 12
   epochs took int8 accuracy from 0.87 to 0.90 in an earlier round);
2. *final*: each remaining candidate, cheapest first, trains on the whole training split
   until its share of the time left is used (or its epochs end; shares follow the estimated
   costs of the candidates still to run), is exported (int8 calibrated on real training
   images) and scored on the validation split: the exported model through the device
   runtime, the float model in TensorFlow (the same numbers as its float32 TFLite twin);
   one whose estimate no longer fits the budget is not run (and the report says so).

The winner has the best validation score of the exported model; among candidates within half
a point of it, the smallest model wins: on the device it runs fastest. Nothing is written
outside temporary folders here: an interrupted search (Ctrl-C) leaves no bundle behind.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device.inference.bundle import write_bundle
from training import evaluate, metrics
from training.candidates import (
    EXPORT_S,
    Candidate,
    estimate_seconds,
    minimum_seconds,
    plan_candidates,
)
from training.config import TrainConfig
from training.data.pixels import PixelArray, batches
from training.export import Exported, export_model
from training.inputs import decode_pixels, resolve_setup, subset
from training.manifest import bundle_identity
from training.phases import DecodedData, Phases, Trained, say
from training.profile import DataProfile
from training.strategies import train_model

SCREEN_MIN_TRAIN = 1500  # below this many training images every candidate runs in full
SCREEN_MIN_CANDIDATES = 2  # round 1 needs at least this many candidates to compare
SCREEN_FRACTION = 0.25
SCREEN_SHARE = 0.25  # of the budget left for training
# Kept from the budget for what runs after the search: the gate (two models through the device
# runtime on validation + test), the baselines and the learning curve grow with the images
# (measured: 204 s for Fashion-MNIST's 5,100 train, 900 validation and 10,000 test images,
# where a flat 110 s overran the budget by a minute); the share covers the pace varying.
RESERVE_S = 20.0
RESERVE_MS_PER_IMAGE = 13.0
RESERVE_SHARE = 0.05
PACE_LIMITS = (0.25, 4.0)  # measured / estimated seconds are taken within these
TIE_POINTS = 0.5  # validation scores at least this close tie; the smaller model wins


class BudgetError(ValueError):
    """The time budget cannot fit even the fastest candidate."""


@dataclass
class Run:
    """One candidate's run: settings, what it trained, and its row in the report."""

    candidate: Candidate
    config: TrainConfig
    row: dict[str, Any]
    data: DecodedData | None = None
    phases: Phases = field(default_factory=Phases)
    trained: Trained | None = None
    exported: Exported | None = None
    score: float | None = None


@dataclass
class Chosen:
    """The winner, trained on the full training split, and the report's search section."""

    config: TrainConfig
    data: DecodedData
    trained: Trained
    exported: Exported | None
    section: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # the winner's final run, by phase

    @property
    def setup(self) -> Any:
        return resolve_setup(self.config)


def after_search_seconds(profile: DataProfile) -> float:
    """Seconds the gate, the baselines, the learning curve and the report take on this data."""
    return RESERVE_S + RESERVE_MS_PER_IMAGE / 1000 * profile.images


def reserve_seconds(config: TrainConfig, profile: DataProfile) -> float:
    """Seconds of the budget kept from the search: what runs after it, and a margin."""
    return after_search_seconds(profile) + RESERVE_SHARE * config.time_budget * 60


def budget_seconds(config: TrainConfig, profile: DataProfile, elapsed: float) -> float:
    """Seconds left for training after what has run and what must run afterwards."""
    return config.time_budget * 60 - elapsed - reserve_seconds(config, profile)


def check_budget(candidates: list[Candidate], config: TrainConfig, profile: DataProfile,
                 available: float) -> None:  # fmt: skip
    """Raise BudgetError (before any training) when not even the fastest candidate fits."""
    cheapest = min(candidates, key=lambda c: minimum_seconds(c, config, profile))
    need = minimum_seconds(cheapest, config, profile)
    if need > available:
        total = (need + after_search_seconds(profile)) / (1 - RESERVE_SHARE) / 60
        raise BudgetError(
            f"time budget {config.time_budget:g} min is too small: the fastest candidate "
            f"({cheapest.name}) needs about {need / 60:.1f} min on {profile.train_images} "
            f"training images, {max(available, 0) / 60:.1f} min are left; "
            f"give --time-budget {math.ceil(total)} or more"
        )


def _score(task: str, probs: np.ndarray, data: DecodedData, y: np.ndarray) -> float:
    """The validation figure that ranks candidates: mAP for multilabel, accuracy otherwise
    (at the default thresholds: calibration comes later, for the winner)."""
    ds = data.dataset
    section = metrics.compute_metrics(task, probs, y, ds.labels, None, ds.taxonomy)
    return float(section["map"] if task == "multilabel" else section["accuracy"])


def _tf_probs(trained: Trained, pixels: PixelArray, task: str) -> np.ndarray:
    parts = [trained.model.predict_on_batch(b.astype(np.float32)) for b in batches(pixels, 64)]
    out = np.concatenate(parts) if parts else np.zeros((0, trained.model.output_shape[-1]))
    if trained.activation != "none":
        return out
    if task in ("multilabel", "binary"):
        return 1 / (1 + np.exp(-out))
    e = np.exp(out - out.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _device_score(run: Run, data: DecodedData) -> float:
    """Validation score of the exported model through the device runtime (a temp bundle)."""
    assert run.trained is not None and run.exported is not None
    setup = resolve_setup(run.config)
    identity = bundle_identity(
        run.candidate.name, data.dataset, run.config, setup.backbone,
        (setup.size, setup.channels), run.trained.activation, "kestrel train (search)",
    )  # fmt: skip
    exported = run.exported
    with tempfile.TemporaryDirectory(prefix="kestrel-search-") as tmp:
        fields = identity.fields_for(exported.model, exported.format_name, setup.input.dtype)
        bundle = write_bundle(Path(tmp) / "candidate", exported.model, fields)
        probs = evaluate.run_bundle(bundle, data.val_px, progress=False).probs
    return _score(run.config.task, probs, data, data.y_val)


def _train(run: Run, data: DecodedData, progress: bool, seconds: float) -> None:
    """Train ``run`` on ``data``, its fits stopping ``seconds`` from now (the time its share
    of the budget leaves, measured as it goes: no estimate caps its epochs)."""
    started = time.perf_counter()
    run.phases = Phases()
    setup = resolve_setup(run.config)
    deadline = started + max(seconds, 0.0)
    run.trained = train_model(setup, data, run.config, run.phases, progress, deadline)
    run.row["seconds"] = round(time.perf_counter() - started, 1)
    run.row["epochs"] = {
        k: v for k, v in run.trained.info.items() if k in ("epochs", "head_epochs", "fine_tune")
    }


def _row(candidate: Candidate) -> dict[str, Any]:
    o = candidate.overrides
    return {
        "name": candidate.name,
        "backbone": o["backbone"],
        "input": f"{o['image_size']}x{o['image_size']}x{1 if o.get('grayscale') else 3}",
        "fine_tune": bool(o.get("fine_tune")),
        "why": candidate.why,
        "estimated_s": round(candidate.seconds, 1),
    }


def choose_model(
    dataset: Any,
    profile: DataProfile,
    config: TrainConfig,
    *,
    elapsed: float,
    progress: bool,
) -> Chosen:
    """Plan, check the budget, screen, train the finalists and pick the winner."""
    candidates = plan_candidates(profile, config)
    available = budget_seconds(config, profile, elapsed)
    check_budget(candidates, config, profile, available)
    deadline = time.perf_counter() + available
    runs = [Run(c, c.config(config), _row(c)) for c in candidates]
    decoded: dict[tuple[int, int], DecodedData] = {}

    def data_for(run: Run) -> DecodedData:
        setup = resolve_setup(run.config)
        key = (setup.size, setup.channels)
        if key not in decoded:
            decoded[key] = decode_pixels(dataset, run.config, setup, progress=progress)
        return decoded[key]

    finalists = runs
    screened = round_one(runs, profile)
    if screened:
        kept = _screen(screened, data_for, config, available * SCREEN_SHARE, progress)
        finalists = [run for run in runs if run in kept or run not in screened]
    _final(finalists, data_for, deadline, profile, progress)
    winner, why = _pick(runs)
    for run in runs:
        if run is not winner:
            run.trained = run.exported = run.data = None  # free the losers' memory
    assert winner.data is not None and winner.trained is not None
    section = {
        "profile": profile.to_dict(),
        "candidates": [run.row for run in runs],
        "winner": winner.candidate.name,
        "why": why,
        "budget_min": config.time_budget,
        "reserved_after_search_s": round(reserve_seconds(config, profile)),
    }
    return Chosen(
        winner.config, winner.data, winner.trained, winner.exported, section,
        dict(winner.phases.seconds),
    )  # fmt: skip


def round_one(runs: list[Run], profile: DataProfile) -> list[Run]:
    """The runs round 1 compares: those not fine-tuning, when there are enough of them and
    enough training images (else none: every candidate goes to the final)."""
    screened = [run for run in runs if not run.candidate.overrides.get("fine_tune")]
    enough = len(screened) >= SCREEN_MIN_CANDIDATES and profile.train_images >= SCREEN_MIN_TRAIN
    return screened if enough else []


def _screen(runs: list[Run], data_for: Any, config: TrainConfig, share: float,
            progress: bool) -> list[Run]:  # fmt: skip
    """Round 1: every candidate on a stratified quarter of the training split; the better
    half (float validation score) goes on."""
    if progress:
        say(f"search, round 1: {len(runs)} candidates on {SCREEN_FRACTION:.0%} of the training set")
    for run in runs:
        small = subset(data_for(run), SCREEN_FRACTION, config.seed)
        _train(run, small, progress, share / len(runs))
        assert run.trained is not None
        probs = _tf_probs(run.trained, small.val_px, run.config.task)
        run.row["screen_val"] = round(_score(run.config.task, probs, small, small.y_val), 4)
        run.row["screen_s"] = run.row.pop("seconds")
        run.trained = None
        if progress:
            say(f"  {run.candidate.name}: validation {run.row['screen_val']:.3f}")
    ranked = sorted(runs, key=lambda r: (-r.row["screen_val"], r.candidate.seconds))
    keep = ranked[: math.ceil(len(runs) / 2)]
    for run in ranked[len(keep) :]:
        run.row["status"] = "eliminated in round 1 (validation score on a quarter of the data)"
    return keep


def _final(runs: list[Run], data_for: Any, deadline: float, profile: DataProfile,
           progress: bool) -> None:  # fmt: skip
    """The finalists on the full training split, cheapest first, within the deadline: each
    trains until the time :func:`_allowed` gives it is used, less what its export
    takes. Whether a candidate is run at all depends on its estimate, rescaled by how the runs
    so far compared with theirs (a busy machine or a fast one)."""
    pace = 1.0
    for k, run in enumerate(runs):
        left = deadline - time.perf_counter()
        cheapest = minimum_seconds(run.candidate, run.config, profile) * pace
        if cheapest > left and any(r.score is not None for r in runs):
            run.row["status"] = f"not run: needs ~{cheapest:.0f} s, {max(left, 0):.0f} s left"
            continue
        data = data_for(run)
        started = time.perf_counter()
        if progress:
            say(f"search: training {run.candidate.name} ({run.row['input']})")
        _train(run, data, progress, _allowed(runs[k:], left, cheapest) - EXPORT_S)
        assert run.trained is not None
        run.data = data
        if len(runs) == 1:  # nothing to compare: the trainer exports and gates it
            run.score, run.row["status"] = 0.0, "finalist"
            return
        run.exported = export_model(
            run.trained.model, data.train_px, run.config.export_format,
            run.config.calibration_images, run.trained.augmenter, run.config.seed,
            reference=False, progress=progress,
        )  # fmt: skip
        float_probs = _tf_probs(run.trained, data.val_px, run.config.task)
        val_float = _score(run.config.task, float_probs, data, data.y_val)
        run.score = _device_score(run, data)
        run.row |= {"val_float": round(val_float, 4), "val_exported": round(run.score, 4)}
        run.row["size_mb"] = round(len(run.exported.model) / 1e6, 3)
        pace = _pace(run, profile, time.perf_counter() - started)
        run.row["status"] = "finalist"
        if progress:
            say(f"  {run.candidate.name}: validation {run.row['val_float']:.3f} float, "
                f"{run.row['val_exported']:.3f} {run.exported.format_name}")  # fmt: skip


def _share(runs: list[Run]) -> float:
    """The first run's share of the time left: in proportion to the estimates of the runs
    still to go, so a short budget shortens each by the same fraction (an equal split gave a
    small CNN half and left Lite0 fine-tuning 4 epochs on Fashion-MNIST)."""
    return runs[0].candidate.seconds / max(sum(r.candidate.seconds for r in runs), 1e-9)


def _allowed(runs: list[Run], left: float, cheapest: float) -> float:
    """Seconds the first run may take: its share, but at least its cheapest useful run when
    that fits (a share under what a head's cache lookups and export take left it one epoch,
    measured on Fashion-MNIST; time it does not use passes to the next run)."""
    return min(max(left * _share(runs), cheapest), left)


def _pace(run: Run, profile: DataProfile, seconds: float) -> float:
    """Measured over estimated seconds of ``run``, for the epochs it really ran (within
    PACE_LIMITS: a run on cached embeddings says little about the next one)."""
    assert run.trained is not None
    info = run.trained.info
    done = dict(run.candidate.overrides)
    if "epochs" in info:  # from scratch
        done["epochs"] = info["epochs"]
    config = run.config
    if "fine_tune_epochs" in info:
        config = config.override(fine_tune_epochs=info["fine_tune_epochs"])
    estimate = estimate_seconds(dataclasses.replace(run.candidate, overrides=done), config,
                                profile)  # fmt: skip
    low, high = PACE_LIMITS
    return min(high, max(low, seconds / max(estimate, 1.0)))


def _pick(runs: list[Run]) -> tuple[Run, str]:
    """The best exported validation score; among those within TIE_POINTS of it, the smallest
    model, the one that runs fastest on the device (then the better score).

    The margin stays small even on a tiny validation split: there a wider one (its standard
    error, 8 points on 20 images) handed few-shot Fashion-MNIST to the small CNN, 0.65 on the
    test set where the pretrained head it tied with reaches 0.70."""
    done = [r for r in runs if r.score is not None]
    if len(done) == 1 and len(runs) == 1:
        done[0].row["status"] = "chosen (the only candidate)"
        return done[0], f"{done[0].candidate.name}: the only candidate for these settings"
    scores = {id(r): float(r.score or 0.0) for r in done}  # all set: None filtered out
    best = max(scores.values())
    tied = [r for r in done if scores[id(r)] >= best - TIE_POINTS / 100]
    winner = min(tied, key=lambda r: (r.row["size_mb"], -scores[id(r)]))
    winner.row["status"] = "winner"
    others = ", ".join(f"{r.candidate.name} {r.score:.3f}" for r in done if r is not winner)
    why = (
        f"{winner.candidate.name} ({winner.row['input']}) won with validation "
        f"{winner.exported.format_name if winner.exported else ''} {winner.score:.3f}"
        + (f" vs {others}" if others else "")
    )
    if scores[id(winner)] < best:
        why += f" (within {TIE_POINTS:g} points of the best: the smaller model)"
    return winner, why


__all__ = [
    "BudgetError",
    "Chosen",
    "after_search_seconds",
    "budget_seconds",
    "check_budget",
    "choose_model",
    "reserve_seconds",
    "round_one",
]
