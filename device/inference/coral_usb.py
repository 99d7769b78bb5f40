"""Which USB port a Coral sits on: a USB Coral on a USB 2 port (480 Mbps) runs several times
slower than on USB 3, the most common cause of a slow Coral. Read from sysfs, no library."""

from __future__ import annotations

from pathlib import Path

SYSFS_ROOT = Path("/sys")
USB2_MBPS = 480
# vendor:product of a USB Coral: before libedgetpu loads its firmware, and after.
CORAL_USB_IDS = frozenset({("1a6e", "089a"), ("18d1", "9302")})


def _read(path: Path) -> str:
    try:
        return path.read_text().strip().lower()
    except (OSError, UnicodeDecodeError):
        return ""


def coral_usb_speeds(sysfs_root: Path = SYSFS_ROOT) -> dict[str, int]:
    """The link speed in Mbps of each USB Coral, by its sysfs device name (``2-1``, ``1-1.3``);
    empty when there is none (or no sysfs)."""
    speeds: dict[str, int] = {}
    for device in sorted((sysfs_root / "bus" / "usb" / "devices").glob("*")):
        ids = (_read(device / "idVendor"), _read(device / "idProduct"))
        if ids not in CORAL_USB_IDS:
            continue
        try:
            speeds[device.name] = int(float(_read(device / "speed")))  # "480", "5000", "1.5"
        except ValueError:
            continue
    return speeds


def coral_usb_speed_mbps(sysfs_root: Path = SYSFS_ROOT) -> int | None:
    """The slowest USB Coral's link speed in Mbps (480: USB 2; 5000 and up: USB 3), None when
    no USB Coral is plugged in."""
    speeds = coral_usb_speeds(sysfs_root)
    return min(speeds.values()) if speeds else None
