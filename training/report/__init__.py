"""The evaluation report in a bundle folder: ``report.json``, ``report.md`` and ``confusion.png``.

The report is one JSON-able dict; every key is optional except ``task``, so the same writer
serves ``kestrel train`` (float vs int8, gate, baselines) and ``kestrel eval`` (one model):

- ``name``, ``task``, ``kind`` ("train" or "eval"), ``created_at``, ``bundle``, ``command``
- ``dataset``: :meth:`training.data.Dataset.summary` (split, images and counts per split ...)
- ``skipped``: files left out, ``[{"path", "reason"}]``; ``warnings``: strings
- ``thresholds``: the manifest's thresholds; ``calibration``: notes on how they were chosen
- ``float``, ``int8``: sections, each :func:`training.metrics.compute_metrics` output plus
  ``latency_ms`` (and ``scheme``, ``bundle``), see :func:`training.evaluate.evaluate_pixels`.
  ``int8`` is the model as shipped (its ``scheme`` says if it is not int8).
- ``gate``: :func:`training.metrics.compare_float_int8`'s verdict
- ``baselines``: :func:`training.metrics.baselines`' results; ``baselines_note`` a sentence
- ``training``: free-form facts about the run (epochs, seconds, backbone ...), shown as a list
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
CONFUSION_PNG = "confusion.png"
SECTIONS = ("float", "int8")
_LISTED = 50  # skipped files and warnings shown in report.md before "... and N more"
_ANNOTATE_MAX = 40  # confusion cells carry their counts up to this many classes
_TICKS_MAX = 80  # beyond this many classes the axes carry no label names


def write_report(out_dir: Path | str, report: Mapping[str, Any]) -> None:
    """Write ``report.json``, ``report.md`` and (when a confusion matrix exists) ``confusion.png``
    into ``out_dir``. Sections that are absent are left out of the markdown."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_text = json.dumps(report, indent=2, default=_json_default) + "\n"
    report = _normalized(report)
    section = _main_section(report)
    has_png = bool(section and section.get("confusion_matrix"))
    if has_png:
        assert section is not None
        title = f"{report.get('name', 'model')} ({_section_title(report, _main_key(report))})"
        plot_confusion(
            section["confusion_matrix"], section["confusion_labels"], out / CONFUSION_PNG, title
        )
    _write_text(out / REPORT_JSON, json_text)
    _write_text(out / REPORT_MD, render_markdown(report, confusion_image=has_png))


def _normalized(report: Mapping[str, Any]) -> dict[str, Any]:
    """Also accept ``latency_ms`` and ``thresholds`` keyed by section at the top level
    (``{"float": ..., "int8": ...}``), as the trainer writes them."""
    out = dict(report)
    latency = report.get("latency_ms")
    if isinstance(latency, Mapping):
        for key in SECTIONS:
            section = out.get(key)
            if section and isinstance(latency.get(key), Mapping) and "latency_ms" not in section:
                out[key] = {**section, "latency_ms": latency[key]}
    thresholds = report.get("thresholds")
    if isinstance(thresholds, Mapping) and any(k in thresholds for k in SECTIONS):
        main = _main_key(out)
        chosen = thresholds.get(main) if main else None
        out["thresholds"] = chosen or next(v for k, v in thresholds.items() if k in SECTIONS)
    return out


def _write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so an interrupted run leaves no half file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"report: cannot write a {type(value).__name__} as JSON: {value!r}")


def _main_key(report: Mapping[str, Any]) -> str | None:
    return next((k for k in ("int8", "float") if report.get(k)), None)


def _main_section(report: Mapping[str, Any]) -> Mapping[str, Any] | None:
    key = _main_key(report)
    return report[key] if key else None


def _section_title(report: Mapping[str, Any], key: str | None) -> str:
    if key is None:
        return ""
    scheme = (report.get(key) or {}).get("scheme")
    return scheme if scheme and scheme != key and key == "int8" else key


# --------------------------------------------------------------------------------------------
# The confusion matrix image


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


# --------------------------------------------------------------------------------------------
# Markdown


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}"
    return str(value)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f} %"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return [*lines, ""]


def _bullets(items: Sequence[Any], limit: int = _LISTED) -> list[str]:
    lines = [f"- {item}" for item in items[:limit]]
    if len(items) > limit:
        lines.append(f"- … and {len(items) - limit} more (all of them in {REPORT_JSON})")
    return [*lines, ""]


