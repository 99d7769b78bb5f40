"""Writing a report's files: ``report.json``, ``report.md``, ``confusion.png`` and (multiclass)
``coverage.png``."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from training.report.layout import (
    CONFUSION_PNG,
    COVERAGE_PNG,
    LEARNING_PNG,
    REPORT_JSON,
    REPORT_MD,
    SECTIONS,
    main_key,
    main_section,
    section_title,
)
from training.report.markdown import render_markdown
from training.report.plots import plot_confusion, plot_coverage, plot_learning_curve


def write_report(out_dir: Path | str, report: Mapping[str, Any]) -> None:
    """Write ``report.json``, ``report.md`` and (when a confusion matrix exists) ``confusion.png``
    into ``out_dir``. Sections that are absent are left out of the markdown."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_text = json.dumps(report, indent=2, default=_json_default) + "\n"
    report = _normalized(report)
    section = main_section(report)
    has_png = bool(section and section.get("confusion_matrix"))
    if has_png:
        assert section is not None
        title = f"{report.get('name', 'model')} ({section_title(report, main_key(report))})"
        plot_confusion(
            section["confusion_matrix"], section["confusion_labels"], out / CONFUSION_PNG, title
        )
    has_coverage = bool(section and section.get("coverage_curve"))
    if has_coverage:
        assert section is not None
        abstain = section.get("abstain") or {}
        chosen = (
            (abstain["coverage"], abstain["accuracy_on_answered"])
            if abstain.get("coverage") is not None
            else (1.0, section.get("accuracy"))
        )
        plot_coverage(section["coverage_curve"], chosen, out / COVERAGE_PNG, report.get("name", ""))
    if report.get("learning_curve"):
        plot_learning_curve(report["learning_curve"], out / LEARNING_PNG, report.get("name", ""))
    _write_text(out / REPORT_JSON, json_text)
    markdown = render_markdown(report, confusion_image=has_png, coverage_image=has_coverage)
    _write_text(out / REPORT_MD, markdown)


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
        main = main_key(out)
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
