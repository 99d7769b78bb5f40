"""The curate report: ``curate.json`` (for ``kestrel label`` and scripts) and ``index.html``
(for a person). Paths in the report are relative to the curated folder, with ``/``.

``curate.json`` keys: ``version``, ``root``, ``created``, ``settings`` (method, clusters,
backbone, image size, the thresholds applied), ``counts`` (images, labeled, unlabeled, corrupt,
per flag), ``classes`` (counts, ratio, imbalanced, minority), ``images`` (``path``, ``label``,
``guess``, ``flags``, ``cluster``, ``width``, ``height``, ``map``; ``duplicate_of``,
``suggested_label`` where they apply), ``clusters`` (``id``, ``size``, ``members`` most
typical first, ``typical``, ``guess``, ``guess_share``, ``labels``), ``grouping`` (which images
were grouped, k and how it was chosen), ``duplicates``, ``corrupt``, ``label_errors``,
``timings_s``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.curate.labels import class_balance

if TYPE_CHECKING:
    from training.curate.run import Analysis

REPORT_VERSION = 1
REPORT_JSON = "curate.json"
REPORT_HTML = "index.html"
FLAGS = ("corrupt", "blurry", "dark", "bright", "tiny", "duplicate", "outlier", "label_error")
TYPICAL = 8  # members shown as a group's most typical


def build_report(a: Analysis) -> dict[str, Any]:
    """The JSON-ready report of an analysis."""
    row_of = {path: r for r, path in enumerate(a.rows)}
    cluster_of = _cluster_of(a)
    images = []
    for item in a.items:
        path = item.path
        entry: dict[str, Any] = {
            "path": item.rel(a.root),
            "label": item.label,
            "guess": item.guess,
            "flags": ["corrupt"] if path in a.failed else list(a.flags.get(path, [])),
            "cluster": cluster_of.get(path),
        }
        if path in a.stats:
            entry["width"], entry["height"] = a.stats[path].width, a.stats[path].height
        if path in a.failed:
            entry["error"] = a.failed[path]
        if a.map_xy is not None and path in row_of:
            entry["map"] = [round(float(v), 3) for v in a.map_xy[row_of[path]]]
        entry.update(a.extra.get(path, {}))
        images.append(entry)
    flag_counts = Counter(flag for entry in images for flag in entry["flags"])
    labels = [item.label for item in a.items if item.label is not None]
    return {
        "version": REPORT_VERSION,
        "root": str(a.root.resolve()),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": a.settings,
        "counts": {
            "images": len(a.items),
            "labeled": len(labels),
            "unlabeled": len(a.items) - len(labels),
            "corrupt": len(a.failed),
            "flags": {flag: flag_counts.get(flag, 0) for flag in FLAGS},
        },
        "classes": class_balance(labels),
        "images": images,
        "clusters": _clusters(a),
        "grouping": _grouping(a),
        "duplicates": a.duplicates,
        "corrupt": [
            {"path": p.relative_to(a.root).as_posix(), "reason": r} for p, r in a.failed.items()
        ],
        "label_errors": {
            "checked": a.issues is not None and a.issues.skipped is None,
            "skipped": a.issues.skipped if a.issues else "no labeled images",
            "count": flag_counts.get("label_error", 0),
        },
        "timings_s": {k: round(v, 2) for k, v in a.timings.items()},
    }


def _cluster_of(a: Analysis) -> dict[Path, int]:
    if a.grouping is None:
        return {}
    return {a.rows[r]: int(g) for r, g in zip(a.grouped_rows, a.grouping.assignment, strict=True)}


def _clusters(a: Analysis) -> list[dict[str, Any]]:
    if a.grouping is None:
        return []
    item_of = {item.path: item for item in a.items}
    out = []
    for gid, members in enumerate(a.grouping.order):
        paths = [a.rows[a.grouped_rows[i]] for i in members]
        guesses = Counter(item_of[p].guess for p in paths if item_of[p].guess)
        labels = Counter(item_of[p].label for p in paths if item_of[p].label)
        guess, share = (None, None)
        if guesses:
            guess, hits = guesses.most_common(1)[0]
            share = round(hits / len(paths), 3)
        rel = [p.relative_to(a.root).as_posix() for p in paths]
        out.append(
            {
                "id": gid,
                "size": len(paths),
                "members": rel,
                "typical": rel[:TYPICAL],
                "guess": guess,
                "guess_share": share,
                "labels": dict(labels.most_common()),
            }
        )
    return out


def _grouping(a: Analysis) -> dict[str, Any]:
    g = a.grouping
    if g is None:
        return {"of": a.grouped_of, "k": 0}
    return {
        "of": a.grouped_of,
        "images": len(a.grouped_rows),
        "method": g.method,
        "k": g.k,
        "chosen_by": g.chosen_by,
        "scores": {str(k): round(v, 4) for k, v in g.scores.items()},
    }


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and a rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def write_report(out: Path, report: dict[str, Any], a: Analysis) -> None:
    """``out/curate.json`` and ``out/index.html``."""
    from training.curate.html import render_html

    write_json_atomic(out / REPORT_JSON, report)
    write_text_atomic(out / REPORT_HTML, render_html(report, a.root))


def read_report(out: Path) -> dict[str, Any]:
    """The report in ``out`` (ValueError when it is missing or not a curate report)."""
    path = Path(out) / REPORT_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable curate report ({exc})") from None
    if not isinstance(data, dict) or "images" not in data or "clusters" not in data:
        raise ValueError(f"{path}: not a curate report (no images / clusters)")
    return data
