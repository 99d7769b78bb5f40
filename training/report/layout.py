"""Where a report's files go and which of its model sections is the main one.

A report holds up to two sections of figures, ``float`` and ``int8``; the int8 model is the one
shipped, so it is the main section whenever it is there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
CONFUSION_PNG = "confusion.png"
COVERAGE_PNG = "coverage.png"
LEARNING_PNG = "learning_curve.png"
SECTIONS = ("float", "int8")


def main_key(report: Mapping[str, Any]) -> str | None:
    """``"int8"`` when the report has that section, else ``"float"``, else None."""
    return next((k for k in ("int8", "float") if report.get(k)), None)


def main_section(report: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The figures of the main model, or None when the report has no section."""
    key = main_key(report)
    return report[key] if key else None


def section_title(report: Mapping[str, Any], key: str | None) -> str:
    """A section's column title: its key, or for ``int8`` the scheme it really has."""
    if key is None:
        return ""
    scheme = (report.get(key) or {}).get("scheme")
    return scheme if scheme and scheme != key and key == "int8" else key
