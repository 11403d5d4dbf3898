"""Clips stored as folders of frame images, and the dispatch between frame folders and video
files.

``FrameFolder`` reads a folder of jpg/png frames (natural name order) behind the API of
``vidablate.data.video.VideoFile`` (``num_frames``, ``fps``, ``get(indices)``, ``close()``,
context manager); the frame rate is a knob (``data.fps``) since a folder does not record it.
``open_clip_source`` opens a manifest's ``video`` path as a ``FrameFolder`` when it is a folder
and as a ``VideoFile`` otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .manifest import IMAGE_EXTENSIONS
from .video import VideoDecodeError, VideoFile


def _natural_key(path: Path) -> list[Any]:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", path.name)]


class FrameFolder:
    """A clip stored as a folder of frame images (jpg/png; natural name order) behind the
    ``VideoFile`` API: ``num_frames``, ``fps`` (a knob: the folder does not record it),
    ``get(indices)`` -> uint8 [n, H, W, 3], ``close()``, context manager. Unreadable images
    raise ``VideoDecodeError``."""

    def __init__(self, path: str | Path, fps: float = 30.0) -> None:
        self.path = Path(path)
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps = float(fps)
        if not self.path.is_dir():
            raise VideoDecodeError(self.path, "not a folder of frames")
        self._files = sorted(
            (p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS),
            key=_natural_key,
        )
        if not self._files:
            raise VideoDecodeError(self.path, f"no frame images ({', '.join(IMAGE_EXTENSIONS)})")

    @property
    def num_frames(self) -> int:
        return len(self._files)

    def get(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames at ``indices`` (repeats allowed) as uint8 [n, H, W, 3]."""
        idx = [int(i) for i in np.asarray(indices).reshape(-1)]
        bad = [i for i in idx if not 0 <= i < len(self._files)]
        if bad:
            raise IndexError(f"{self.path}: frame index {bad[0]} outside 0..{len(self._files) - 1}")
        cache: dict[int, np.ndarray] = {}
        for i in dict.fromkeys(idx or [0]):  # frame 0 gives the size of an empty request
            try:
                with Image.open(self._files[i]) as im:
                    cache[i] = np.asarray(im.convert("RGB"), dtype=np.uint8)
            except (OSError, ValueError) as exc:
                raise VideoDecodeError(self.path, f"{self._files[i].name}: {exc}") from exc
        shapes = {a.shape for a in cache.values()}
        if len(shapes) > 1:
            raise VideoDecodeError(self.path, f"frames differ in size: {sorted(shapes)}")
        if not idx:
            return np.zeros((0, *cache[0].shape), dtype=np.uint8)
        return np.stack([cache[i] for i in idx])

    def close(self) -> None:
        """Nothing to release (images are opened per read)."""

    def __enter__(self) -> FrameFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_clip_source(
    path: str | Path, backend: str = "auto", fps: float = 30.0
) -> FrameFolder | VideoFile:
    """A clip's frames: ``FrameFolder`` (at ``fps``) for a folder, else ``VideoFile``."""
    path = Path(path)
    if path.is_dir():
        return FrameFolder(path, fps=fps)
    return VideoFile(path, backend=backend)

