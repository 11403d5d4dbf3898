"""The stage types the composer (``vidablate.model``) and the papers (``vidablate.modules``) share.

The forward pass is a fixed pipeline; a paper's ``build(cfg, parts)`` plugs its modules into the
slots of ``Parts``:

1. ``hooks``: per ViT block, the ``pre`` / ``message`` / ``attention`` / ``adapter`` hook points
   of ``vidablate.backbone.VideoBlock``;
2. ``inputs``: modules that read a batch input other than the video (IS-CLIP's IMU) into the
   ``StageContext``;
3. ``refiners``: ``(frames [B,T,D], ctx) -> frames``;
4. the pool: ``(frames, ctx) -> Pooled`` (one at most);
5. the text side: ``prompts`` (one at most) and ``text_refiners``;
6. the cross-modal stage (one at most) and the head (one at most);
7. ``losses``: extra loss terms ``(out) -> {name: value}``, weighted.

``Paper`` is a registry entry (``vidablate.modules.registry``): the paper's knob dataclass, its
validation, its build step, which stage each toggle claims, and facts the tests check the
implementation against (which toggles see frame order, how many attention calls its modules
add). This module imports nothing of the package.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .specs import VisionSpec

STAGE_LABELS = {"pool": "frame->video pool", "head": "head", "prompts": "text prompts",
                "cross_modal": "cross-modal stage", "templates": "hand-crafted template set"}
"""Stages that at most one toggle may claim, with the words error messages use."""


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
    extra: dict[str, Any] = field(default_factory=dict)
    """Values a new paper's stages pass on that have no field above."""


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
    frame_weights: torch.Tensor | None  # [B, N] weights of a learned pool (SGAM)
    ctx: StageContext = field(default_factory=StageContext)


@dataclass
class Parts:
    """The slots the papers' build steps fill; ``vidablate.model.build_model`` assembles them.

    ``dim`` is the joint embedding width D, ``width`` / ``depth`` / ``heads`` those of the visual
    transformer, ``num_frames`` T, ``spec`` the backbone's config."""

    dim: int
    width: int
    depth: int
    num_frames: int
    heads: int
    spec: VisionSpec | None = None
    hooks: dict[int, dict[str, Any]] = field(default_factory=dict)
    patches: str | None = None
    """Patch tokens a stage reads: ``projected`` (CLIP's ln_post and projection) or ``raw``
    (as the last block left them)."""
    raw_text: bool = False
    """Text features stay unnormalised (``encode_text``'s output) until the head."""
    teacher: bool = False
    """Build the frozen teacher copy of the tower (feature distillation)."""
    attached: dict[str, nn.Module | None] = field(default_factory=dict)
    """Modules registered on the model by name, before the stage lists (so their parameters
    keep these names in checkpoints, e.g. IS-CLIP's ``imu``/``sirm``/``sgam``)."""
    inputs: list[nn.Module] = field(default_factory=list)
    refiners: list[nn.Module] = field(default_factory=list)
    pool: nn.Module | None = None
    prompts: Callable[[Any], nn.Module] | None = None
    """Factory: the model's TextEncoder -> the prompt module."""
    templates: list[str] | None = None
    """Hand-crafted templates replacing ``model.prompt_template`` (a prompt ensemble)."""
    text_refiners: list[nn.Module] = field(default_factory=list)
    cross_modal: nn.Module | None = None
    head: nn.Module | None = None
    losses: list[nn.Module] = field(default_factory=list)
    """Loss terms: ``forward(out: VideoOutput) -> {name: value}`` with a ``weight`` attribute."""
    trainable_blocks: int | None = None
    """Overrides ``model.trainable_blocks`` (STDD adaptation modes)."""
    train_visual_proj: bool | None = None
    """Overrides ``model.train_visual_proj``."""

    def hook(self, block: int, kind: str, module: nn.Module, **extra: Any) -> None:
        """Attach ``module`` as the ``kind`` hook of ``block`` (one module per kind)."""
        slot = self.hooks.setdefault(block, {})
        if slot.get(kind) is not None:
            raise ValueError(f"block {block} already has a {kind!r} hook")
        slot[kind] = module
        slot.update(extra)

    def attach(self, name: str, module: nn.Module | None) -> None:
        """Register ``module`` (or None: the attribute reads None) as ``model.<name>``."""
        if self.attached.get(name) is not None:
            raise ValueError(f"a module named {name!r} is already attached")
        self.attached[name] = module

    def set_pool(self, pool: nn.Module, who: str) -> None:
        if self.pool is not None:
            raise ValueError(f"{who} is a pool, and another pool is already on")
        self.pool = pool

    def set_prompts(self, factory: Callable[[Any], nn.Module], who: str) -> None:
        if self.prompts is not None:
            raise ValueError(f"{who} replaces the text prompts, and another prompt module is "
                             "already on")
        self.prompts = factory

    def set_cross_modal(self, module: nn.Module, who: str) -> None:
        if self.cross_modal is not None:
            raise ValueError(f"{who} is the cross-modal stage, and another one is already on")
        self.cross_modal = module

    def set_head(self, module: nn.Module, who: str) -> None:
        if self.head is not None:
            raise ValueError(f"{who} is a head, and another head is already on")
        self.head = module


