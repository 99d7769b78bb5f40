"""``kestrel curate DIR``: the command line (argparse only; the work is imported when run)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_REPORT = ".kestrel-curate"  # inside DIR; hidden, so kestrel train never reads it


def clusters_arg(text: str) -> int | None:
    """``auto`` (None) or a positive number of groups."""
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 group, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``curate`` to the ``kestrel`` command line."""
    p = subparsers.add_parser(
        "curate",
        help="report on a folder of images: quality flags, duplicates, outliers, label "
        "errors, groups of the unlabeled ones (reads only; moves nothing)",
        description="Analyse a folder of images (class folders as kestrel train reads them, "
        "and/or unlabeled images directly in it, e.g. frames collected by kestrel run) and "
        "write REPORT/curate.json and REPORT/index.html. Nothing is moved or deleted.",
    )
    p.add_argument("data", type=Path, help="folder of images")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"report folder (default: DATA/{DEFAULT_REPORT}, which kestrel label reads)",
    )
    p.add_argument(
        "--clusters",
        type=clusters_arg,
        default=None,
        help="number of groups, or auto (default: chosen by silhouette for kmeans, BIC for gmm)",
    )
    p.add_argument("--method", choices=["kmeans", "gmm"], default="kmeans", help="grouping")
    p.add_argument("--backbone", default="efficientnet-lite0", help="embedding backbone")
    p.add_argument(
        "--image-size", type=int, default=None, help="embedding input size (default: backbone's)"
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="embedding cache (default: $KESTREL_CACHE_DIR/embeddings or "
        "~/.cache/kestrel/embeddings)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the grouping and the map")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_curate)


def cmd_curate(args: argparse.Namespace) -> int:
    from training.cli import EXIT_DATA, _missing_training_deps

    missing = _missing_training_deps()
    if missing:
        print(missing, file=sys.stderr)
        return EXIT_DATA
    from training.curate import CurateError, curate

    out = args.out if args.out is not None else Path(args.data) / DEFAULT_REPORT
    try:
        report = curate(
            args.data,
            out,
            clusters=args.clusters,
            method=args.method,
            backbone=args.backbone,
            image_size=args.image_size,
            cache_dir=args.cache_dir,
            seed=args.seed,
            progress=not args.quiet,
        )
    except CurateError as exc:
        print(f"kestrel: {exc}", file=sys.stderr)
        return EXIT_DATA
    counts = report["counts"]
    flagged = ", ".join(f"{n} {flag}" for flag, n in counts["flags"].items() if n) or "none"
    print(
        f"kestrel curate: {counts['images']} images ({counts['labeled']} labeled), "
        f"{len(report['clusters'])} groups; flags: {flagged}\n"
        f"kestrel curate: report written to {out / 'index.html'} and {out / 'curate.json'}",
        file=sys.stderr,
    )
    return 0
