"""The confusion matrix of a report as a PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_ANNOTATE_MAX = 40  # confusion cells carry their counts up to this many classes
_TICKS_MAX = 80  # beyond this many classes the axes carry no label names


def plot_confusion(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path | str, title: str = ""
) -> None:
    """Confusion matrix as a PNG: rows true, columns predicted, colour = share of the row
    (recall per class, so small classes stay visible), counts written in the cells up to 40
    classes. The figure grows with the number of classes; names are shortened to 24 chars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.int64)
    n = len(labels)
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix: shape {counts.shape} for {n} labels")
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    side = float(np.clip(0.32 * n + 3.0, 5.0, 18.0))
    font = 10 if n <= 15 else 8 if n <= 40 else 6
    figure = Figure(figsize=(side + 1.2, side), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    colorbar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    colorbar.set_label("share of the true class")
    names = [label if len(label) <= 24 else label[:23] + "…" for label in labels]
    if n <= _TICKS_MAX:
        axes.set_xticks(range(n), names, rotation=90, fontsize=font)
        axes.set_yticks(range(n), names, fontsize=font)
    else:
        axes.set_xticks([])
        axes.set_yticks([])
    if n <= _ANNOTATE_MAX:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    colour = "white" if share[i, j] > 0.5 else "black"
                    axes.text(
                        j, i, str(counts[i, j]), ha="center", va="center", color=colour,
                        fontsize=font,
                    )  # fmt: skip
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    figure.savefig(str(path), format="png")


def plot_coverage(
    curve: Sequence[Sequence[float]],
    chosen: tuple[float, float] | None,
    path: Path | str,
    title: str = "",
) -> None:
    """Accuracy of the answered images against coverage (the share answered) as the abstain
    threshold rises; the chosen threshold's point marked (coverage 1 when none is set)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = np.asarray(curve, dtype=np.float64)
    figure = Figure(figsize=(6, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(points[:, 0], points[:, 1], color="tab:blue", label="test images")
    axes.axvline(0.95, color="grey", linestyle=":", label="5 % unknown")
    if chosen is not None:
        axes.plot(*chosen, "o", color="tab:red", markersize=9, label="chosen threshold")
    axes.set_xlabel('coverage (share answered, the rest "unknown")')
    axes.set_ylabel("accuracy of the answered images")
    axes.invert_xaxis()
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    figure.savefig(str(path), format="png")


def plot_learning_curve(curve: Mapping[str, Any], path: Path | str, title: str = "") -> None:
    """Test score per class (thin lines) and overall (thick) against the share of the
    training images the head was fitted on."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shares = [100 * f for f in curve["fractions"]]
    figure = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    rows = curve["per_class"]
    for row in rows:
        values = [np.nan if v is None else v for v in row["score"]]
        axes.plot(shares, values, marker=".", linewidth=1, alpha=0.6,
                  label=row["label"] if len(rows) <= 12 else None)  # fmt: skip
    axes.plot(shares, curve["overall"], color="black", linewidth=3, marker="o",
              label=f"overall ({curve['metric']})")  # fmt: skip
    axes.set_xticks(shares, [f"{s:.0f} %" for s in shares])
    axes.set_xlabel("share of the training images")
    axes.set_ylabel(f"test {curve.get('per_class_metric', 'score')} per class")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower right", ncol=2)
    if title:
        axes.set_title(title)
    figure.tight_layout()
    figure.savefig(str(path), format="png")
