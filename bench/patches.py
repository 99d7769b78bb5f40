"""Proposed changes to device/ measured without editing it.

``--variants`` starts the daemon as ``daemon_benchmarks.py _daemon --patch a,b run ...``, which
applies the named patches and then calls ``device.cli.main`` as ``kestrel`` does. The rate-limit
schedule and TCP_NODELAY began as patches here; they are in device/ now.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import cv2


def _patch_cv1() -> None:
    """cv2.setNumThreads(1): no OpenCV worker pool competing with the interpreter's threads."""
    cv2.setNumThreads(1)


def _patch_t1() -> None:
    """Interpreter threads = 1 (whatever the config says): leaves a core to capture decoding."""
    from device.inference import engine

    original = engine.build_interpreter

    def build(model_path: Any, accelerator: Any, threads: Any, *args: Any, **kw: Any) -> Any:
        return original(model_path, accelerator, 1, *args, **kw)

    engine.build_interpreter = build


def _patch_switch() -> None:
    """sys.setswitchinterval(0.0005): a thread waiting for the GIL gets it 10x sooner."""
    sys.setswitchinterval(0.0005)


PATCHES: dict[str, Callable[[], None]] = {
    "cv1": _patch_cv1,
    "t1": _patch_t1,
    "switch": _patch_switch,
}


def variant_name(patches: str) -> str:
    """``"cv1,t1"`` -> ``"cv1+t1"``; the daemon as shipped for no patches."""
    return "+".join(patches.split(",")) if patches else "shipped"


def daemon_main(argv: list[str]) -> int:
    """``_daemon [--patch a,b] run --config FILE``: kestrel with the named patches applied."""
    patches: list[str] = []
    if argv[:1] == ["--patch"]:
        patches, argv = [p for p in argv[1].split(",") if p], argv[2:]
    for name in patches:
        PATCHES[name]()
    from device.cli import main as kestrel

    return kestrel(argv)
