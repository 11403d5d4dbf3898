"""VideoCLIP: the one model that carries every module as a toggle, and its composer.

``build_model`` and the papers' build steps read a ModelConfig; modules get explicit kwargs.

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
per-frame features, motion cue). Each paper fills the stages in its ``build(cfg, parts)``
(``vidablate.stages.Parts``); ``build_model`` runs the registry's papers in order and assembles
the result. The frozen/trainable boundary is explicit: ``frozen_parts`` names what never trains
for the built configuration, and ``param_groups`` what does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import FrameEncoder, TextEncoder, load_clip
from .config import ModelConfig
from .modules import registry
from .specs import vision_spec
from .stages import Parts, Pooled, StageContext, VideoOutput

__all__ = ["CosineHead", "MeanPool", "Pooled", "StageContext", "TemplatePrompts", "VideoCLIP",
           "VideoOutput", "build_model"]


class MeanPool(nn.Module):
    """CLIP-Mean: the average of the frame features (isclip §II-A; xclip §4.5 "CLIP-Mean";
    motionprompt §4.2 "Mean Pooling")."""

    def forward(self, frames: torch.Tensor, ctx: StageContext) -> Pooled:
        return Pooled(frames.mean(dim=1))


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
        *,
        attached: dict[str, nn.Module | None] | None = None,
        inputs: list[nn.Module] | None = None,
        refiners: list[nn.Module] | None = None,
        pool: nn.Module | None = None,
        prompts: nn.Module | None = None,
        text_refiners: list[nn.Module] | None = None,
        cross_modal: nn.Module | None = None,
        head: nn.Module | None = None,
        losses: list[nn.Module] | None = None,
        train_logit_scale: bool = False,
    ) -> None:
        """The stages as ``vidablate.stages.Parts`` holds them; ``attached`` modules become
        attributes (``model.imu``) registered first, so their parameters keep those names."""
        super().__init__()
        self.frame_encoder = frames
        self.text = text
        scale = logit_scale.detach().clone().float()
        if train_logit_scale:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)
        for name, module in (attached or {}).items():
            setattr(self, name, module)
        self.inputs = nn.ModuleList(inputs or [])
        self.refiners = nn.ModuleList(refiners or [])
        self.pool = pool or MeanPool()
        self.prompts = prompts or TemplatePrompts(text)
        self.text_refiners = nn.ModuleList(text_refiners or [])
        self.cross_modal = cross_modal
        self.head = head or CosineHead()
        self.losses = nn.ModuleList(losses or [])

    def encode_video(self, video: torch.Tensor | None, imu: torch.Tensor | None = None,
                     tokens: torch.Tensor | None = None) -> VideoOutput:
        """video [B, N, 3, H, W] (or the frozen prefix's cached ``tokens`` [B, N, L, W]),
        imu [B, 6, L] -> VideoOutput (stages 1-3)."""
        vis = self.frame_encoder(video, tokens=tokens)
        ctx = StageContext(patches=vis.patches)
        for stage in self.inputs:
            stage(ctx, imu=imu)
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
        """L = L_CE + the weighted loss terms of the papers (isclip Eq. 5: + w * L_kd) + module
        terms in ``ctx.aux``; returns the parts and the total."""
        parts = {"ce": F.cross_entropy(logits, target, label_smoothing=label_smoothing)}
        total = parts["ce"]
        for term in self.losses:
            for name, value in term(out).items():
                parts[name] = value
                total = total + term.weight * value
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
    """The composer: each registered paper puts its modules into the stage slots (``Parts``),
    then the tower, the text encoder and the model are assembled from them."""
    clip, tokenizer = load_clip(cfg.backbone, cfg.pretrained)
    depth = len(clip.visual.transformer.resblocks)
    width = int(clip.visual.transformer.width)
    dim = int(clip.visual.proj.shape[1]) if clip.visual.proj is not None else width
    parts = Parts(dim=dim, width=width, depth=depth, num_frames=num_frames,
                  heads=int(clip.visual.transformer.resblocks[0].attn.num_heads),
                  spec=vision_spec(cfg.backbone))
    for paper in registry.papers():
        paper.build(cfg, parts)
    frames = FrameEncoder(
        clip.visual,
        trainable_blocks=cfg.trainable_blocks if parts.trainable_blocks is None
        else parts.trainable_blocks,
        train_proj=cfg.train_visual_proj if parts.train_visual_proj is None
        else parts.train_visual_proj,
        teacher=parts.teacher,
        hooks=parts.hooks,
        return_patches=parts.patches or False,
    )
    text = TextEncoder(clip, tokenizer, parts.templates or cfg.prompt_template,
                       trainable=cfg.train_text, raw=parts.raw_text, trim=cfg.trim_text)
    scale = clip.logit_scale if not cfg.temperature else \
        torch.tensor(math.log(1.0 / cfg.temperature))
    return VideoCLIP(
        frames, text, scale, attached=parts.attached, inputs=parts.inputs,
        refiners=parts.refiners, pool=parts.pool,
        prompts=parts.prompts(text) if parts.prompts is not None else None,
        text_refiners=parts.text_refiners, cross_modal=parts.cross_modal, head=parts.head,
        losses=parts.losses,
    )