def render_markdown(report: Mapping[str, Any], *, confusion_image: bool = True) -> str:
    """The human-readable report."""
    task = report.get("task", "")
    sections = {k: report[k] for k in SECTIONS if report.get(k)}
    columns = [(k, _section_title(report, k)) for k in sections]
    lines = [f"# Kestrel report: {report.get('name', 'model')}", ""]
    facts = [
        f"**task** {task}" if task else "",
        f"**{report['kind']}**" if report.get("kind") else "",
        f"created {report['created_at']}" if report.get("created_at") else "",
    ]
    if any(facts):
        lines += [" · ".join(x for x in facts if x), ""]
    if report.get("bundle"):
        lines += [f"Bundle: `{report['bundle']}`", ""]
    if report.get("command"):
        lines += [f"Command: `{report['command']}`", ""]
    model_facts = [
        f"backbone: {report['backbone']}" if report.get("backbone") else "",
        f"export format: {report['export_format']}" if report.get("export_format") else "",
        f"model size: {report['model_bytes'] / 1e6:.2f} MB" if report.get("model_bytes") else "",
    ]
    if any(model_facts):
        lines += [" · ".join(x for x in model_facts if x), ""]

    lines += _summary(report, sections, columns, task)
    lines += _dataset(report)
    lines += _thresholds(report, task)
    if sections:
        lines += _per_class(report, sections, task)
        lines += _confusion(report, confusion_image)
        if task == "multiclass":
            lines += _abstain(sections, columns)
        if task == "hierarchical":
            lines += _hierarchy(sections, columns)
        lines += _latency(sections, columns)
    lines += _baselines(report, sections, task)
    for key, title in (
        ("training", "Training"),
        ("timings_s", "Time per phase (seconds)"),
        ("config", "Settings"),
    ):
        if isinstance(report.get(key), Mapping) and report[key]:
            lines += [f"## {title}", "", *_bullets(_facts(report[key]), limit=200)]
    return "\n".join(lines).rstrip() + "\n"


def _facts(items: Mapping[str, Any]) -> list[str]:
    """``key: value`` lines for free-form facts; lists and dicts on one line, shortened."""

    def value(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, Mapping):
            return ", ".join(f"{k}={value(x)}" for k, x in v.items())
        if isinstance(v, (list, tuple)):
            shown = ", ".join(value(x) for x in v[:10])
            return f"[{shown}{', …' if len(v) > 10 else ''}]"
        return _f(v)

    return [f"{k}: {value(v)}" for k, v in items.items()]


def _summary(
    report: Mapping[str, Any],
    sections: Mapping[str, Mapping[str, Any]],
    columns: Sequence[tuple[str, str]],
    task: str,
) -> list[str]:
    if not sections:
        return []
    figures: list[tuple[str, str, int]] = [("images evaluated", "n", 0)]
    if task == "multilabel":
        figures += [
            ("mAP", "map", 3),
            ("exact-match accuracy", "accuracy", 3),
            ("micro F1", "micro_f1", 3),
            ("macro F1", "macro_f1", 3),
        ]
    else:
        figures += [("accuracy", "accuracy", 3), ("macro F1", "macro_f1", 3)]
    if task == "binary":
        figures += [("ROC AUC", "roc_auc", 3), ("average precision", "average_precision", 3)]
    lines = ["## Results", ""]
    rows = [
        [name, *(_f(sections[k].get(key), digits) for k, _ in columns)]
        for name, key, digits in figures
    ]
    if task == "hierarchical":
        rows += [
            [f"accuracy at level {level['level']}"]
            + [_f(_level(sections[k], level["level"])) for k, _ in columns]
            for level in next(iter(sections.values())).get("levels", [])
        ]
    rows.append(
        [
            "latency p50 (ms)",
            *(_f(sections[k].get("latency_ms", {}).get("p50"), 2) for k, _ in columns),
        ]
    )
    lines += _table(["", *(title for _, title in columns)], rows)
    gate = report.get("gate")
    if gate:
        verdict = "PASSED" if gate.get("passed") else "FAILED"
        lines += [f"**int8 accuracy gate: {verdict}** — {gate.get('message', '')}", ""]
    return lines


def _level(section: Mapping[str, Any], level: int) -> float | None:
    for row in section.get("levels", []):
        if row["level"] == level:
            return row["accuracy"]
    return None


