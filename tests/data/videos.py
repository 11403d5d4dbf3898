"""Small mp4 files whose frame index can be read back from the decoded pictures.

Frame i shows three vertical bands, the base-8 digits of i (most significant first), each a
flat grey level 16 + 32 * digit. Levels 32 apart survive H.264 compression with a wide margin,
so ``read_index`` recovers the index exactly for up to 512 frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# isort: split
from vidablate.data.video import write_video

DIGITS = 3
MAX_FRAMES = 8**DIGITS


def index_frame(i: int, height: int = 48, width: int = 96) -> np.ndarray:
    """uint8 [height, width, 3] picture of index ``i`` (three grey bands)."""
    if not 0 <= i < MAX_FRAMES:
        raise ValueError(f"index must be in [0, {MAX_FRAMES}), got {i}")
    frame = np.empty((height, width, 3), dtype=np.uint8)
    band = width // DIGITS
    for b in range(DIGITS):
        digit = (i // 8 ** (DIGITS - 1 - b)) % 8
        frame[:, b * band:(b + 1) * band] = 16 + 32 * digit
    frame[:, DIGITS * band:] = 0
    return frame


def read_index(frame: np.ndarray) -> int:
    """The index drawn by ``index_frame`` (band interiors only: edges blur in compression)."""
    band = frame.shape[1] // DIGITS
    index = 0
    for b in range(DIGITS):
        level = frame[4:-4, b * band + 4:(b + 1) * band - 4].astype(np.float64).mean()
        index = 8 * index + int(np.clip(round((level - 16) / 32), 0, 7))
    return index


def read_indices(frames: np.ndarray) -> list[int]:
    """``read_index`` of every frame in [n, H, W, 3]."""
    return [read_index(f) for f in frames]


def write_indexed(path, num_frames: int, *, fps: float = 25.0, gop: int | None = None,
                  height: int = 48, width: int = 96) -> Path:
    """An mp4 of ``num_frames`` index pictures (H.264 with B-frames; ``gop``: keyframe interval)."""
    frames = np.stack([index_frame(i, height, width) for i in range(num_frames)])
    return write_video(path, frames, fps=fps, gop=gop)


def write_noise(path, num_frames: int = 40, *, faststart: bool = False, seed: int = 0) -> Path:
    """An mp4 of random pictures: the frames dominate the file size (for truncation tests)."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (num_frames, 48, 64, 3), dtype=np.uint8)
    return write_video(path, frames, fps=25.0, faststart=faststart)


def cut_with_edit_list(src, dst, first_shown: int) -> Path:
    """Copy the packets of ``src`` from the keyframe before frame ``first_shown`` on, shifted
    so that frame is at time 0 (what ``ffmpeg -ss T -c copy`` does): the mp4 muxer writes an
    edit list, and the frames before ``first_shown`` are decoded but never shown."""
    import av

    with av.open(str(src)) as source:
        stream = source.streams.video[0]
        packets = [p for p in source.demux(stream) if p.size]
        shown = sorted(p.pts for p in packets)[first_shown]
        start = max(i for i, p in enumerate(packets) if p.is_keyframe and p.pts <= shown)
        with av.open(str(dst), mode="w") as out:
            copy = out.add_stream_from_template(stream)
            for packet in packets[start:]:
                packet.pts -= shown
                packet.dts -= shown
                packet.stream = copy
                out.mux(packet)
    return Path(dst)


def random_frames(n: int = 6, size: int = 16, seed: int = 0) -> np.ndarray:
    """uint8 [n, size, size, 3] noise frames (frame-folder and list-converter tests)."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
