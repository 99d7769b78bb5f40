"""``kestrel label DIR``: the command line (argparse only; the app is imported when run)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

from training.curate.cli import clusters_arg

TOKEN_ENV = "KESTREL_LABEL_TOKEN"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``label`` to the ``kestrel`` command line."""
    p = subparsers.add_parser(
        "label",
        help="label images in the browser: groups from kestrel curate, bulk assign into "
        "class folders, undo (moves files, never deletes)",
        description="Serve a page that shows the unlabeled images directly in DIR, grouped "
        "by kestrel curate (run first when DIR has no report), and moves the images you "
        "assign into DIR/<class>/ with their sidecars. Every move is logged in "
        "DIR/.kestrel-label.log and can be undone; nothing is deleted.",
    )
    p.add_argument("data", type=Path, help="folder of images (unlabeled ones directly in it)")
    p.add_argument("--port", type=int, default=8090, help="port (default 8090)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; any other needs --token)",
    )
    p.add_argument(
        "--token",
        default=None,
        help=f"secret every request must carry (default: ${TOKEN_ENV}); required off loopback",
    )
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        help="curate report folder (default: DATA/.kestrel-curate; made when missing)",
    )
    p.add_argument("--recurate", action="store_true", help="run kestrel curate again first")
    p.add_argument(
        "--clusters", type=clusters_arg, default=None, help="for the curate run: auto or a number"
    )
    p.add_argument("--method", choices=["kmeans", "gmm"], default="kmeans", help="grouping")
    p.add_argument("--image-size", type=int, default=None, help="curate's embedding size")
    p.add_argument("--cache-dir", type=Path, default=None, help="embedding cache")
    p.set_defaults(func=cmd_label)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_or_make_report(args: argparse.Namespace) -> dict[str, Any]:
    """The curate report of DATA, made first when missing or asked for."""
    from training.curate.cli import DEFAULT_REPORT
    from training.curate.report import read_report

    out = args.report or Path(args.data) / DEFAULT_REPORT
    if not args.recurate and (out / "curate.json").is_file():
        return read_report(out)
    from training.curate import curate

    print(f"kestrel label: grouping the images first (kestrel curate -> {out})", file=sys.stderr)
    return curate(
        args.data,
        out,
        clusters=args.clusters,
        method=args.method,
        image_size=args.image_size,
        cache_dir=args.cache_dir,
    )


def cmd_label(args: argparse.Namespace) -> int:
    from training.cli import EXIT_DATA, _missing_training_deps

    token = args.token or os.environ.get(TOKEN_ENV) or None
    loopback = is_loopback(args.host)
    if not loopback and not token:
        print(
            f"kestrel: --host {args.host} is not a loopback address: anyone who reaches it "
            f"could move your files, so a token is required (--token or ${TOKEN_ENV})",
            file=sys.stderr,
        )
        return EXIT_DATA
    if not Path(args.data).is_dir():
        print(f"kestrel: {args.data}: no such folder", file=sys.stderr)
        return EXIT_DATA
    missing = _missing_training_deps()
    if missing:
        print(missing, file=sys.stderr)
        return EXIT_DATA
    from training.curate import CurateError

    try:
        report = load_or_make_report(args)
    except (CurateError, ValueError) as exc:
        print(f"kestrel: {exc}", file=sys.stderr)
        return EXIT_DATA
    import uvicorn

    from training.label.app import create_app

    app = create_app(args.data, report, token=token, loopback=loopback)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    suffix = "/?token=<your token>" if token else "/"
    print(
        f"kestrel label: open http://{shown}:{args.port}{suffix}  (Ctrl+C stops)", file=sys.stderr
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
