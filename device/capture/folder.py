"""Image folders: the images of a folder in name order, and the ``demo`` source (the sample
photos shipped in ``models/samples``)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from device.capture.base import Frame, SourceError, make_frame
from device.config import CameraConfig
from device.inference.preprocess import ImageError, fit_to_input, read_image
from device.paths import IMAGE_SUFFIXES, SAMPLES_DIR, is_image_file

log = logging.getLogger(__name__)

FOLDER_FPS = 2.0
DEMO_FPS = 2.0
# Each demo photo is held this long, so the smoother sees a stable scene and publishes it.
DEMO_SECONDS_PER_PHOTO = 5.0


class ImageFolderSource:
    """The images of a folder in name order, each delivered ``repeat`` times.

    The folder is listed again at every pass, so images added meanwhile are picked up. Files
    without an image suffix are ignored; an image that cannot be decoded is skipped with one
    warning (once per file, not per pass). With ``size``, images are letterboxed to it.
    ``min_size`` (width, height): the smallest image inference can use; JPEGs are decoded
    reduced down to it (a huge photo never costs its full size in memory).
    """

    live = False

    def __init__(
        self,
        path: str | Path,
        *,
        fps: float = FOLDER_FPS,
        loop: bool = True,
        size: tuple[int, int] | None = None,
        repeat: int = 1,
        description: str | None = None,
        min_size: tuple[int, int] | None = None,
    ) -> None:
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        self.path = Path(path)
        self.loop = loop
        self.size = size
        self.repeat = repeat
        self.min_size = min_size
        if min_size is not None and size is not None:  # letterboxing to size needs it too
            self.min_size = (max(min_size[0], size[0]), max(min_size[1], size[1]))
        self.description = description or f"image folder {self.path}"
        self.frame_interval = 0.0 if math.isinf(fps) else 1.0 / fps
        self._queue: list[Path] = []
        self._bad: set[Path] = set()
        self._delivered_this_pass = 0
        self._current: np.ndarray | None = None
        self._repeats_left = 0
        self._frame_id = 0

    def _image_files(self) -> list[Path]:
        try:
            entries = sorted(self.path.iterdir())
        except OSError as exc:
            raise SourceError(f"{self.description}: cannot list ({exc.strerror or exc})") from None
        return [p for p in entries if is_image_file(p) and p.is_file()]

    def open(self) -> None:
        if not self.path.is_dir():
            raise SourceError(f"{self.description}: no such folder")
        self._queue = [p for p in self._image_files() if p not in self._bad]
        if not self._queue:
            raise SourceError(f"{self.description}: no images (expected {sorted(IMAGE_SUFFIXES)})")
        self._delivered_this_pass = 0
        self._current, self._repeats_left = None, 0

    def _decode(self, path: Path) -> np.ndarray | None:
        try:
            image = read_image(str(path), self.min_size)
        except (ImageError, OSError) as exc:
            self._bad.add(path)
            log.warning("%s: skipping %s", self.description, exc)
            return None
        if self.size is not None:
            width, height = self.size
            image = fit_to_input(image, height, width, fit="letterbox", interpolation="linear")
        return image

    def _next_image(self) -> np.ndarray | None:
        while True:
            while self._queue:
                image = self._decode(self._queue.pop(0))
                if image is not None:
                    self._delivered_this_pass += 1
                    return image
            if self._delivered_this_pass == 0:
                raise SourceError(f"{self.description}: no readable image")
            if not self.loop:
                return None
            self._queue = [p for p in self._image_files() if p not in self._bad]
            self._delivered_this_pass = 0

    def read(self) -> Frame | None:
        if self._repeats_left == 0:
            image = self._next_image()
            if image is None:
                return None
            image.flags.writeable = False
            self._current, self._repeats_left = image, self.repeat
        assert self._current is not None
        self._repeats_left -= 1
        self._frame_id += 1
        return make_frame(self._current, "BGR", self._frame_id)

    def snapshot(self) -> np.ndarray | None:
        return None

    def close(self) -> None:
        self._queue = []
        self._current, self._repeats_left = None, 0


def demo_source(camera: CameraConfig) -> ImageFolderSource:
    """The shipped sample photos, looping, each held ~DEMO_SECONDS_PER_PHOTO seconds.

    Each photo as it is (letterboxed only to a configured width x height): the model then sees
    what ``kestrel classify`` sees, and the daemon agrees with it (black bars did not).
    """
    fps = camera.source_fps if camera.source_fps and math.isfinite(camera.source_fps) else DEMO_FPS
    size = (camera.width, camera.height) if camera.width and camera.height else None
    shown = f", {size[0]}x{size[1]}" if size else ""
    return ImageFolderSource(
        SAMPLES_DIR,
        fps=fps,
        loop=True,
        size=size,
        repeat=max(1, round(DEMO_SECONDS_PER_PHOTO * fps)),
        description=f"demo (sample photos{shown})",
    )
