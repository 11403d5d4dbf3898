"""VideoCLIP: the one model that carries every module as a toggle, and its composer.

``build_model`` is the only place that reads a ModelConfig; modules get explicit kwargs.

The forward pass is a fixed pipeline of stages; each paper's modules plug into a stage:

1. video tower (``FrameEncoder``): hooks inside the ViT blocks (X-CLIP CCT, STDD space-time
   cross attention, OmniCLIP PTA and SPG) -> frame features [B, T, D] (+ patch tokens);
2. frame refiners, in order, each ``(frames [B,T,D], ctx) -> frames`` (IS-CLIP SIRM, X-CLIP
   MIT's transformer, OmniCLIP's temporal MHA);
3. the pool, ``(frames, ctx) -> Pooled`` (frame mean, IS-CLIP SGAM, MotionPrompt MMB);
4. the text side, ``(class_names, ctx) -> [C, D] | [B, C, D] | [C, K, D]`` (hand-crafted
   templates, MotionPrompt MAP, learnable context), then text refiners
   ``(text, ctx) -> text`` (X-CLIP video-specific prompt);
5. cross-modal ``(text, video, ctx) -> (text, video)`` (MotionPrompt MCB);
6. the head ``(video, text, ctx, logit_scale) -> logits [B, C]`` (cosine, STDD frame-prompt
   alignment).

``ctx`` is a ``StageContext`` carrying what later stages may read (IMU feature, patch tokens,
per-frame features, motion cue). The frozen/trainable boundary is explicit: ``frozen_parts``
names what never trains for the built configuration, and ``param_groups`` what does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import FrameEncoder, TextEncoder, load_clip, parse_block_spec
from .config import ModelConfig
from .modules.isclip import SGAM, SIRM, IMUBranch, feature_distillation_loss
from .modules.motionprompt import (
    MCBStage,
    MMBPool,
    MotionAwarePrompts,
    MotionModelingBlock,
    MultimodalCommunicationBlock,
    map_init_phrase,
)
from .modules.omniclip import (
    OmniTemporal,
    ParallelTemporalAdapter,
    PreChain,
    SelfPromptGenerator,
    TemporalEncoding,
)
from .modules.omniclip import parse_blocks as parse_pta_blocks
from .modules.stdd import (
    FramePromptAlignment,
    PromptSets,
    SpaceTimeCrossAttention,
    STCAPrompt,
    load_prompt_sets,
    parse_scales,
)
from .modules.xclip import (
    ENSEMBLE_TEMPLATES,
    CrossFrameMessage,
    LearnableContext,
    LinearHead,
    MultiFrameIntegration,
    VideoSpecificPrompt,
)


@dataclass
class StageContext:
    """Per-batch values shared across stages (filled as the pipeline runs)."""

    f_imu: torch.Tensor | None = None
    """[B, D] IMU feature (IS-CLIP)."""
    patches: torch.Tensor | None = None
    """[B, T, P, D] projected patch tokens (X-CLIP video-specific prompt)."""
    frames: torch.Tensor | None = None
    """[B, T, D] frame features after the refiners (MCB, frame-prompt alignment)."""
    motion: torch.Tensor | None = None
    """[B, D] motion cue from the pool (MotionPrompt MMB -> MAP's motion adapter)."""
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    """Extra weighted loss terms a module adds (name -> scalar), summed into the loss."""


@dataclass
class Pooled:
    video: torch.Tensor
    """[B, D] video embedding."""
    weights: torch.Tensor | None = None
    """[B, T] frame weights when the pool learns them (SGAM)."""
    motion: torch.Tensor | None = None
    """[B, D] motion cue (MMB)."""


@dataclass
class VideoOutput:
    """What one forward pass produces (everything the losses and the analyses need)."""

    video: torch.Tensor  # [B, D] video embedding (not normalised)
    frames: torch.Tensor  # [B, N, D] student frame features f_v (before any refiner)
    teacher: torch.Tensor | None  # [B, N, D] frozen teacher frame features f_v^t
    frame_weights: torch.Tensor | None  # [B, N] SGAM weights
    ctx: StageContext = field(default_factory=StageContext)


class MeanPool(nn.Module):
    """CLIP-Mean: the average of the frame features (isclip §II-A; X-CLIP's "mean pooling")."""

    def forward(self, frames: torch.Tensor, ctx: StageContext) -> Pooled:
        return Pooled(frames.mean(dim=1))


class SIRMRefiner(nn.Module):
    """Stage adapter: SIRM refines the frames with f_IMU as query (isclip §II-C)."""

    def __init__(self, sirm: SIRM) -> None:
        super().__init__()
        self.sirm = sirm

    def forward(self, frames: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        return self.sirm(frames, ctx.f_imu, return_weights=False)[0]


class SGAMPool(nn.Module):
    """Stage adapter: SGAM's IMU-guided weighted sum over frames (isclip §II-D)."""

    def __init__(self, sgam: SGAM) -> None:
        super().__init__()
        self.sgam = sgam

    def forward(self, frames: torch.Tensor, ctx: StageContext) -> Pooled:
        video, weights = self.sgam(frames, ctx.f_imu)
        return Pooled(video, weights=weights)


class TemplatePrompts(nn.Module):
    """Hand-crafted prompts (one template or an ensemble) through the text tower."""

    def __init__(self, text: TextEncoder) -> None:
        super().__init__()
        self.text = text

    def forward(self, class_names: list[str], ctx: StageContext) -> torch.Tensor:
        return self.text(class_names)


class CosineHead(nn.Module):
    """Scaled cosine similarity (isclip Eq. 1); text may be shared [C, D] or per video
    [B, C, D]."""

    def forward(self, video: torch.Tensor, text: torch.Tensor, ctx: StageContext,
                logit_scale: torch.Tensor) -> torch.Tensor:
        video = F.normalize(video.float(), dim=-1)
        text = F.normalize(text.float(), dim=-1)
        if text.dim() == 2:
            sims = video @ text.t()
        else:
            sims = torch.einsum("bd,bcd->bc", video, text)
        return logit_scale.exp() * sims


class VideoCLIP(nn.Module):
    """Video tower -> frame refiners -> pool; text side -> text refiners; cross-modal; head."""

    def __init__(
        self,
        frames: FrameEncoder,
        text: TextEncoder,
        logit_scale: torch.Tensor,
        imu: IMUBranch | None = None,
        sirm: SIRM | None = None,
        sgam: SGAM | None = None,
        distill_weight: float = 1.0,
        refiners: list[nn.Module] | None = None,
        pool: nn.Module | None = None,
        prompts: nn.Module | None = None,
        text_refiners: list[nn.Module] | None = None,
        cross_modal: nn.Module | None = None,
        head: nn.Module | None = None,
        train_logit_scale: bool = False,
    ) -> None:
        super().__init__()
        if (sirm is not None or sgam is not None) and imu is None:
            raise ValueError("SIRM/SGAM need an IMU branch")
        if sgam is not None and pool is not None:
            raise ValueError("SGAM is a pool; pass either sgam or pool, not both")
        self.frame_encoder = frames
        self.text = text
        scale = logit_scale.detach().clone().float()
        if train_logit_scale:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)
        self.imu, self.sirm, self.sgam = imu, sirm, sgam
        self.distill_weight = distill_weight
        self.refiners = nn.ModuleList(([SIRMRefiner(sirm)] if sirm is not None else [])
                                      + list(refiners or []))
        self.pool = SGAMPool(sgam) if sgam is not None else (pool or MeanPool())
        self.prompts = prompts or TemplatePrompts(text)
        self.text_refiners = nn.ModuleList(text_refiners or [])
        self.cross_modal = cross_modal
        self.head = head or CosineHead()

    def encode_video(self, video: torch.Tensor | None, imu: torch.Tensor | None = None,
                     tokens: torch.Tensor | None = None) -> VideoOutput:
        """video [B, N, 3, H, W] (or the frozen prefix's cached ``tokens`` [B, N, L, W]),
        imu [B, 6, L] -> VideoOutput (stages 1-3)."""
        vis = self.frame_encoder(video, tokens=tokens)
        ctx = StageContext(patches=vis.patches)
        if self.imu is not None:
            if imu is None:
                raise ValueError("this model uses IMU (SIRM/SGAM on) but the batch has no 'imu'")
            ctx.f_imu = self.imu(imu)
        refined = vis.frames
        for refiner in self.refiners:
            refined = refiner(refined, ctx)
        ctx.frames = refined
        pooled = self.pool(refined, ctx)
        ctx.motion = pooled.motion
        return VideoOutput(pooled.video, vis.frames, vis.teacher, pooled.weights, ctx)

    def encode_text(self, class_names: list[str], ctx: StageContext) -> torch.Tensor:
        """Class text features (stage 4): [C, D], [B, C, D] or [C, K, D]."""
        text = self.prompts(class_names, ctx)
        for refiner in self.text_refiners:
            text = refiner(text, ctx)
        return text

    def logits_of(self, out: VideoOutput, class_names: list[str]) -> torch.Tensor:
        """Stages 4-6 for an encoded batch: logits [B, C]."""
        text = self.encode_text(class_names, out.ctx)
        video = out.video
        if self.cross_modal is not None:
            text, video = self.cross_modal(text, video, out.ctx)
        return self.head(video, text, out.ctx, self.logit_scale)

    def logits(self, video: torch.Tensor, class_names: list[str]) -> torch.Tensor:
        """Scaled cosine similarities [B, C] (isclip Eq. 1) of pooled videos [B, D] against the
        class texts of the default (template) text side."""
        return CosineHead()(video, self.text(class_names), StageContext(), self.logit_scale)

    def forward(
        self, video: torch.Tensor | None, imu: torch.Tensor | None, class_names: list[str],
        tokens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, VideoOutput]:
        out = self.encode_video(video, imu, tokens)
        return self.logits_of(out, class_names), out

    def loss(
        self,
        logits: torch.Tensor,
        out: VideoOutput,
        target: torch.Tensor,
        label_smoothing: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """L = L_CE + w * L_kd (isclip Eq. 5) + module terms; returns the parts and the total."""
        parts = {"ce": F.cross_entropy(logits, target, label_smoothing=label_smoothing)}
        total = parts["ce"]
        if out.teacher is not None and self.distill_weight:
            parts["kd"] = feature_distillation_loss(out.teacher, out.frames)
            total = total + self.distill_weight * parts["kd"]
        for name, value in out.ctx.aux.items():
            parts[name] = value
            total = total + value
        parts["loss"] = total
        return parts

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimizer group: the CLIP visual tower, the CLIP text tower
        (only when it is fine-tuned) and the new modules (isclip §III: Adam 1e-5 for CLIP
        visual, SGD 1e-3 for the others; X-CLIP: new modules at 10x the CLIP rate)."""
        visual_tower = self.frame_encoder.visual
        clip_ids = {id(p) for p in visual_tower.parameters()}
        text_ids = {id(p) for p in self.text.text_parameters()}
        visual = [p for p in visual_tower.parameters() if p.requires_grad]
        text = [p for p in self.text.text_parameters() if p.requires_grad]
        new = [p for p in self.parameters()
               if p.requires_grad and id(p) not in clip_ids and id(p) not in text_ids]
        groups = {"clip_visual": _unique(visual), "new": _unique(new)}
        if text:
            groups["clip_text"] = _unique(text)
        return groups

    def frozen_parts(self) -> dict[str, bool]:
        """Which parts of the network never train for this configuration (a feature cache may
        store their outputs): the visual prefix up to block ``frame_encoder.split``, the text
        tower, the teacher."""
        return {
            f"visual_prefix[0:{self.frame_encoder.split}]": True,
            "text_tower": not self.text.trainable,
            "teacher": self.frame_encoder.teacher is not None,
        }


def _unique(params: list[nn.Parameter]) -> list[nn.Parameter]:
    seen: set[int] = set()
    return [p for p in params if not (id(p) in seen or seen.add(id(p)))]


def build_model(cfg: ModelConfig, num_frames: int) -> VideoCLIP:
    """The composer: map a ModelConfig to modules with explicit constructor arguments."""
    clip, tokenizer = load_clip(cfg.backbone, cfg.pretrained)
    depth = len(clip.visual.transformer.resblocks)
    width = int(clip.visual.transformer.width)
    dim = int(clip.visual.proj.shape[1]) if clip.visual.proj is not None else width
    parts = _Parts(dim=dim, width=width, depth=depth, num_frames=num_frames,
                   heads=int(clip.visual.transformer.resblocks[0].attn.num_heads))
    _isclip_parts(cfg, parts)
    _xclip_parts(cfg, parts)
    _motionprompt_parts(cfg, parts)
    _stdd_parts(cfg, parts)
    _omniclip_parts(cfg, parts)
    frames = FrameEncoder(
        clip.visual,
        trainable_blocks=cfg.trainable_blocks if parts.trainable_blocks is None
        else parts.trainable_blocks,
        train_proj=cfg.train_visual_proj if parts.train_visual_proj is None
        else parts.train_visual_proj,
        teacher=cfg.distill,
        hooks=parts.hooks,
        return_patches=parts.needs_patches,
    )
    text = TextEncoder(clip, tokenizer, parts.templates or cfg.prompt_template,
                       trainable=cfg.train_text)
    prompts = parts.prompts(text) if parts.prompts is not None else None
    return VideoCLIP(
        frames, text, clip.logit_scale, parts.imu, parts.sirm, parts.sgam,
        cfg.distill_weight if cfg.distill else 0.0,
        refiners=parts.refiners, pool=parts.pool, prompts=prompts,
        text_refiners=parts.text_refiners, cross_modal=parts.cross_modal, head=parts.head,
    )


@dataclass
class _Parts:
    """What the per-paper sections of the composer contribute."""

    dim: int
    width: int
    depth: int
    num_frames: int
    heads: int
    hooks: dict[int, dict] = field(default_factory=dict)
    needs_patches: bool = False
    imu: IMUBranch | None = None
    sirm: SIRM | None = None
    sgam: SGAM | None = None
    refiners: list[nn.Module] = field(default_factory=list)
    pool: nn.Module | None = None
    prompts: object | None = None  # callable TextEncoder -> prompts module
    templates: list[str] | None = None  # prompt ensemble replacing model.prompt_template
    text_refiners: list[nn.Module] = field(default_factory=list)
    cross_modal: nn.Module | None = None
    head: nn.Module | None = None
    trainable_blocks: int | None = None  # overrides model.trainable_blocks (STDD adaptation)
    train_visual_proj: bool | None = None  # overrides model.train_visual_proj

    def hook(self, block: int, kind: str, module: nn.Module, **extra) -> None:
        """Attach ``module`` as the ``kind`` hook of ``block`` (one module per kind)."""
        slot = self.hooks.setdefault(block, {})
        if slot.get(kind) is not None:
            raise ValueError(f"block {block} already has a {kind!r} hook")
        slot[kind] = module
        slot.update(extra)

    def set_pool(self, pool: nn.Module, who: str) -> None:
        if self.pool is not None or self.sgam is not None:
            raise ValueError(f"{who} is a pool, and another pool is already on")
        self.pool = pool


def _isclip_parts(cfg: ModelConfig, parts: _Parts) -> None:
    """IS-CLIP (isclip §II): IMU branch, SIRM (refiner), SGAM (pool)."""
    if not cfg.uses_imu:
        return
    sensors = tuple(s for s, on in (("acc", cfg.imu_acc), ("gyro", cfg.imu_gyro)) if on)
    parts.imu = IMUBranch(parts.dim, sensors, cfg.stft_n_fft, cfg.stft_hop, cfg.stft_window,
                          cfg.imu_width)
    if cfg.sirm:
        parts.sirm = SIRM(parts.dim, cfg.sirm_heads)
    if cfg.sgam:
        parts.sgam = SGAM(parts.dim, parts.num_frames, cfg.sgam_hidden)


def _xclip_parts(cfg: ModelConfig, parts: _Parts) -> None:
    """X-CLIP (xclip §3): CCT hooks, MIT refiner, video-specific prompt text refiner; the
    Table 8 linear head and the Table 9 prompt ensemble / learnable context."""
    if cfg.cct:
        heads = cfg.cct_heads or parts.heads
        for i in parse_block_spec(cfg.cct_blocks, parts.depth):
            parts.hook(i, "message", CrossFrameMessage(parts.width, heads))
    if cfg.mit:
        parts.refiners.append(
            MultiFrameIntegration(parts.dim, parts.num_frames, cfg.mit_depth, cfg.mit_heads))
    if cfg.video_prompt:
        parts.needs_patches = True
        parts.text_refiners.append(
            VideoSpecificPrompt(parts.dim, cfg.vprompt_layers, cfg.vprompt_heads,
                                cfg.vprompt_alpha))
    if cfg.linear_head:
        if parts.head is not None:
            raise ValueError("model.linear_head is a head, and another head is already on")
        parts.head = LinearHead(parts.dim, cfg.linear_head_classes)
    if cfg.prompt_ensemble:
        parts.templates = list(ENSEMBLE_TEMPLATES)
    if cfg.learnable_ctx:
        if parts.prompts is not None:
            raise ValueError("model.learnable_ctx replaces the text prompts, and another "
                             "prompt module is already on")
        length, phrase = cfg.learnable_ctx_length, cfg.learnable_ctx_init
        parts.prompts = lambda text: LearnableContext(text, length, phrase)


def _motionprompt_parts(cfg: ModelConfig, parts: _Parts) -> None:
    """MotionPrompt (motionprompt §3): MMB pool, MAP prompts, MCB cross-modal.

    The paper's "Baseline" (§4.1) is ``mmb`` + ``mmb_spatial_only`` (spatial stream only) with
    the hand-crafted ``prompt_template`` and no MCB. Config validation rejects
    s > T-1; a direct ``build_model`` call with fewer frames clamps s to T-1."""
    step = max(1, min(cfg.mmb_step, parts.num_frames - 1))
    if cfg.mmb:
        mmb = MotionModelingBlock(
            parts.dim, parts.num_frames, step, cfg.mmb_motion_layers,
            cfg.mmb_spatial_layers, cfg.mmb_heads, cfg.mmb_mlp_ratio, cfg.mmb_dropout,
            cfg.mmb_norm_first, cfg.mmb_pos_emb, motion=not cfg.mmb_spatial_only)
        parts.set_pool(MMBPool(mmb), "model.mmb")
    if cfg.map:
        if parts.prompts is not None:
            raise ValueError("model.map replaces the text prompts, and another prompt module "
                             "is already on")
        phrase, dim = map_init_phrase(cfg.map_length, cfg.map_init), parts.dim
        parts.prompts = lambda text: MotionAwarePrompts(
            text, cfg.map_length, phrase, dim, cfg.map_hidden, cfg.map_activation,
            cfg.map_zero_init, fallback_step=step)
    if cfg.mcb:
        if parts.cross_modal is not None:
            raise ValueError("model.mcb is the cross-modal stage, and another one is already on")
        parts.cross_modal = MCBStage(
            MultimodalCommunicationBlock(parts.dim, cfg.mcb_heads, cfg.mcb_prenorm),
            use_frames=cfg.mcb_video == "frames")


def _stdd_parts(cfg: ModelConfig, parts: _Parts) -> None:
    """STDD (stdd §3): space-time cross attention hooks, the Table 4 adaptation modes (prompt
    MLP message hooks), spatiotemporal prompt sets, frame-prompt alignment head (Eq. 8)."""
    if cfg.stca:
        stca = dict(
            window=(cfg.wsm_w1, cfg.wsm_w2), mask_ratio=cfg.wsm_ratio if cfg.wsm else 0.0,
            scales=parse_scales(cfg.mcm_scales) if cfg.mcm else (), gamma=cfg.mcm_gamma,
            mode=cfg.mcm_mode, shortcut=cfg.stca_shortcut, query=cfg.stca_query,
            train_phase=cfg.wsm_train_phase)
        for i in parse_block_spec(cfg.stca_blocks, parts.depth):
            parts.hook(i, "attention", SpaceTimeCrossAttention(**stca))
    if cfg.stdd_adaptation:
        full = cfg.stdd_adaptation == "full"
        parts.trainable_blocks = parts.depth if full else 0
        parts.train_visual_proj = full
        if cfg.stdd_adaptation == "prompt":
            for i in range(parts.depth):
                parts.hook(i, "message", STCAPrompt(parts.width, cfg.stdd_prompt_len,
                                                     cfg.stdd_prompt_hidden))
    if cfg.st_aug:
        if parts.prompts is not None:
            raise ValueError("model.st_aug replaces the text prompts, and another prompt "
                             "module is already on")
        sets = load_prompt_sets(cfg.align_prompt_file, cfg.align_prompt_sets)
        source, per_prompt = cfg.align_prompt_file, cfg.align
        parts.prompts = lambda text: PromptSets(text, sets, source, per_prompt=per_prompt)
    if cfg.align:
        if parts.head is not None:
            raise ValueError("model.align is a head, and another head is already on")
        parts.head = FramePromptAlignment()


def _omniclip_parts(cfg: ModelConfig, parts: _Parts) -> None:
    """OmniCLIP (omniclip §3): PTA adapter hooks, SPG pre-hook, temporal MHA refiner."""
    if not (cfg.pta or cfg.spg or cfg.omni_temporal):
        return
    first: list[nn.Module] = []  # pre hooks of block 0: TE (Eq. 1), then SPG on V^0 (§3.1)
    if cfg.omni_te:
        first.append(TemporalEncoding(parts.num_frames, parts.width, cfg.omni_te_std))
    if cfg.spg:
        spg = dict(width=parts.width, pool=cfg.spg_pool, projector=cfg.spg_projector,
                   hidden=cfg.spg_hidden)
        first.append(SelfPromptGenerator(**spg))
        if cfg.spg_per_layer:
            for i in range(1, parts.depth):
                parts.hook(i, "pre", SelfPromptGenerator(**spg, replace=True))
    if first:
        parts.hook(0, "pre", first[0] if len(first) == 1 else PreChain(*first))
    if cfg.pta:
        for i in parse_pta_blocks(cfg.pta_blocks, parts.depth, cfg.pta_blocks_depth):
            adapter = ParallelTemporalAdapter(
                parts.width, cfg.pta_ratio, cfg.pta_heads or parts.heads,
                cfg.pta_alpha_init, cfg.pta_zero_up)
            parts.hook(i, "adapter", adapter, adapter_mode=cfg.pta_mode)
    if cfg.omni_temporal:
        parts.refiners.append(OmniTemporal(parts.dim, cfg.omni_heads, cfg.omni_residual))
