"""The ``kestrel`` executable's first lines: a stop asked for during start-up is a clean stop.

Importing the command line (numpy, OpenCV, pydantic, the runtime) takes ~0.5 s here and
seconds on a Pi. Until :func:`device.run.daemon.run` installs its own handlers, SIGTERM or
SIGINT would kill ``kestrel run`` by the signal (exit -15, a failure to systemd). So the
handlers come first, before those imports: a stop then ends the process with exit 0.
Other commands keep Python's defaults (a killed ``classify`` did not succeed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def subcommand(argv: Sequence[str]) -> str | None:
    """The subcommand: the first argument that is not an option (top-level options take no
    value: ``-v``, ``--version``)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _stop_while_starting(signum: int, frame: FrameType | None) -> None:
    # Nothing has started yet (no camera, broker or queue): leaving is all there is to do.
    # Not SystemExit: raised inside an import (a dataclass's __set_name__, for one) Python
    # turns it into a RuntimeError, a traceback and exit 1.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    """``kestrel``: :func:`device.cli.main`, with ``run``'s stop handlers installed first."""
    args = list(sys.argv[1:] if argv is None else argv)
    if subcommand(args) == "run":
        for sig in STOP_SIGNALS:
            signal.signal(sig, _stop_while_starting)
    from device.cli import main as cli_main

    return cli_main(args)
