"""Markdown building blocks: one value in a cell, a table, a bullet list."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from training.report.layout import REPORT_JSON

LISTED = 50  # skipped files and warnings shown in report.md before "... and N more"


def fmt(value: Any, digits: int = 3) -> str:
    """A value as a table cell: – for None, yes/no, integers as is, floats to ``digits``."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}"
    return str(value)


def pct(value: Any) -> str:
    """A share as a percentage with one decimal, – for None."""
    return "–" if value is None else f"{100 * float(value):.1f} %"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A markdown table (first column left-aligned, the others right) and a blank line."""

    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return [*lines, ""]


def bullets(items: Sequence[Any], limit: int = LISTED) -> list[str]:
    """A bullet list of at most ``limit`` items, saying how many more are in the JSON."""
    lines = [f"- {item}" for item in items[:limit]]
    if len(items) > limit:
        lines.append(f"- … and {len(items) - limit} more (all of them in {REPORT_JSON})")
    return [*lines, ""]


def facts(items: Mapping[str, Any]) -> list[str]:
    """``key: value`` lines for free-form facts; lists and dicts on one line, shortened."""

    def value(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, Mapping):
            return ", ".join(f"{k}={value(x)}" for k, x in v.items())
        if isinstance(v, (list, tuple)):
            shown = ", ".join(value(x) for x in v[:10])
            return f"[{shown}{', …' if len(v) > 10 else ''}]"
        return fmt(v)

    return [f"{k}: {value(v)}" for k, v in items.items()]