def _dataset(report: Mapping[str, Any]) -> list[str]:
    dataset = report.get("dataset") or {}
    skipped = report.get("skipped") or dataset.get("skipped") or []
    warnings = report.get("warnings") or dataset.get("warnings") or []
    if not (dataset or skipped or warnings):
        return []
    lines = ["## Dataset", ""]
    if dataset.get("root"):
        lines.append(f"- folder: `{dataset['root']}`")
    if dataset.get("split"):
        lines.append(f"- split: {dataset['split']}")
    if report.get("split"):
        lines.append(f"- evaluated on: {report['split']} images")
    size = dataset.get("image_size")
    if size:
        lines.append(
            "- image size (height x width): "
            + ", ".join(f"{k} {v[0]}x{v[1]}" for k, v in size.items())
        )
    lines.append("")
    counts = dataset.get("counts") or {}
    images = dataset.get("images") or {}
    if counts:
        splits = list(counts)
        labels = list(dataset.get("labels") or next(iter(counts.values()), {}))
        rows = [[label, *(counts[s].get(label, 0) for s in splits)] for label in labels]
        if images:
            rows.append(["**images**", *(images.get(s, 0) for s in splits)])
        unlabeled = dataset.get("unlabeled")
        if unlabeled:
            rows.append(["(no label)", *(unlabeled.get(s, 0) for s in splits)])
        lines += _table(["label", *splits], rows)
    if skipped:
        lines += [f"### Skipped files ({len(skipped)})", ""]
        lines += _bullets([_skipped_item(item) for item in skipped])
    if warnings:
        lines += ["### Warnings", ""]
        lines += _bullets(list(warnings))
    return lines


def _skipped_item(item: Any) -> str:
    if isinstance(item, Mapping):
        return f"`{item.get('path', '?')}`: {item.get('reason', '')}"
    if isinstance(item, (list, tuple)) and len(item) == 2:
        return f"`{item[0]}`: {item[1]}"
    return str(item)


def _thresholds(report: Mapping[str, Any], task: str) -> list[str]:
    thresholds = report.get("thresholds")
    notes = report.get("calibration") or []
    if not thresholds and not notes:
        return []
    lines = ["## Decision thresholds", ""]
    if thresholds:
        if task == "binary":
            lines.append(
                f"- binary: answer the positive class at P >= {_f(thresholds.get('binary'))}"
            )
        elif task == "multiclass":
            abstain = thresholds.get("abstain")
            lines.append(
                f'- abstain: answer "unknown" when the top score is below {_f(abstain)}'
                if abstain is not None
                else "- abstain: none (the top class is always answered)"
            )
        elif task == "hierarchical":
            lines.append(
                f"- hierarchy: report the deepest node with probability >= "
                f"{_f(thresholds.get('hierarchy'))}, else back off to its parent"
            )
        elif task == "multilabel":
            per_label = thresholds.get("per_label") or {}
            lines.append(f"- per label ({len(per_label)}): see the per-label table")
        lines.append("")
    if notes:
        lines += _bullets(list(notes))
    return lines


def _per_class(
    report: Mapping[str, Any], sections: Mapping[str, Mapping[str, Any]], task: str
) -> list[str]:
    key = _main_key(report)
    assert key is not None
    main = sections[key]
    other = next((sections[k] for k in sections if k != key), None)
    what = "label" if task == "multilabel" else "class"
    lines = [f"## Per-{what} results ({_section_title(report, key)})", ""]
    header = [what, "precision", "recall", "F1", "support"]
    if task == "multilabel":
        header += ["AP", "threshold"]
    if other is not None:
        header += ["float F1"]
    other_f1 = {row["label"]: row.get("f1") for row in (other or {}).get("per_class", [])}
    per_label = (main.get("thresholds") or {}).get("per_label") or {}
    rows = []
    for row in main.get("per_class", []):
        cells = [row["label"], _f(row.get("precision")), _f(row.get("recall")), _f(row.get("f1"))]
        cells.append(_f(row.get("support")))
        if task == "multilabel":
            cells += [_f(row.get("ap")), _f(per_label.get(row["label"]))]
        if other is not None:
            cells.append(_f(other_f1.get(row["label"])))
        rows.append(cells)
    lines += _table(header, rows)
    if task == "multilabel":
        lines += [
            f"mAP {_f(main.get('map'))} · micro F1 {_f(main.get('micro_f1'))} · macro F1 "
            f"{_f(main.get('macro_f1'))} · exact-match accuracy {_f(main.get('accuracy'))} · "
            f"label-wise accuracy {_f(main.get('hamming_accuracy'))}",
            "",
        ]
    return lines


def _confusion(report: Mapping[str, Any], confusion_image: bool) -> list[str]:
    section = _main_section(report) or {}
    matrix = section.get("confusion_matrix")
    if not matrix:
        return []
    labels = section.get("confusion_labels", [])
    lines = ["## Confusion matrix", ""]
    if confusion_image:
        lines += [f"![Confusion matrix: rows true, columns predicted]({CONFUSION_PNG})", ""]
    if len(labels) <= 12:  # small enough to read as text too
        lines += _table(
            ["true \\ predicted", *labels],
            [[lab, *r] for lab, r in zip(labels, matrix, strict=True)],
        )
    elif section.get("per_class") and len(labels) < len(section["per_class"]):
        lines += [f"(only the {len(labels)} labels that occur are shown)", ""]
    return lines


