"""Writing annotated video (OpenCV, ``pip install vehicle-cls[video]``): one .mp4 per input video."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

INSTALL_HINT = "pip install vehicle-cls[video]"


def video_fps(path: str | os.PathLike, default: float = 25.0) -> float:
    """The frame rate stored in a video file (``default`` when unknown or unreadable)."""
    try:
        import cv2
    except ImportError:
        return default
    cap = cv2.VideoCapture(os.fspath(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return fps if fps > 0 and np.isfinite(fps) else default


class VideoWriter:
    """RGB frames -> an .mp4 file (mp4v codec); the size is taken from the first frame."""

    def __init__(self, path: str | os.PathLike, fps: float):
        try:
            import cv2
        except ImportError as exc:
            raise ImportError(f"writing video needs OpenCV ({exc}); run: {INSTALL_HINT}") from exc
        self._cv2 = cv2
        self.path = Path(path)
        self.fps = float(fps)
        self.frames = 0
        self._writer: Any = None
        self._size: tuple[int, int] | None = None

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 HxWx3 frame (resized to the first frame's size if it differs)."""
        cv2 = self._cv2
        h, w = frame.shape[:2]
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._size = (w, h)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                raise OSError(f"{self.path}: OpenCV cannot write mp4v video here")
        if (w, h) != self._size:
            frame = cv2.resize(frame, self._size)
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
