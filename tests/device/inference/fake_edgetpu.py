"""A fake Coral that fails the way libedgetpu does (the one piece of hardware not here).

- library missing: ``load_delegate`` raises OSError (``cannot open shared object file``);
- library present, no Coral (unplugged, or another ``device``): ValueError
  (``Failed to load delegate from libedgetpu.so.1``), as the real ``load_delegate`` does;
- Coral pulled (or a USB transfer error) while running: the process that runs the delegate
  prints libedgetpu's ``F driver/usb/usb_driver.cc ... Abort`` line and calls ``os.abort()``;
- a second process opens the Coral: the first one aborts so at its next invoke.

The model runs on the real runtime's CPU kernels (the delegate object is a stand-in). The
state lives in files under a folder, so that the child process that runs the delegate sees
what the test sets; the factory is module-level and picklable (the child imports this module
as ``inference.fake_edgetpu``, through the test's ``sys.path``).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

from device.inference.runtime import Runtime, find_runtime

_REAL = find_runtime()
ABORT_LINE = (
    "F driver/usb/usb_driver.cc:857] transfer on tag 2 failed. Abort. "
    "Deadline exceeded: USB transfer error 2 [LibUsbDataOutCallback]\n"
)


class FakeCoral:
    """The test's handle: ``plugged``, ``installed``, ``abort_on_invoke(n)``, and what the
    child did (``delegate_pids``, ``options``)."""

    def __init__(self, folder: Path, devices: tuple[str, ...] = ("", ":0", "usb", "usb:0")):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "devices.json").write_text(json.dumps(list(devices)))
        self.plugged = True
        self.installed = True
        self.runtime_factory = functools.partial(fake_runtime, str(folder))

    def _flag(self, name: str, on: bool) -> None:
        path = self.folder / name
        if on:
            path.touch()
        else:
            path.unlink(missing_ok=True)

    @property
    def plugged(self) -> bool:
        return (self.folder / "plugged").exists()

    @plugged.setter
    def plugged(self, on: bool) -> None:
        self._flag("plugged", on)

    @property
    def installed(self) -> bool:
        return (self.folder / "installed").exists()

    @installed.setter
    def installed(self, on: bool) -> None:
        self._flag("installed", on)

    def abort_on_invoke(self, n: int) -> None:
        """The next child to reach its ``n``-th invoke (the warm-up is the first) aborts, once."""
        (self.folder / "abort_on").write_text(str(n))

    @property
    def invokes_by_pid(self) -> dict[int, int]:
        """Invokes through the delegate, by the process that ran them (aborted ones too)."""
        path = self.folder / "pids"
        counts: dict[int, int] = {}
        for pid in path.read_text().split() if path.exists() else ():
            counts[int(pid)] = counts.get(int(pid), 0) + 1
        return counts

    @property
    def delegate_pids(self) -> set[int]:
        """The processes that ran an invoke through the delegate."""
        return set(self.invokes_by_pid)

    @property
    def options(self) -> list[dict[str, str]]:
        """The options of every ``load_delegate`` call that found the Coral."""
        path = self.folder / "options"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


class FakeDelegate:
    def __init__(self, folder: Path) -> None:
        self.folder = folder


def fake_runtime(folder: str) -> Runtime:
    """The runtime that ``Classifier(runtime_factory=...)`` calls, in the child and here."""
    return Runtime(
        "fake-coral",
        FakeCoralInterpreter,
        functools.partial(load_delegate, Path(folder)),
        probe=functools.partial(probe, Path(folder)),
    )


def probe(folder: Path, library: str) -> None:
    if not (folder / "installed").exists():
        raise OSError(f"{library}: cannot open shared object file: No such file or directory")


def load_delegate(folder: Path, library: str, options: dict[str, Any]) -> FakeDelegate:
    probe(folder, library)
    devices = json.loads((folder / "devices.json").read_text())
    if not (folder / "plugged").exists() or options.get("device", "") not in devices:
        raise ValueError(f"Failed to load delegate from {library}\n")
    with (folder / "options").open("a") as f:
        f.write(json.dumps(options) + "\n")
    (folder / "owner").write_text(str(os.getpid()))  # this process claims the USB device
    return FakeDelegate(folder)


class FakeCoralInterpreter(_REAL.interpreter_class):
    def __init__(self, *args: Any, experimental_delegates: Any = None, **kwargs: Any) -> None:
        coral = [d for d in experimental_delegates or () if isinstance(d, FakeDelegate)]
        self._coral = coral[0].folder if coral else None
        self._invokes = 0
        super().__init__(*args, **kwargs)

    def invoke(self) -> None:
        if self._coral is not None:
            self._invokes += 1
            with (self._coral / "pids").open("a") as f:
                f.write(f"{os.getpid()}\n")
            abort_on = self._coral / "abort_on"
            due = abort_on.exists() and int(abort_on.read_text()) == self._invokes
            # Another process opened the Coral since: libusb's transfers of this one fail, and
            # libedgetpu aborts it (google-coral/edgetpu #237, #645).
            claimed = int((self._coral / "owner").read_text()) != os.getpid()
            if due or claimed or not (self._coral / "plugged").exists():
                abort_on.unlink(missing_ok=True)
                sys.stderr.write(ABORT_LINE)
                sys.stderr.flush()
                os.abort()  # what libedgetpu does: the whole process goes
        super().invoke()


def add_usb_device(sysfs: Path, name: str, vendor: str, product: str, speed: str) -> Path:
    """A USB device as the kernel shows it under ``/sys/bus/usb/devices/<name>``."""
    device = sysfs / "bus" / "usb" / "devices" / name
    device.mkdir(parents=True, exist_ok=True)
    for file, value in (("idVendor", vendor), ("idProduct", product), ("speed", speed)):
        (device / file).write_text(value + "\n")
    return device
