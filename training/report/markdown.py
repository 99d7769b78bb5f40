"""``report.md``: the human-readable report, section by section."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from training.report.cells import bullets, facts, fmt, table
from training.report.layout import SECTIONS, section_title
from training.report.results import (
    abstain_table,
    baselines_table,
    confusion_section,
    hierarchy_tables,
    latency_table,
    level_accuracy,
    per_class_table,
)
from training.report.search import (
    coverage_lines,
    learning_lines,
    remedies_lines,
    search_section,
    verdict_line,
)


def render_markdown(
    report: Mapping[str, Any], *, confusion_image: bool = True, coverage_image: bool = False
) -> str:
    """The human-readable report."""
    task = report.get("task", "")
    sections = {k: report[k] for k in SECTIONS if report.get(k)}
    columns = [(k, section_title(report, k)) for k in sections]
    lines = _header(report, task)
    lines += _summary(report, sections, columns, task)
    lines += _dataset(report)
    lines += _thresholds(report, task)
    if sections:
        lines += per_class_table(report, sections, task)
        lines += confusion_section(report, confusion_image)
        if task == "multiclass":
            lines += abstain_table(sections, columns)
            lines += coverage_lines(report, coverage_image)
        if task == "hierarchical":
            lines += hierarchy_tables(sections, columns)
        lines += latency_table(sections, columns)
    lines += baselines_table(report, sections, task)
    lines += verdict_line(report)
    lines += search_section(report)
    lines += remedies_lines(report)
    lines += learning_lines(report)
    for key, title in (
        ("training", "Training"),
        ("timings_s", "Time per phase (seconds)"),
        ("config", "Settings"),
    ):
        if isinstance(report.get(key), Mapping) and report[key]:
            lines += [f"## {title}", "", *bullets(facts(report[key]), limit=200)]
    return "\n".join(lines).rstrip() + "\n"


def _header(report: Mapping[str, Any], task: str) -> list[str]:
    """The title, the kind of run, the bundle and command, and the model's facts."""
    lines = [f"# Kestrel report: {report.get('name', 'model')}", ""]
    run_facts = [
        f"**task** {task}" if task else "",
        f"**{report['kind']}**" if report.get("kind") else "",
        f"created {report['created_at']}" if report.get("created_at") else "",
    ]
    if any(run_facts):
        lines += [" · ".join(x for x in run_facts if x), ""]
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
    return lines


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
        [name, *(fmt(sections[k].get(key), digits) for k, _ in columns)]
        for name, key, digits in figures
    ]
    if task == "hierarchical":
        rows += [
            [f"accuracy at level {level['level']}"]
            + [fmt(level_accuracy(sections[k], level["level"])) for k, _ in columns]
            for level in next(iter(sections.values())).get("levels", [])
        ]
    rows.append(
        [
            "latency p50 (ms)",
            *(fmt(sections[k].get("latency_ms", {}).get("p50"), 2) for k, _ in columns),
        ]
    )
    lines += table(["", *(title for _, title in columns)], rows)
    gate = report.get("gate")
    if gate:
        verdict = "PASSED" if gate.get("passed") else "FAILED"
        lines += [f"**int8 accuracy gate: {verdict}** — {gate.get('message', '')}", ""]
    return lines


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
        lines += table(["label", *splits], rows)
    if skipped:
        lines += [f"### Skipped files ({len(skipped)})", ""]
        lines += bullets([_skipped_item(item) for item in skipped])
    if warnings:
        lines += ["### Warnings", ""]
        lines += bullets(list(warnings))
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
                f"- binary: answer the positive class at P >= {fmt(thresholds.get('binary'))}"
            )
        elif task == "multiclass":
            abstain = thresholds.get("abstain")
            lines.append(
                f'- abstain: answer "unknown" when the top score is below {fmt(abstain)}'
                if abstain is not None
                else "- abstain: none (the top class is always answered)"
            )
        elif task == "hierarchical":
            lines.append(
                f"- hierarchy: report the deepest node with probability >= "
                f"{fmt(thresholds.get('hierarchy'))}, else back off to its parent"
            )
        elif task == "multilabel":
            per_label = thresholds.get("per_label") or {}
            lines.append(f"- per label ({len(per_label)}): see the per-label table")
        lines.append("")
    if notes:
        lines += bullets(list(notes))
    return lines