def _abstain(
    sections: Mapping[str, Mapping[str, Any]], columns: Sequence[tuple[str, str]]
) -> list[str]:
    shown = [(k, t) for k, t in columns if sections[k].get("abstain")]
    if not shown:
        return []
    rows = [
        ["threshold", *(_f(sections[k]["abstain"].get("threshold")) for k, _ in shown)],
        ["coverage (answered)", *(_pct(sections[k]["abstain"].get("coverage")) for k, _ in shown)],
        [
            "accuracy on answered",
            *(_f(sections[k]["abstain"].get("accuracy_on_answered")) for k, _ in shown),
        ],
        ["top-1 accuracy (all)", *(_f(sections[k].get("accuracy")) for k, _ in shown)],
    ]
    return ['## Abstaining ("unknown")', "", *_table(["", *(t for _, t in shown)], rows)]


def _hierarchy(
    sections: Mapping[str, Mapping[str, Any]], columns: Sequence[tuple[str, str]]
) -> list[str]:
    lines = ["## Hierarchy", ""]
    levels = sorted({row["level"] for s in sections.values() for row in s.get("levels", [])})
    rows = [
        [f"level {level}", *(_f(_level(sections[k], level)) for k, _ in columns)]
        for level in levels
    ]
    rows.append(
        ["leaf (arg-max)", *(_f(sections[k].get("argmax_leaf_accuracy")) for k, _ in columns)]
    )
    lines += [
        "Accuracy per taxonomy level (level 1: the top-level node of the predicted leaf is that of "
        "the true leaf).",
        "",
        *_table(["", *(t for _, t in columns)], rows),
    ]
    backoff = [(k, t) for k, t in columns if sections[k].get("backoff")]
    if backoff:

        def get(k: str, field: str) -> Any:
            return sections[k]["backoff"].get(field)

        rows = [
            ["threshold", *(_f(get(k, "threshold")) for k, _ in backoff)],
            [
                "answer correct (true leaf or an ancestor)",
                *(_f(get(k, "accuracy")) for k, _ in backoff),
            ],
            ["answered at the leaf", *(_pct(get(k, "leaf_rate")) for k, _ in backoff)],
            ['answered "unknown"', *(_pct(get(k, "unknown_rate")) for k, _ in backoff)],
            [
                "mean depth of the answer (specificity)",
                *(
                    f"{_f(get(k, 'mean_depth'), 2)} of {_f(get(k, 'max_depth'))}"
                    for k, _ in backoff
                ),
            ],
        ]
        lines += [
            "The device's answer backs off to the parent when the leaf is unsure:",
            "",
            *_table(["", *(t for _, t in backoff)], rows),
        ]
    return lines


def _latency(
    sections: Mapping[str, Mapping[str, Any]], columns: Sequence[tuple[str, str]]
) -> list[str]:
    shown = [(k, t) for k, t in columns if sections[k].get("latency_ms")]
    if not shown:
        return []
    rows = []
    for k, title in shown:
        ms = sections[k]["latency_ms"]
        rows.append(
            [
                title,
                _f(ms.get("p50"), 2),
                _f(ms.get("p90"), 2),
                _f(ms.get("mean"), 2),
                _f(ms.get("images")),
                _f(ms.get("threads")),
                _f(ms.get("accelerator")),
            ]
        )
    return [
        "## Latency per image (device runtime, invoke only)",
        "",
        *_table(["model", "p50 ms", "p90 ms", "mean ms", "images", "threads", "accelerator"], rows),
    ]


def _baselines(
    report: Mapping[str, Any], sections: Mapping[str, Mapping[str, Any]], task: str
) -> list[str]:
    results = report.get("baselines")
    if not results:
        return []
    multilabel = task == "multilabel"
    header = ["model", "mAP", "exact-match accuracy"] if multilabel else ["model", "accuracy"]
    header += ["seconds", "train images"]
    rows = []
    for key, title in ((k, _section_title(report, k)) for k in sections):
        section = sections[key]
        figures = (
            [_f(section.get("map")), _f(section.get("accuracy"))]
            if multilabel
            else [_f(section.get("accuracy"))]
        )
        rows.append([f"**this model ({title})**", *figures, "", ""])
    for name, entry in results.items():
        if "skipped" in entry:
            rows.append([name, f"skipped: {entry['skipped']}", *([""] * (len(header) - 2))])
            continue
        figures = (
            [_f(entry.get("map")), _f(entry.get("accuracy"))]
            if multilabel
            else [_f(entry.get("accuracy"))]
        )
        rows.append([name, *figures, _f(entry.get("seconds"), 2), _f(entry.get("train_size"))])
    note = report.get("baselines_note") or (
        "Classical scikit-learn models on the same embeddings and split; the slow ones train on "
        "a sample of at most 5,000 images."
    )
    return ["## Baselines", "", note, "", *_table(header, rows)]