@dataclass
class ValidationContext:
    """What a paper's ``validate`` may read: the whole model config (its own knobs and the
    shared backbone knobs), the data config, the backbone's spec (None when unknown), which
    toggles are on per claimed stage, and the dataset's class names when they are known without
    reading files (the synthetic set)."""

    model: Any
    data: Any
    spec: VisionSpec | None
    claimed: dict[str, list[str]]
    class_names: list[str] | None = None

    def on(self, stage: str) -> list[str]:
        """The toggles that are on and claim ``stage``, in registry order."""
        return self.claimed.get(stage, [])


@dataclass(frozen=True)
class Paper:
    """One paper's entry in the registry (``vidablate.modules.registry``)."""

    name: str
    """Its short name, as the search spaces' ``paper:`` field spells it."""
    knobs: type
    """Dataclass of its config fields (flat keys of ``model.*``), each with a docstring."""
    build: Callable[[Any, Parts], None]
    """``build(model_cfg, parts)``: put the modules its toggles turn on into the slots."""
    validate: Callable[[ValidationContext], None] | None = None
    """Raise ``ConfigError`` naming the field; called before anything is built."""
    claims: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    """Toggle -> the stage(s) it occupies, e.g. sgam -> pool (``STAGE_LABELS`` stages are
    exclusive). Other names are facts other papers' validation reads: ``tower``, ``refiner``,
    ``text_refiner``, ``block_messages`` (per-block message tokens), ``per_video_text`` (the
    class text depends on the video)."""
    inputs: Callable[[Any], frozenset[str]] = lambda cfg: frozenset()
    """Batch inputs besides the video the configuration reads (e.g. ``{"imu"}``)."""
    temporal: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Test facts: label -> toggles with which the model must see frame order."""
    attention: Mapping[str, Any] = field(default_factory=dict)
    """Test facts: toggles that turn on every module of the paper that attends."""
    attention_calls: Callable[[VisionSpec], int] = lambda spec: 0
    """Test facts: attention calls those modules add to one training forward."""
    attention_types: tuple[type, ...] = ()
    """Attention modules of the paper other than ``nn.MultiheadAttention``."""


def claimed_stages(model_cfg: Any, papers: list[Paper]) -> dict[str, list[str]]:
    """Stage -> toggles that are on and claim it, over the given papers in order."""
    out: dict[str, list[str]] = {}
    for paper in papers:
        for toggle, stages in paper.claims.items():
            if getattr(model_cfg, toggle, False):
                for stage in (stages,) if isinstance(stages, str) else stages:
                    out.setdefault(stage, []).append(toggle)
    return out
