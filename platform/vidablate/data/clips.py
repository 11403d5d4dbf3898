"""Clip datasets: frame sampling, augmentation and multi-view packing shared by the embedded
synthetic set and manifest datasets of real videos.

An item is ``{"video", "label", "index", "valid"}`` plus ``"imu"`` when the dataset has IMU:
training items hold one clip, video float32 [T, 3, S, S]; evaluation items with V > 1 views
(``eval.temporal_views`` x ``eval.spatial_crops``) hold video [V, T, 3, S, S] (and imu
[V, 6, T*r]); the loop scores each view and averages (``vidablate.train.loop.evaluate``).
A clip that fails to decode comes back zero-filled with ``valid=False`` (``data.on_corrupt=
skip``) so the loop can leave it out and count it, or raises (``fail``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .frames import open_clip_source
from .imu import imu_for_frames, imu_for_span, read_imu
from .manifest import resolve_video
from .video import AugmentSpec, VideoDecodeError, eval_views, sample_indices, train_clip


@dataclass(frozen=True)
class ClipSampling:
    """How one dataset split turns a video into model input (DataConfig + EvalConfig)."""

    num_frames: int
    image_size: int
    mode: str = "sparse"
    rate: int = 8
    train: bool = False
    augment: AugmentSpec | None = None
    """Training augmentation; None = the evaluation geometry (resize + centre crop)."""
    temporal_views: int = 1
    spatial_crops: int = 1
    imu_span: str = "clip"
    """IMU of a view: ``clip`` = the span the view covers, resampled to T x imu_rate samples
    (isclip §II-B: "the same time period"); ``frames`` = only the sampled frames' own 1/fps
    spans, imu_rate samples each."""

    @property
    def views(self) -> int:
        return 1 if self.train else self.temporal_views * self.spatial_crops

    def indices(self, num_frames: int, first: int = 0, last: int | None = None,
                rng: np.random.Generator | None = None) -> list[np.ndarray]:
        """Frame indices of every temporal view (one when training)."""
        if self.train:
            return [sample_indices(num_frames, self.num_frames, self.mode, train=True,
                                   rate=self.rate, rng=rng, first=first, last=last)]
        return [sample_indices(num_frames, self.num_frames, self.mode, train=False,
                               rate=self.rate, view=v, num_views=self.temporal_views,
                               first=first, last=last) for v in range(self.temporal_views)]

    def span(self, indices: np.ndarray, first: int = 0, last: int | None = None
             ) -> tuple[int, int]:
        """Frames [start, stop) a view covers: sparse sampling reads T segments of frames
        first..last, so all of them; a dense view its window of T frames ``rate`` apart."""
        if self.mode == "sparse":
            return first, (int(indices[-1]) if last is None else last) + 1
        return int(indices[0]), int(indices[-1]) + 1

    def pixels(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 [T, H, W, 3] per temporal view -> [T, 3, S, S] (train, one view) or
        [V, T, 3, S, S] with V = temporal views x crops, view-major (eval)."""
        if self.train:
            return train_clip(frames[0], self.image_size,
                              self.augment or AugmentSpec(enabled=False))
        views = torch.cat([eval_views(f, self.image_size, self.spatial_crops) for f in frames])
        return views[0] if len(views) == 1 else views

    def empty(self, imu_len: int | None) -> dict[str, torch.Tensor]:
        """Zero placeholders with the shapes of a valid item."""
        shape = (self.num_frames, 3, self.image_size, self.image_size)
        lead = () if self.views == 1 else (self.views,)
        out = {"video": torch.zeros(*lead, *shape)}
        if imu_len is not None:
            out["imu"] = torch.zeros(*lead, 6, imu_len)
        return out


