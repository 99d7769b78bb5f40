"""The results sections of ``report.md``: per-class figures, confusion matrix, abstaining,
hierarchy, latency and the classical baselines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from training.report.cells import fmt, pct, table
from training.report.layout import CONFUSION_PNG, main_key, main_section, section_title


def level_accuracy(section: Mapping[str, Any], level: int) -> float | None:
    """A section's accuracy at one taxonomy level, or None when it has no such level."""
    for row in section.get("levels", []):
        if row["level"] == level:
            return row["accuracy"]
    return None


def per_class_table(
    report: Mapping[str, Any], sections: Mapping[str, Mapping[str, Any]], task: str
) -> list[str]:
    """Per-class (multilabel: per-label) precision, recall, F1 of the main model."""
    key = main_key(report)
    assert key is not None
    main = sections[key]
    other = next((sections[k] for k in sections if k != key), None)
    what = "label" if task == "multilabel" else "class"
    lines = [f"## Per-{what} results ({section_title(report, key)})", ""]
    header = [what, "precision", "recall", "F1", "support"]
    if task == "multilabel":
        header += ["AP", "threshold"]
    if other is not None:
        header += ["float F1"]
    other_f1 = {row["label"]: row.get("f1") for row in (other or {}).get("per_class", [])}
    per_label = (main.get("thresholds") or {}).get("per_label") or {}
    rows = []
    for row in main.get("per_class", []):
        figures = ("precision", "recall", "f1", "support")
        cells = [row["label"], *(fmt(row.get(figure)) for figure in figures)]
        if task == "multilabel":
            cells += [fmt(row.get("ap")), fmt(per_label.get(row["label"]))]
        if other is not None:
            cells.append(fmt(other_f1.get(row["label"])))
        rows.append(cells)
    lines += table(header, rows)
    if task == "multilabel":
        lines += [
            f"mAP {fmt(main.get('map'))} · micro F1 {fmt(main.get('micro_f1'))} · macro F1 "
            f"{fmt(main.get('macro_f1'))} · exact-match accuracy {fmt(main.get('accuracy'))} · "
            f"label-wise accuracy {fmt(main.get('hamming_accuracy'))}",
            "",
        ]
    return lines


def confusion_section(report: Mapping[str, Any], confusion_image: bool) -> list[str]:
    """The confusion image, and the matrix as a table when it is small enough to read."""
    section = main_section(report) or {}
    matrix = section.get("confusion_matrix")
    if not matrix:
        return []
    labels = section.get("confusion_labels", [])
    lines = ["## Confusion matrix", ""]
    if confusion_image:
        lines += [f"![Confusion matrix: rows true, columns predicted]({CONFUSION_PNG})", ""]
    if len(labels) <= 12:  # small enough to read as text too
        lines += table(
            ["true \\ predicted", *labels],
            [[lab, *r] for lab, r in zip(labels, matrix, strict=True)],
        )
    elif section.get("per_class") and len(labels) < len(section["per_class"]):
        lines += [f"(only the {len(labels)} labels that occur are shown)", ""]
    return lines


def abstain_table(
    sections: Mapping[str, Mapping[str, Any]], columns: Sequence[tuple[str, str]]
) -> list[str]:
    """Coverage and accuracy of the answered images at the abstain threshold."""
    shown = [(k, t) for k, t in columns if sections[k].get("abstain")]
    if not shown:
        return []
    rows = [
        ["threshold", *(fmt(sections[k]["abstain"].get("threshold")) for k, _ in shown)],
        ["coverage (answered)", *(pct(sections[k]["abstain"].get("coverage")) for k, _ in shown)],
        [
            "accuracy on answered",
            *(fmt(sections[k]["abstain"].get("accuracy_on_answered")) for k, _ in shown),
        ],
        ["top-1 accuracy (all)", *(fmt(sections[k].get("accuracy")) for k, _ in shown)],
    ]
    return ['## Abstaining ("unknown")', "", *table(["", *(t for _, t in shown)], rows)]


