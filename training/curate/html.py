"""``index.html`` of a curate report: one self-contained file (thumbnails and plots inlined as
data URIs, no scripts, no network) that a person reads top to bottom: counts, class balance,
the 2-D map, each group's most typical members, then each flag's images."""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.inference.preprocess import ImageError, read_image

THUMB_SIDE = 96
PER_GROUP = 16
PER_FLAG = 40
_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse}td,th{padding:.2em .7em;border-bottom:1px solid #eee;text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:6px}.grid figure{margin:0;width:100px;font-size:10px}
.grid img{width:96px;height:96px;object-fit:contain;background:#eee;display:block}
figcaption{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.muted{color:#777}img.plot{max-width:100%}
"""


def render_html(report: dict[str, Any], root: Path) -> str:
    """The page for ``report`` (images are read from ``root`` for the thumbnails)."""
    thumbs = _Thumbs(root)
    by_path = {image["path"]: image for image in report["images"]}
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>kestrel curate: {escape(Path(report['root']).name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Curate report: {escape(report['root'])}</h1>",
        _summary(report),
        _balance_section(report),
        _map_section(report),
        _groups_section(report, by_path, thumbs),
        _flags_section(report, by_path, thumbs),
        "</body></html>",
    ]
    return "\n".join(parts)


def _summary(report: dict[str, Any]) -> str:
    counts, settings, grouping = report["counts"], report["settings"], report["grouping"]
    rows = [
        ("images", counts["images"]),
        ("labeled / unlabeled", f"{counts['labeled']} / {counts['unlabeled']}"),
        ("unreadable (corrupt)", counts["corrupt"]),
        ("embeddings", f"{settings['backbone']} at {settings['image_size']} px"),
        (
            "groups",
            f"{grouping.get('k', 0)} ({grouping.get('method', '-')}, of the "
            f"{grouping['of']} images, k by {grouping.get('chosen_by', '-')})",
        ),
    ] + [(f"flag: {flag}", n) for flag, n in counts["flags"].items()]
    body = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    note = "<p class=muted>Nothing was moved or deleted: this page only reports.</p>"
    return f"<h2>Counts</h2><table>{body}</table>{note}"


def _balance_section(report: dict[str, Any]) -> str:
    classes = report["classes"]
    if not classes["counts"]:
        return "<h2>Class balance</h2><p class=muted>No labeled images (no class folders).</p>"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, counts = zip(*classes["counts"].items(), strict=True)
    fig, ax = plt.subplots(figsize=(min(12, 1 + 0.5 * len(names)), 3))
    colours = ["#d62728" if n in classes["minority"] else "#1f77b4" for n in names]
    ax.bar(range(len(names)), counts, color=colours)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylabel("images")
    verdict = (
        f"imbalanced: {classes['ratio']}:1 (red: classes with a third or less of the largest)"
        if classes["imbalanced"]
        else f"largest / smallest: {classes['ratio']}:1"
    )
    return f"<h2>Class balance</h2><p>{escape(verdict)}</p>{_figure(fig)}"


def _map_section(report: dict[str, Any]) -> str:
    points = [image for image in report["images"] if "map" in image]
    if len(points) < 2:
        return ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy = np.array([image["map"] for image in points])
    by_label = report["grouping"]["of"] == "all" and report["counts"]["labeled"] > 0
    field = "label" if by_label else "cluster"
    keys = [None if image[field] is None else str(image[field]) for image in points]
    fig, ax = plt.subplots(figsize=(7, 6))
    rest = np.array([k is None for k in keys])
    if rest.any():
        ax.scatter(xy[rest, 0], xy[rest, 1], s=6, color="#bbb", label="labeled")
    cmap = plt.get_cmap("tab20")
    named = sorted({k for k in keys if k is not None}, key=lambda k: (len(k), k))
    for i, key in enumerate(named):
        mask = np.array([k == key for k in keys])
        ax.scatter(xy[mask, 0], xy[mask, 1], s=8, color=cmap(i % 20), label=key)
    if len(named) <= 20:
        ax.legend(fontsize=7, markerscale=2, title="class" if by_label else "group")
    ax.set_xticks([])
    ax.set_yticks([])
    what = "class" if by_label else "group (unlabeled images; labeled ones in grey)"
    return f"<h2>Map of the embeddings (t-SNE), coloured by {escape(what)}</h2>{_figure(fig)}"


def _groups_section(report: dict[str, Any], by_path: dict, thumbs: _Thumbs) -> str:
    out = ["<h2>Groups</h2>"]
    for cluster in report["clusters"]:
        guess = (
            f", model's guess: {escape(cluster['guess'])} ({cluster['guess_share']:.0%})"
            if cluster["guess"]
            else ""
        )
        out.append(f"<h3>Group {cluster['id']}: {cluster['size']} images{guess}</h3>")
        out.append(_grid(cluster["members"][:PER_GROUP], by_path, thumbs))
    if not report["clusters"]:
        out.append("<p class=muted>No groups.</p>")
    return "\n".join(out)


def _flags_section(report: dict[str, Any], by_path: dict, thumbs: _Thumbs) -> str:
    out = ["<h2>Flags</h2>"]
    for flag, count in report["counts"]["flags"].items():
        if not count:
            continue
        out.append(f"<h3>{escape(flag)}: {count}</h3>")
        if flag == "corrupt":
            rows = "".join(
                f"<li>{escape(c['path'])}: {escape(c['reason'])}</li>" for c in report["corrupt"]
            )
            out.append(f"<ul>{rows}</ul>")
            continue
        paths = [image["path"] for image in report["images"] if flag in image["flags"]]
        out.append(_grid(paths[:PER_FLAG], by_path, thumbs))
        if len(paths) > PER_FLAG:
            out.append(f"<p class=muted>… and {len(paths) - PER_FLAG} more (see curate.json)</p>")
    return "\n".join(out)


def _grid(paths: list[str], by_path: dict[str, Any], thumbs: _Thumbs) -> str:
    cells = []
    for rel in paths:
        image = by_path[rel]
        note = ", ".join(image["flags"])
        if image.get("duplicate_of"):
            note += f" of {image['duplicate_of']}"
        if image.get("suggested_label"):
            note += f" → {image['suggested_label']}?"
        title = escape(f"{rel} [{image['label'] or 'unlabeled'}] {note}".strip(), quote=True)
        cells.append(
            f'<figure title="{title}"><img alt="" src="{thumbs.uri(rel)}">'
            f"<figcaption>{escape(Path(rel).name)}</figcaption></figure>"
        )
    return f"<div class=grid>{''.join(cells)}</div>"


def _figure(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class=plot alt="plot" src="data:image/png;base64,{data}">'


def thumbnail_jpeg(path: Path, side: int = THUMB_SIDE) -> bytes:
    """A JPEG of the image scaled to fit ``side`` px (raises ImageError when unreadable)."""
    image = read_image(str(path), min_size=(side, side))
    h, w = image.shape[:2]
    scale = side / max(h, w)
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise ImageError(f"{path}: cannot encode a thumbnail")
    return data.tobytes()


class _Thumbs:
    """Thumbnails as data URIs, each image encoded once per page."""

    def __init__(self, root: Path) -> None:
        self.root, self.cache = root, {}

    def uri(self, rel: str) -> str:
        if rel not in self.cache:
            try:
                data = base64.b64encode(thumbnail_jpeg(self.root / rel)).decode("ascii")
                self.cache[rel] = f"data:image/jpeg;base64,{data}"
            except (ImageError, cv2.error, OSError):
                self.cache[rel] = ""
        return self.cache[rel]
