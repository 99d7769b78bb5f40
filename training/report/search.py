"""The report's sections about how the model was chosen: the data profile, every candidate of
the search, and the verdict against the classical baselines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from training.report.cells import bullets, fmt, table
from training.report.layout import COVERAGE_PNG, LEARNING_PNG


def search_section(report: Mapping[str, Any]) -> list[str]:
    """The data profile and the candidates table (val score, int8 score, time, size, status)."""
    search = report.get("search") or {}
    if not search:
        return []
    lines = ["## Model search", ""]
    profile = search.get("profile") or {}
    if profile:
        mode = "grayscale" if profile.get("grayscale") else "colour"
        lines += bullets(
            [
                f"data: {profile.get('images')} images, {profile.get('classes')} labels, "
                f"{profile.get('per_class_min')} to {fmt(profile.get('per_class_median'), 0)} "
                "training images per label (fewest, median)",
                f"native size (shorter side): median {profile.get('native_size')} px, "
                f"{profile.get('smallest')}-{profile.get('largest')} px; {mode}",
                *(profile.get("notes") or []),
            ]
        )
    rows = [
        [
            row.get("name"),
            row.get("input"),
            fmt(row.get("screen_val")),
            fmt(row.get("val_float")),
            fmt(row.get("val_exported")),
            fmt(row.get("seconds"), 1),
            fmt(row.get("size_mb"), 2),
            row.get("status", ""),
        ]
        for row in search.get("candidates", [])
    ]
    header = ["candidate", "input", "round 1 val", "val (float)", "val (int8)", "train s", "MB"]
    lines += table([*header, "status"], rows)
    lines += [f"**Chosen:** {search.get('why', '')}", ""]
    if "budget_min" in search:
        lines += [
            f"Time budget {float(search['budget_min']):g} min, of which "
            f"{fmt(search.get('reserved_after_search_s'), 0)} s were kept for the gate, the "
            "baselines and the learning curve after the search.",
            "",
        ]
    why = [f"{row.get('name')}: {row.get('why')}" for row in search.get("candidates", [])]
    lines += bullets(why)
    return lines


def coverage_lines(report: Mapping[str, Any], image: bool) -> list[str]:
    """The coverage vs accuracy plot of the shipped model, with the chosen point."""
    if not image:
        return []
    return [
        f"![Accuracy of the answered images vs coverage; the chosen threshold marked]"
        f"({COVERAGE_PNG})",
        "",
    ]


def remedies_lines(report: Mapping[str, Any]) -> list[str]:
    """The int8 remedies tried after the first export failed the gate, in order."""
    tried = report.get("int8_remedies") or []
    if not tried:
        return []
    items = [
        f"{row['remedy']}: "
        + (
            "not tried"
            if row.get("drop_points") is None
            else f"int8 loses {row['drop_points']:.2f} points, "
        )
        + (
            ""
            if row.get("drop_points") is None
            else ("passes the gate" if row.get("passed") else "still fails")
        )
        for row in tried
    ]
    return ["## int8 remedies tried", "", *bullets(items)]


def learning_lines(report: Mapping[str, Any]) -> list[str]:
    """How much data is enough: the plot and the per-class table."""
    curve = report.get("learning_curve") or {}
    if not curve:
        return []
    shares = [f"{100 * f:.0f} %" for f in curve["fractions"]]
    rows = [
        [row["label"], "/".join(str(n) for n in row["images"]),
         *(fmt(v) for v in row["score"]), row["advice"]]
        for row in curve["per_class"]
    ]  # fmt: skip
    rows.append(["**overall**", "", *(fmt(v) for v in curve["overall"]), ""])
    return [
        "## How much data is enough (learning curve)",
        "",
        f"The chosen head refitted on a share of the training images ({curve['embeddings']} "
        f"embeddings); test {curve.get('per_class_metric', 'score')} per class. "
        + curve["summary"],
        "",
        f"![Learning curve]({LEARNING_PNG})",
        "",
        *table(["class", "images", *shares, "advice"], rows),
    ]


def verdict_line(report: Mapping[str, Any]) -> list[str]:
    """Whether the shipped model beats the best classical baseline, said plainly."""
    verdict = report.get("baseline_verdict")
    if not verdict:
        return []
    return [f"**{verdict['message']}**", ""]


__all__ = ["coverage_lines", "learning_lines", "remedies_lines", "search_section", "verdict_line"]
