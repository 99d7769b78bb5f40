"""A fake picamera2 module: records calls to the documented picamera2 API that
Picamera2Source uses, and fails where the real one does (a bounded ``capture_request`` wait,
a request released twice, a buffer that vanishes)."""

from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np


class FakeRequest:
    def __init__(self, camera: FakePicamera2) -> None:
        self.camera = camera
        self.released = False

    def make_array(self, name: str) -> np.ndarray:
        self.camera.calls.append(("make_array", name))
        if self.camera.fail_make_array:
            raise RuntimeError("buffer vanished")
        config = self.camera.camera_config[name]
        width, height = config["size"]
        if name == "main":
            return np.full((height, width, 3), (255, 0, 0), np.uint8)  # [B, G, R]: blue
        stride = config["stride"]
        return self.camera.yuv_padded(width, height, stride)

    def release(self) -> None:
        assert not self.released, "released twice"
        self.released = True
        self.camera.calls.append(("release",))


class FakePicamera2:
    """Records calls to the documented picamera2 API used by Picamera2Source."""

    instances: ClassVar[list[FakePicamera2]] = []
    cameras: ClassVar[list[dict]] = [{"Model": "imx708", "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a"}]
    stride_padding = 64

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.requests: list[FakeRequest] = []
        self.fail_make_array = False
        self.camera_config: dict = {}
        self.picture = np.zeros((2, 2, 3), np.uint8)
        FakePicamera2.instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict]:
        return FakePicamera2.cameras

    def create_video_configuration(self, main: dict, lores: dict) -> dict:
        self.calls.append(("create_video_configuration", main, lores))
        return {"main": dict(main), "lores": dict(lores)}

    def configure(self, config: dict) -> None:
        self.calls.append(("configure",))
        self.camera_config = config
        width = config["lores"]["size"][0]
        config["lores"]["stride"] = width + self.stride_padding

    def start(self) -> None:
        self.calls.append(("start",))

    def capture_request(self, wait: float | None = None) -> FakeRequest:
        assert wait is not None and 0 < wait <= 2, "a bounded wait keeps stop() prompt"
        request = FakeRequest(self)
        self.requests.append(request)
        return request

    def yuv_padded(self, width: int, height: int, stride: int) -> np.ndarray:
        """A real I420 picture laid out with picamera2's padded stride."""
        bgr = np.zeros((height, width, 3), np.uint8)
        bgr[:, : width // 2] = (0, 0, 255)  # red left half, green right half
        bgr[:, width // 2 :] = (0, 255, 0)
        self.picture = bgr
        return pad_i420(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), width, height, stride)

    def stop(self) -> None:
        self.calls.append(("stop",))

    def close(self) -> None:
        self.calls.append(("close",))


def pad_i420(packed: np.ndarray, width: int, height: int, stride: int) -> np.ndarray:
    out = np.full((height * 3 // 2, stride), 77, np.uint8)  # 77: padding garbage
    out[:height, :width] = packed[:height]
    chroma = packed[height:].reshape(height, width // 2)  # U rows then V rows
    view = out[height:].reshape(height, stride // 2)
    view[:, : width // 2] = chroma
    return out
