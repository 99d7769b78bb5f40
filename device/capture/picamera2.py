"""The Raspberry Pi camera through picamera2 (libcamera).

``lores`` (YUV420) feeds inference and ``main`` (RGB888, i.e. BGR in memory) the snapshots.
picamera2 exists only on Raspberry Pi OS, so it is imported when a source opens.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import numpy as np

from device.capture.base import Frame, SourceError, make_frame

log = logging.getLogger(__name__)

PICAMERA2_MAIN_SIZE = (1280, 960)  # default snapshot size when width/height are not set
PICAMERA2_LORES_WIDTH = 320
PICAMERA2_CAPTURE_TIMEOUT = 1.0  # s; a video configuration delivers ~30 frames in that time
SNAPSHOT_TIMEOUT = 1.0


def i420_from_padded(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """picamera2's YUV420 array -> packed I420 ``(height * 3 / 2, width)``.

    picamera2 returns YUV420 as ``(height * 3 / 2, stride)``: ``height`` rows of Y, then the U
    and V planes whose rows are ``stride / 2`` bytes, two per array row. When the stride has
    padding, the plain ``[:, :width]`` crop would mix U and V rows, so each plane is cropped.
    """
    rows, stride = array.shape
    if rows != height * 3 // 2 or stride < width:
        raise SourceError(f"YUV420 array of shape {array.shape} for {width}x{height}")
    if stride == width:
        return array
    out = np.empty((height * 3 // 2, width), np.uint8)
    out[:height] = array[:height, :width]
    chroma = array[height:].reshape(height, stride // 2)[:, : width // 2]  # U rows, V rows
    out[height:] = chroma.reshape(height // 2, width)
    return out


PICAMERA2_MISSING = (
    "picamera2 cannot be imported ({error}). On Raspberry Pi OS install it with "
    "`sudo apt install python3-picamera2`; a virtualenv sees it only when created with "
    "--system-site-packages."
)
NUMPY_TRAP = (
    " The numpy in the virtualenv does not match the one python3-picamera2 was built "
    "against: keep numpy < 2 there, or pip install simplejpeg into the virtualenv."
)


def import_picamera2() -> type:
    """The ``Picamera2`` class; :class:`SourceError` says how to install it when missing."""
    try:
        from picamera2 import Picamera2  # Raspberry Pi OS only; imported when used
    except Exception as exc:  # ImportError, or ValueError from a numpy 1.x/2.x mismatch
        message = PICAMERA2_MISSING.format(error=f"{type(exc).__name__}: {exc}")
        if "numpy" in str(exc) or "dtype size changed" in str(exc):
            message += NUMPY_TRAP
        raise SourceError(message) from exc
    return Picamera2


class Picamera2Source:
    """The Raspberry Pi camera through picamera2 (libcamera).

    One video configuration with two streams from the ISP: ``lores`` (YUV420, 320 px wide,
    the aspect ratio of ``main``) for inference, and ``main`` (RGB888 at the requested size,
    or 1280x960) for snapshots. picamera2's "RGB888" is stored [B, G, R] per pixel (the
    picamera2 manual's format table: "RGB888 - 24 bits per pixel, ordered [B, G, R]"), so
    ``main`` is already OpenCV's BGR. Requests are always released (try/finally), or the
    camera runs out of buffers and stalls.

    ``snapshot()`` may be called from any thread: it asks the capture thread to copy
    ``main`` from the next request and waits up to ``SNAPSHOT_TIMEOUT`` for it, so every
    picamera2 call happens on the capture thread.
    """

    live = True
    frame_interval = None

    def __init__(
        self,
        width: int | None = None,
        height: int | None = None,
        lores_width: int = PICAMERA2_LORES_WIDTH,
    ) -> None:
        if width and height:
            self.main_size = (width, height)
        elif width:
            self.main_size = (width, round(width * PICAMERA2_MAIN_SIZE[1] / PICAMERA2_MAIN_SIZE[0]))
        elif height:
            self.main_size = (
                round(height * PICAMERA2_MAIN_SIZE[0] / PICAMERA2_MAIN_SIZE[1]),
                height,
            )
        else:
            self.main_size = PICAMERA2_MAIN_SIZE
        main_w, main_h = self.main_size
        lores_w = min(lores_width, main_w) // 2 * 2
        self.lores_size = (lores_w, max(2, round(lores_w * main_h / main_w / 2) * 2))
        self.description = f"picamera2 lores {self.lores_size[0]}x{self.lores_size[1]}"
        self._camera = None
        self._frame_id = 0
        self._want_main = threading.Event()
        self._main_ready = threading.Event()
        self._main: np.ndarray | None = None
        self._snapshot_lock = threading.Lock()

    def open(self) -> None:
        self.close()
        picamera2 = import_picamera2()
        try:
            camera = picamera2()
        except Exception as exc:
            raise SourceError(
                f"{self.description}: no camera found or it is busy ({type(exc).__name__}: "
                f"{exc}); check the cable and `rpicam-hello --list-cameras`"
            ) from exc
        try:
            config = camera.create_video_configuration(
                main={"size": self.main_size, "format": "RGB888"},
                lores={"size": self.lores_size, "format": "YUV420"},
            )
            if hasattr(camera, "align_configuration"):
                camera.align_configuration(config)  # sizes the ISP can produce efficiently
            camera.configure(config)
            camera.start()
            actual = (getattr(camera, "camera_config", None) or {}).get("lores", {}).get("size")
            if actual:
                self.lores_size = (int(actual[0]), int(actual[1]))
        except Exception as exc:
            with contextlib.suppress(Exception):
                camera.close()
            raise SourceError(
                f"{self.description}: cannot start ({type(exc).__name__}: {exc})"
            ) from exc
        self._camera = camera

    def read(self) -> Frame | None:
        camera = self._camera
        if camera is None:
            raise SourceError(f"{self.description}: read before open")
        try:
            request = camera.capture_request(wait=PICAMERA2_CAPTURE_TIMEOUT)
        except TimeoutError as exc:
            # The pending job would take (and leak) a later request: cancel it.
            with contextlib.suppress(Exception):
                camera.cancel_all_and_flush()
            raise SourceError(
                f"{self.description}: no frame within {PICAMERA2_CAPTURE_TIMEOUT:g} s"
            ) from exc
        except Exception as exc:
            raise SourceError(
                f"{self.description}: capture failed ({type(exc).__name__}: {exc})"
            ) from exc
        try:
            lores = request.make_array("lores")  # a copy: valid after release
            if self._want_main.is_set():
                self._main = request.make_array("main")
                self._want_main.clear()
                self._main_ready.set()
        except Exception as exc:
            raise SourceError(
                f"{self.description}: bad request ({type(exc).__name__}: {exc})"
            ) from exc
        finally:
            request.release()
        width, height = self.lores_size
        self._frame_id += 1
        return make_frame(i420_from_padded(lores, width, height), "YUV420", self._frame_id)

    def snapshot(self) -> np.ndarray | None:
        with self._snapshot_lock:
            if self._camera is None:
                return None
            self._main_ready.clear()
            self._want_main.set()
            if not self._main_ready.wait(SNAPSHOT_TIMEOUT):
                self._want_main.clear()
                return None
            image, self._main = self._main, None
            return image

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        try:
            camera.stop()
        except Exception as exc:
            log.warning("%s: stop failed: %s", self.description, exc)
        try:
            camera.close()
        except Exception as exc:
            log.warning("%s: close failed: %s", self.description, exc)
