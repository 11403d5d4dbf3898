"""IS-CLIP (He et al., "Inertial Strengthened CLIP model for Zero-shot Multimodal Egocentric
Activity Recognition"): the STFT IMU branch, SIRM, SGAM and feature distillation (§II).

Where each attaches (``build``): the IMU branch reads the batch's ``imu`` into ``ctx.f_imu``;
SIRM is the first frame refiner; SGAM is the frame->video pool; distillation is a loss term
against a frozen teacher copy of the tower. With SIRM and SGAM off (and ``distill`` on) the model
is the paper's "Fine-tuned CLIP" baseline. The modules are attached to the model as ``imu``,
``sirm`` and ``sgam``, so their parameters keep those names in checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..stages import Paper, Parts, Pooled, StageContext, ValidationContext, VideoOutput

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


# --------------------------------------------------------------------------- stage adapters


class IMUFeature(nn.Module):
    """Input stage: the batch's raw IMU [B, 6, L] -> ``ctx.f_imu`` [B, D] (isclip §II-B)."""

    def __init__(self, branch: IMUBranch) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, ctx: StageContext, imu: torch.Tensor | None = None) -> None:
        if imu is None:
            raise ValueError("this model uses IMU (SIRM/SGAM on) but the batch has no 'imu'")
        ctx.f_imu = self.branch(imu)


def _f_imu(ctx: StageContext, who: str) -> torch.Tensor:
    if ctx.f_imu is None:
        raise ValueError(f"{who} needs the IMU feature f_IMU (ctx.f_imu): the model has no IMU "
                         "branch filling it")
    return ctx.f_imu