def hierarchy_tables(
    sections: Mapping[str, Mapping[str, Any]], columns: Sequence[tuple[str, str]]
) -> list[str]:
    """Accuracy per taxonomy level and the back-off answers at the hierarchy threshold."""
    lines = ["## Hierarchy", ""]
    levels = sorted({row["level"] for s in sections.values() for row in s.get("levels", [])})
    rows = [
        [f"level {level}", *(fmt(level_accuracy(sections[k], level)) for k, _ in columns)]
        for level in levels
    ]
    rows.append(
        ["leaf (arg-max)", *(fmt(sections[k].get("argmax_leaf_accuracy")) for k, _ in columns)]
    )
    lines += [
        "Accuracy per taxonomy level (level 1: the top-level node of the predicted leaf is that of "
        "the true leaf).",
        "",
        *table(["", *(t for _, t in columns)], rows),
    ]
    backoff = [(k, t) for k, t in columns if sections[k].get("backoff")]
    if backoff:

        def get(k: str, field: str) -> Any:
            return sections[k]["backoff"].get(field)

        rows = [
            ["threshold", *(fmt(get(k, "threshold")) for k, _ in backoff)],
            [
                "answer correct (true leaf or an ancestor)",
                *(fmt(get(k, "accuracy")) for k, _ in backoff),
            ],
            ["answered at the leaf", *(pct(get(k, "leaf_rate")) for k, _ in backoff)],
            ['answered "unknown"', *(pct(get(k, "unknown_rate")) for k, _ in backoff)],
            [
                "mean depth of the answer (specificity)",
                *(
                    f"{fmt(get(k, 'mean_depth'), 2)} of {fmt(get(k, 'max_depth'))}"
                    for k, _ in backoff
                ),
            ],
        ]
        lines += [
            "The device's answer backs off to the parent when the leaf is unsure:",
            "",
            *table(["", *(t for _, t in backoff)], rows),
        ]
    return lines


def latency_table(
    sections: Mapping[str, Mapping[str, Any]], columns: Sequence[tuple[str, str]]
) -> list[str]:
    """Per-image latency of each model through the device runtime."""
    shown = [(k, t) for k, t in columns if sections[k].get("latency_ms")]
    if not shown:
        return []
    rows = []
    for k, title in shown:
        ms = sections[k]["latency_ms"]
        rows.append(
            [
                title,
                fmt(ms.get("p50"), 2),
                fmt(ms.get("p90"), 2),
                fmt(ms.get("mean"), 2),
                fmt(ms.get("images")),
                fmt(ms.get("threads")),
                fmt(ms.get("accelerator")),
            ]
        )
    return [
        "## Latency per image (device runtime, invoke only)",
        "",
        *table(["model", "p50 ms", "p90 ms", "mean ms", "images", "threads", "accelerator"], rows),
    ]


def baselines_table(
    report: Mapping[str, Any], sections: Mapping[str, Mapping[str, Any]], task: str
) -> list[str]:
    """This model against the classical baselines."""
    results = report.get("baselines")
    if not results:
        return []
    multilabel = task == "multilabel"
    header = ["model", "mAP", "exact-match accuracy"] if multilabel else ["model", "accuracy"]
    header += ["seconds", "train images"]
    rows = []
    for key, title in ((k, section_title(report, k)) for k in sections):
        section = sections[key]
        figures = (
            [fmt(section.get("map")), fmt(section.get("accuracy"))]
            if multilabel
            else [fmt(section.get("accuracy"))]
        )
        rows.append([f"**this model ({title})**", *figures, "", ""])
    for name, entry in results.items():
        if "skipped" in entry:
            rows.append([name, f"skipped: {entry['skipped']}", *([""] * (len(header) - 2))])
            continue
        figures = (
            [fmt(entry.get("map")), fmt(entry.get("accuracy"))]
            if multilabel
            else [fmt(entry.get("accuracy"))]
        )
        rows.append([name, *figures, fmt(entry.get("seconds"), 2), fmt(entry.get("train_size"))])
    note = report.get("baselines_note") or (
        "Classical scikit-learn models on the same embeddings and split; the slow ones train on "
        "a sample of at most 5,000 images."
    )
    return ["## Baselines", "", note, "", *table(header, rows)]
