"""Workstation subcommands of ``kestrel``: registered into the device CLI's parser.

Importing this module must stay cheap (no TensorFlow): the device's ``kestrel`` builds its
parser with it on every call.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``eval`` to the ``kestrel`` command line."""
