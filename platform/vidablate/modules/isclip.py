"""IS-CLIP (He et al., "Inertial Strengthened CLIP model for Zero-shot Multimodal Egocentric
Activity Recognition"): the STFT IMU branch, SIRM, SGAM and feature distillation (§II)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SENSOR_CHANNELS = {"acc": slice(0, 3), "gyro": slice(3, 6)}
"""IMU array layout: channels 0-2 accelerometer xyz, 3-5 gyroscope xyz."""


class STFTSpectrogram(nn.Module):
    """Magnitude STFT of each IMU channel (isclip Eq. 3), computed on the model's device.

    ``window`` is w(t) of Eq. 3 (hann | hamming | rect); ``log`` applies log(1+|X|) to tame the
    dynamic range (the paper leaves scaling open). No padding: frames cover the clip exactly.
    """

    def __init__(self, n_fft: int = 32, hop: int = 8, window: str = "hann", log: bool = True):
        super().__init__()
        self.n_fft, self.hop, self.log = n_fft, hop, log
        makers = {
            "hann": lambda n: torch.hann_window(n, periodic=True),
            "hamming": lambda n: torch.hamming_window(n, periodic=True),
            "rect": torch.ones,
        }
        if window not in makers:
            raise ValueError(f"window must be one of {sorted(makers)}, got {window!r}")
        self.register_buffer("window", makers[window](n_fft), persistent=False)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        """[B, C, L] -> [B, C, n_fft//2+1, 1 + (L - n_fft)//hop]."""
        b, c, length = signal.shape
        spec = torch.stft(
            signal.reshape(b * c, length).float(), n_fft=self.n_fft, hop_length=self.hop,
            window=self.window, center=False, return_complex=True,
        ).abs()
        if self.log:
            spec = torch.log1p(spec)
        return spec.reshape(b, c, *spec.shape[-2:])


class IMUEncoder(nn.Module):
    """Time-frequency encoder shared by the accelerometer and the gyroscope (isclip §II-B:
    "the two sensors share one encoder"). A small 2-D CNN over the 3-axis spectrogram; the paper
    does not specify its architecture, so ``width`` is a knob."""

    def __init__(self, out_dim: int, width: int = 64, in_axes: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_axes, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, out_dim),
        )

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """[B, 3, F, frames] -> [B, out_dim]."""
        return self.net(spec)


class IMUBranch(nn.Module):
    """STFT -> shared encoder per sensor -> concat -> linear -> f_IMU in R^D (isclip §II-B)."""

    def __init__(
        self,
        embed_dim: int,
        sensors: tuple[str, ...] = ("acc", "gyro"),
        n_fft: int = 32,
        hop: int = 8,
        window: str = "hann",
        width: int = 64,
    ) -> None:
        super().__init__()
        unknown = set(sensors) - set(SENSOR_CHANNELS)
        if not sensors or unknown:
            raise ValueError(f"sensors must be a non-empty subset of {sorted(SENSOR_CHANNELS)}")
        self.sensors = tuple(sensors)
        self.stft = STFTSpectrogram(n_fft, hop, window)
        self.encoder = IMUEncoder(embed_dim, width)
        self.fuse = nn.Linear(embed_dim * len(self.sensors), embed_dim)

    def forward(self, imu: torch.Tensor) -> torch.Tensor:
        """[B, 6, L] raw IMU -> f_IMU [B, D]."""
        feats = [self.encoder(self.stft(imu[:, SENSOR_CHANNELS[s]])) for s in self.sensors]
        return self.fuse(torch.cat(feats, dim=-1))


class SIRM(nn.Module):
    """Subject-object Interaction Refinement Module (isclip §II-C, Eq. 6-8).

    f_IMU is the query, the N frame features are keys and values, 8 heads (Eq. 8). The attended
    vector (1 x D) is added to every frame feature: the paper's "residual connections to the
    visual features before and after refinement" with a single IMU query yields N x D features
    only this way, and SGAM consumes N refined frame features (f'_v in R^{N x 512}).
    """

    def __init__(self, embed_dim: int, num_heads: int = 8) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)

    def forward(
        self, frames: torch.Tensor, f_imu: torch.Tensor, return_weights: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """frames [B, N, D], f_imu [B, D] -> (refined frames [B, N, D], attention [B, N]).
        ``return_weights=False`` skips the weights so torch runs its fused SDPA kernel."""
        out, weights = self.attn(f_imu.unsqueeze(1), frames, frames,
                                 need_weights=return_weights)
        return frames + out, (weights.squeeze(1) if weights is not None else None)


class SGAM(nn.Module):
    """Subject-motion Guided Aggregation Module (isclip §II-D): an MLP maps f_IMU to N frame
    logits, softmax over time gives the weights, the video embedding is the weighted sum."""

    def __init__(self, embed_dim: int, num_frames: int, hidden: int = 0) -> None:
        super().__init__()
        hidden = hidden or embed_dim
        self.num_frames = num_frames
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, hidden), nn.GELU(), nn.Linear(hidden, num_frames)
        )

    def forward(
        self, frames: torch.Tensor, f_imu: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """frames [B, N, D], f_imu [B, D] -> (video embedding [B, D], weights [B, N])."""
        if frames.shape[1] != self.num_frames:
            raise ValueError(
                f"SGAM was built for N={self.num_frames} frames, got {frames.shape[1]}"
            )
        weights = self.mlp(f_imu).softmax(dim=-1)
        return torch.einsum("bn,bnd->bd", weights, frames), weights


def feature_distillation_loss(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """L_kd = 1 - (1/N) sum_i cos(f^t_{v_i}, f_{v_i}) (isclip Eq. 4), averaged over the batch.

    The teacher is detached: only the student receives gradient.
    """
    return 1.0 - F.cosine_similarity(teacher.detach().float(), student.float(), dim=-1).mean()
