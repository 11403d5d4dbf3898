"""VideoCLIP: the one model that carries every module as a toggle, and its composer.

``build_model`` is the only place that reads a ModelConfig; modules get explicit kwargs.
The frozen/trainable boundary is explicit: ``FrameEncoder`` owns the frozen prefix, and
``param_groups`` names what trains and with which optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import FrameEncoder, TextEncoder, load_clip
from .config import ModelConfig
from .modules.isclip import SGAM, SIRM, IMUBranch, feature_distillation_loss


@dataclass
class VideoOutput:
    """What one forward pass produces (everything the losses and the analyses need)."""

    video: torch.Tensor  # [B, D] video embedding (not normalised)
    frames: torch.Tensor  # [B, N, D] student frame features f_v (before SIRM)
    teacher: torch.Tensor | None  # [B, N, D] frozen teacher frame features f_v^t
    frame_weights: torch.Tensor | None  # [B, N] SGAM weights


class VideoCLIP(nn.Module):
    """Frame encoder -> (SIRM) -> (SGAM | mean over frames) -> cosine logits vs class texts."""

    def __init__(
        self,
        frames: FrameEncoder,
        text: TextEncoder,
        logit_scale: torch.Tensor,
        imu: IMUBranch | None = None,
        sirm: SIRM | None = None,
        sgam: SGAM | None = None,
        distill_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if (sirm is not None or sgam is not None) and imu is None:
            raise ValueError("SIRM/SGAM need an IMU branch")
        self.frame_encoder = frames
        self.text = text
        self.register_buffer("logit_scale", logit_scale.detach().clone().float())
        self.imu, self.sirm, self.sgam = imu, sirm, sgam
        self.distill_weight = distill_weight

    def encode_video(self, video: torch.Tensor, imu: torch.Tensor | None = None) -> VideoOutput:
        """video [B, N, 3, H, W], imu [B, 6, L] -> VideoOutput."""
        b, n = video.shape[:2]
        student, teacher = self.frame_encoder(video.flatten(0, 1))
        frames = student.reshape(b, n, -1)
        teacher = teacher.reshape(b, n, -1) if teacher is not None else None
        refined, weights = frames, None
        if self.imu is not None:
            if imu is None:
                raise ValueError("this model uses IMU (SIRM/SGAM on) but the batch has no 'imu'")
            f_imu = self.imu(imu)
            if self.sirm is not None:
                refined, _ = self.sirm(frames, f_imu)
            if self.sgam is not None:
                pooled, weights = self.sgam(refined, f_imu)
            else:
                pooled = refined.mean(dim=1)
        else:
            pooled = refined.mean(dim=1)  # CLIP-Mean baseline (isclip §II-A)
        return VideoOutput(pooled, frames, teacher, weights)

    def logits(self, video: torch.Tensor, class_names: list[str]) -> torch.Tensor:
        """Scaled cosine similarities [B, C] (isclip Eq. 1) against the given classes."""
        text = self.text(class_names).to(video.dtype)
        video = video / video.norm(dim=-1, keepdim=True)
        return self.logit_scale.exp() * video @ text.t()

    def forward(
        self, video: torch.Tensor, imu: torch.Tensor | None, class_names: list[str]
    ) -> tuple[torch.Tensor, VideoOutput]:
        out = self.encode_video(video, imu)
        return self.logits(out.video.float(), class_names), out

    def loss(
        self,
        logits: torch.Tensor,
        out: VideoOutput,
        target: torch.Tensor,
        label_smoothing: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """L = L_CE + w * L_kd (isclip Eq. 5); returns the parts and the total."""
        parts = {"ce": F.cross_entropy(logits, target, label_smoothing=label_smoothing)}
        if out.teacher is not None and self.distill_weight:
            parts["kd"] = feature_distillation_loss(out.teacher, out.frames)
            parts["loss"] = parts["ce"] + self.distill_weight * parts["kd"]
        else:
            parts["loss"] = parts["ce"]
        return parts

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimizer group: the CLIP visual tower vs new modules
        (isclip §III: Adam 1e-5 for CLIP visual, SGD 1e-3 for the others)."""
        clip_ids = {id(p) for p in self.frame_encoder.parameters()}
        visual = [p for p in self.frame_encoder.parameters() if p.requires_grad]
        new = [p for p in self.parameters() if p.requires_grad and id(p) not in clip_ids]
        return {"clip_visual": _unique(visual), "new": _unique(new)}


def _unique(params: list[nn.Parameter]) -> list[nn.Parameter]:
    seen: set[int] = set()
    return [p for p in params if not (id(p) in seen or seen.add(id(p)))]


def build_model(cfg: ModelConfig, num_frames: int) -> VideoCLIP:
    """The composer: map a ModelConfig to modules with explicit constructor arguments."""
    clip, tokenizer = load_clip(cfg.backbone, cfg.pretrained)
    frames = FrameEncoder(
        clip.visual,
        trainable_blocks=cfg.trainable_blocks,
        train_proj=cfg.train_visual_proj,
        teacher=cfg.distill,
    )
    dim = frames.embed_dim
    text = TextEncoder(clip, tokenizer, cfg.prompt_template)
    imu = sirm = sgam = None
    if cfg.uses_imu:
        sensors = tuple(s for s, on in (("acc", cfg.imu_acc), ("gyro", cfg.imu_gyro)) if on)
        imu = IMUBranch(dim, sensors, cfg.stft_n_fft, cfg.stft_hop, cfg.stft_window,
                        cfg.imu_width)
        if cfg.sirm:
            sirm = SIRM(dim, cfg.sirm_heads)
        if cfg.sgam:
            sgam = SGAM(dim, num_frames, cfg.sgam_hidden)
    return VideoCLIP(frames, text, clip.logit_scale, imu, sirm, sgam,
                     cfg.distill_weight if cfg.distill else 0.0)
