"""What IS-CLIP's IMU-driven modules do, measured per epoch on the embedded synthetic data,
whose generator knows each clip's IMU-active window (``vidablate.data.synthetic``):

* ``sgam_entropy``: entropy of SGAM's frame weights over log N (1 = uniform, the frame mean);
* ``sgam_window_mass``: the weight SGAM puts on the window's frames, next to
  ``window_fraction``, the share a uniform weighting puts there;
* ``sgam_peak_in_window``: clips whose largest weight falls inside the window;
* the same three for SIRM's attention of the f_IMU query over the N frame features (isclip
  Eq. 6-8: SIRM attends over frames, so "the object vs the distractors" is measurable only
  as which frames it reads; ``sirm_entropy`` 1 = it reads every frame alike);
* ``imu_grad_norm``: the L2 norm of the gradient reaching the IMU branch, mean over the
  epoch's optimizer steps (``imu_grad_norm`` during training, ``GradNorm``).

They are computed on a fixed set of generated test clips run through the model on pixels,
whatever the trial trains on (feature cache or not), and logged to MLflow with the metrics.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..data.synthetic import SyntheticSpec, generate_split
from ..data.video import CLIP_MEAN, CLIP_STD
from ..model import VideoCLIP
from .keys import DIAGNOSTIC_METRICS

__all__ = ["DIAGNOSTIC_METRICS", "GradNorm", "ProbeSet", "has_imu_modules"]

PROBE_CLIPS = 64
"""Test clips of the probe set (the first ones of the split: every class is present)."""


def has_imu_modules(model: VideoCLIP) -> bool:
    return getattr(model, "sgam", None) is not None or getattr(model, "sirm", None) is not None


def _normalised_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Mean over clips of H(w) / log N for weights [B, N] summing to 1."""
    n = weights.shape[-1]
    h = -(weights.clamp_min(1e-12).log() * weights).sum(dim=-1)
    return (h / math.log(n)).mean()


def _window_stats(weights: torch.Tensor, inside: torch.Tensor, prefix: str
                  ) -> dict[str, float]:
    peak = weights.argmax(dim=-1)
    return {f"{prefix}_entropy": float(_normalised_entropy(weights)),
            f"{prefix}_window_mass": float((weights * inside).sum(dim=-1).mean()),
            f"{prefix}_peak_in_window": float(inside.gather(1, peak[:, None]).mean())}


class ProbeSet:
    """A fixed batch of generated test clips with their IMU-active windows."""

    def __init__(self, spec: SyntheticSpec, clips: int = PROBE_CLIPS) -> None:
        data = generate_split(spec, "test")
        keep = slice(0, min(clips, len(data["label"])))
        frames = torch.from_numpy(data["video"][keep]).permute(0, 1, 4, 2, 3).float() / 255.0
        mean = torch.tensor(CLIP_MEAN).view(1, 1, 3, 1, 1)
        std = torch.tensor(CLIP_STD).view(1, 1, 3, 1, 1)
        self.video = (frames - mean) / std
        self.imu = torch.from_numpy(data["imu"][keep])
        window = torch.from_numpy(data["window"][keep])
        t = torch.arange(self.video.shape[1])
        self.inside = ((t[None] >= window[:, :1]) & (t[None] <= window[:, 1:])).float()

    @torch.no_grad()
    def measure(self, model: VideoCLIP, device: torch.device) -> dict[str, float]:
        """SGAM's and SIRM's window statistics on the probe clips (modules that are off are
        left out)."""
        was_training = model.training
        model.eval()
        try:
            out = model.encode_video(self.video.to(device), self.imu.to(device))
            inside = self.inside.to(device)
            stats = {"window_fraction": float(inside.mean())}
            if out.frame_weights is not None and getattr(model, "sgam", None) is not None:
                stats |= _window_stats(out.frame_weights.float(), inside, "sgam")
            sirm = getattr(model, "sirm", None)
            if sirm is not None and out.ctx.f_imu is not None:
                _, weights = sirm(out.frames, out.ctx.f_imu, return_weights=True)
                stats |= _window_stats(weights.float(), inside, "sirm")
            return stats
        finally:
            model.train(was_training)


class GradNorm:
    """Running mean of the L2 norm of a module's gradients, read after each optimizer step."""

    def __init__(self, module: nn.Module | None) -> None:
        self.params = [p for p in module.parameters() if p.requires_grad] if module else []
        self.total, self.steps = 0.0, 0

    def update(self) -> None:
        grads = [p.grad.detach().float().norm() for p in self.params if p.grad is not None]
        if grads:
            self.total += float(torch.linalg.vector_norm(torch.stack(grads)))
            self.steps += 1

    def read(self) -> dict[str, float]:
        """``{"imu_grad_norm": mean}`` since the last read (empty when nothing was seen)."""
        out = {"imu_grad_norm": self.total / self.steps} if self.steps else {}
        self.total, self.steps = 0.0, 0
        return out