class SIRMRefiner(nn.Module):
    """Stage adapter: SIRM refines the frames with f_IMU as query (isclip §II-C)."""

    def __init__(self, sirm: SIRM) -> None:
        super().__init__()
        self.sirm = sirm

    def forward(self, frames: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        return self.sirm(frames, _f_imu(ctx, "SIRM"), return_weights=False)[0]


class SGAMPool(nn.Module):
    """Stage adapter: SGAM's IMU-guided weighted sum over frames (isclip §II-D)."""

    def __init__(self, sgam: SGAM) -> None:
        super().__init__()
        self.sgam = sgam

    def forward(self, frames: torch.Tensor, ctx: StageContext) -> Pooled:
        video, weights = self.sgam(frames, _f_imu(ctx, "SGAM"))
        return Pooled(video, weights=weights)


class FeatureDistillation(nn.Module):
    """Loss term L_kd of isclip Eq. 4 between the frozen teacher's and the student's frame
    features, added with ``weight`` (Eq. 5). Nothing is added when the forward ran without the
    teacher (evaluation) or the weight is 0.

    ``projector_alpha`` > 0 is the distillation of STDD's official code (FROSTER's residual
    projector, ``RAW_MODEL_DISTILLATION``): the L2-normalised student feature f becomes
    f + alpha * MLP(f) before the cosine, with MLP = Linear(D, D, no bias, Kaiming normal) ->
    GELU -> Linear(D, D, no bias, zero init). The official code computes that feature under
    ``no_grad``, so its loss trains nothing; here the student and the projector get the
    gradient."""

    def __init__(self, weight: float = 1.0, dim: int = 0, projector_alpha: float = 0.0) -> None:
        super().__init__()
        self.weight = float(weight)
        self.alpha = float(projector_alpha)
        self.projector = None
        if self.alpha:
            self.projector = nn.Sequential(nn.Linear(dim, dim, bias=False), nn.GELU(),
                                           nn.Linear(dim, dim, bias=False))
            nn.init.kaiming_normal_(self.projector[0].weight)
            nn.init.zeros_(self.projector[2].weight)

    def forward(self, out: VideoOutput) -> dict[str, torch.Tensor]:
        if out.teacher is None or not self.weight:
            return {}
        student = out.frames
        if self.projector is not None:
            student = F.normalize(student.float(), dim=-1)
            student = student + self.alpha * self.projector(student)
        return {"kd": feature_distillation_loss(out.teacher, student)}


# --------------------------------------------------------------------------- knobs


@dataclass
class ISCLIPKnobs:
    """IS-CLIP (isclip §II): ``sirm``, ``sgam``, the IMU branch (``imu_acc``, ``imu_gyro``) and
    feature distillation; with both toggles off and ``distill`` on this is the paper's
    "Fine-tuned CLIP" baseline."""

    sirm: bool = False
    """Subject-object Interaction Refinement Module (isclip §II-C, Eq. 6-8)."""
    sgam: bool = False
    """Subject-motion Guided Aggregation Module (isclip §II-D)."""
    imu_acc: bool = True
    """Feed the accelerometer into f_IMU (isclip Table III)."""
    imu_gyro: bool = True
    """Feed the gyroscope into f_IMU (isclip Table III)."""
    stft_n_fft: int = 32
    """STFT window length in IMU samples (isclip Eq. 3 leaves it open)."""
    stft_hop: int = 8
    """STFT hop in IMU samples (isclip Eq. 3 leaves it open)."""
    stft_window: str = "hann"
    """STFT window function w(t) (isclip Eq. 3 leaves it open): hann | hamming | rect."""
    imu_width: int = 64
    """Channel width of the shared IMU encoder (isclip §II-B leaves it open)."""
    sirm_heads: int = 8
    """Attention heads in SIRM (isclip Eq. 8: i in [1, 8])."""
    sgam_hidden: int = 0
    """Hidden width of SGAM's MLP; 0 means the embedding width D (isclip §II-D leaves it open)."""
    distill: bool = True
    """L_kd = 1 - mean cos(teacher, student) against a frozen teacher copy (isclip Eq. 4)."""
    distill_weight: float = 1.0
    """Weight of L_kd in the total loss (isclip Eq. 5 adds it with weight 1; STDD's official
    DISTILLATION_RATIO: 2.0)."""
    distill_projector: float = 0.0
    """alpha of the residual projector on the student features before the cosine, f + alpha *
    MLP(f) (STDD's official code, after FROSTER: 0.1); 0 = isclip Eq. 4 as written."""


STFT_WINDOWS = ("hann", "hamming", "rect")


def needs_imu(cfg: ISCLIPKnobs) -> bool:
    """True when the IMU branch is built (a module consumes f_IMU); the composed config's
    ``uses_imu`` asks every paper."""
    return bool(cfg.sirm or cfg.sgam)


def validate(ctx: ValidationContext) -> None:
    """IS-CLIP knobs against each other, the backbone and the clip length."""
    m, d = ctx.model, ctx.data
    if m.uses_imu and not (m.imu_acc or m.imu_gyro):
        on = [n for n in ("sirm", "sgam") if getattr(m, n)]
        raise ConfigError(
            f"model.{'/'.join(on)} needs f_IMU but both model.imu_acc and model.imu_gyro "
            "are off; turn a sensor on or the module off"
        )
    if m.stft_n_fft < 2 or m.stft_hop < 1 or m.stft_hop > m.stft_n_fft:
        raise ConfigError("model.stft_n_fft must be >= 2 and 1 <= model.stft_hop <= n_fft")
    if m.stft_window not in STFT_WINDOWS:
        raise ConfigError(f"model.stft_window must be hann|hamming|rect, got {m.stft_window!r}")
    if m.sirm_heads < 1:
        raise ConfigError("model.sirm_heads must be >= 1")
    if m.distill_projector < 0 or (m.distill_projector and not m.distill):
        raise ConfigError("model.distill_projector must be >= 0 and needs model.distill on")
    if m.sirm and (m.sgam_hidden < 0 or m.imu_width < 1):
        raise ConfigError("model.sgam_hidden must be >= 0 and model.imu_width >= 1")
    if m.sirm and ctx.spec is not None and ctx.spec.embed_dim % m.sirm_heads:
        raise ConfigError(f"model.sirm_heads={m.sirm_heads} must divide the embedding "
                          f"width {ctx.spec.embed_dim} of model.backbone={m.backbone!r}")
    if m.uses_imu and d.num_frames * d.imu_rate < m.stft_n_fft:
        raise ConfigError(
            f"model.stft_n_fft={m.stft_n_fft} is longer than the IMU clip "
            f"(data.num_frames*data.imu_rate={d.num_frames * d.imu_rate})"
        )


def build(cfg: ISCLIPKnobs, parts: Parts) -> None:
    """IMU branch (input stage), SIRM (first refiner), SGAM (pool), distillation (loss)."""
    if cfg.distill:
        parts.teacher = True
        parts.losses.append(FeatureDistillation(cfg.distill_weight, parts.dim,
                                                cfg.distill_projector))
    imu = sirm = sgam = None
    if needs_imu(cfg):
        sensors = tuple(s for s, on in (("acc", cfg.imu_acc), ("gyro", cfg.imu_gyro)) if on)
        imu = IMUBranch(parts.dim, sensors, cfg.stft_n_fft, cfg.stft_hop, cfg.stft_window,
                        cfg.imu_width)
        if cfg.sirm:
            sirm = SIRM(parts.dim, cfg.sirm_heads)
        if cfg.sgam:
            sgam = SGAM(parts.dim, parts.num_frames, cfg.sgam_hidden)
    for name, module in (("imu", imu), ("sirm", sirm), ("sgam", sgam)):
        parts.attach(name, module)
    if imu is not None:
        parts.inputs.append(IMUFeature(imu))
    if sirm is not None:
        parts.refiners.append(SIRMRefiner(sirm))
    if sgam is not None:
        parts.set_pool(SGAMPool(sgam), "model.sgam")


PAPER = Paper(
    name="isclip", knobs=ISCLIPKnobs, build=build, validate=validate,
    claims={"sirm": "refiner", "sgam": "pool"},
    inputs=lambda cfg: frozenset({"imu"}) if needs_imu(cfg) else frozenset(),
    temporal={"sgam (isclip)": {"sgam": True}},
    attention={"sirm": True}, attention_calls=lambda spec: 1,
)