def item_rng() -> np.random.Generator:
    """Per-item numpy generator drawn from torch's RNG, so sampling is reproducible from the
    trial seed in the main process and in DataLoader workers (which torch seeds per worker)."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,))))


def pack(sampling: ClipSampling, video: torch.Tensor, imu: list[np.ndarray] | None,
         label: int, index: int) -> dict[str, Any]:
    """Assemble one item; an IMU cut per temporal view is repeated for each spatial crop."""
    item: dict[str, Any] = {"video": video, "label": torch.tensor(label, dtype=torch.int64),
                            "index": index, "valid": True}
    if imu is not None:
        cuts = [torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32)) for c in imu]
        if sampling.views == 1:
            item["imu"] = cuts[0]
        else:
            item["imu"] = torch.stack([c for c in cuts for _ in range(sampling.spatial_crops)])
    return item


class ManifestClips(Dataset):
    """Clips of a manifest (``vidablate.data.manifest``): decoded with decord or PyAV (or read
    from frame folders, ``vidablate.data.frames``), sampled sparse or dense, augmented or cut
    into evaluation views, with the IMU stream cut to the sampled frames."""

    def __init__(
        self,
        records: list[dict[str, Any]],
        root: str | Path,
        sampling: ClipSampling,
        *,
        decoder: str = "auto",
        fps: float = 30.0,
        imu_rate: int = 16,
        use_imu: bool = False,
        on_corrupt: str = "skip",
        imu_root: str | Path | None = None,
    ) -> None:
        self.records = records
        self.root = Path(root)
        self.imu_root = Path(imu_root) if imu_root else self.root
        self.sampling = sampling
        self.decoder = decoder
        self.fps = fps
        self.imu_rate = imu_rate
        self.use_imu = use_imu
        if on_corrupt not in ("skip", "fail"):
            raise ValueError(f"data.on_corrupt must be skip|fail, got {on_corrupt!r}")
        self.on_corrupt = on_corrupt
        self.labels = np.array([int(r["label"]) for r in records], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.records)

    def _imu_len(self) -> int | None:
        return self.sampling.num_frames * self.imu_rate if self.use_imu else None

    def __getitem__(self, idx: int) -> dict[str, Any]:
        rec = self.records[idx]
        path = resolve_video(rec["video"], self.root)
        try:
            with open_clip_source(path, backend=self.decoder, fps=self.fps) as src:
                fps = float(src.fps)
                first, last = _frame_span(rec.get("start"), rec.get("end"), fps, src.num_frames)
                views = self.sampling.indices(src.num_frames, first, last, item_rng())
                decoded = src.get(np.concatenate(views))
            frames = np.split(decoded, len(views))
            video = self.sampling.pixels(frames)
            imu = None
            if self.use_imu:
                stream = read_imu(resolve_video(rec["imu"], self.imu_root))
                if self.sampling.imu_span == "frames":
                    imu = [imu_for_frames(stream, v / fps, fps, self.imu_rate) for v in views]
                else:
                    length = self.sampling.num_frames * self.imu_rate
                    imu = [imu_for_span(stream, a / fps, b / fps, length)
                           for a, b in (self.sampling.span(v, first, last) for v in views)]
        except (VideoDecodeError, OSError, ValueError) as err:
            if self.on_corrupt == "fail":
                raise VideoDecodeError(path, f"{err} (data.on_corrupt=fail)") from err
            print(f"vidablate: skipping corrupt clip {path}: {err}", file=sys.stderr, flush=True)
            item = self.sampling.empty(self._imu_len())
            item.update(label=torch.tensor(int(rec["label"]), dtype=torch.int64), index=idx,
                        valid=False)
            return item
        return pack(self.sampling, video, imu, int(rec["label"]), idx)


def _frame_span(start: Any, end: Any, fps: float, num_frames: int) -> tuple[int, int]:
    """The clip's [first, last] frame from the manifest's optional start/end seconds."""
    first, last = 0, num_frames - 1
    if start is not None and not (isinstance(start, float) and np.isnan(start)):
        first = min(max(int(np.floor(float(start) * fps + 1e-6)), 0), num_frames - 1)
    if end is not None and not (isinstance(end, float) and np.isnan(end)):
        last = min(max(int(np.ceil(float(end) * fps - 1e-6)) - 1, first), num_frames - 1)
    return first, last
