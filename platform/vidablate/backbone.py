"""open_clip backbone: frame encoder split into a frozen prefix and a trainable tail, a frozen
teacher tail for feature distillation, and a frozen text encoder with cached class features.

open_clip is pinned to ``<4``: its 3.x ``VisionTransformer`` exposes ``_embeds``/``_pool`` and a
``transformer.resblocks`` ModuleList, which we call and wrap rather than patch.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import open_clip
import torch
from torch import nn

_CONFIG_DIR = Path(__file__).parent / "model_configs"
_registered = False


class BackboneError(RuntimeError):
    """The backbone or its weights could not be loaded; the message says which and why."""


def register_model_configs() -> None:
    """Register the project's open_clip configs (``vidablate-tiny``) once per process."""
    global _registered
    if not _registered:
        open_clip.add_model_config(_CONFIG_DIR)
        _registered = True


def load_clip(name: str, pretrained: str | None = None) -> tuple[nn.Module, object]:
    """Create an open_clip CLIP and its tokenizer.

    ``pretrained`` is an open_clip tag (``openai``), a local weights file, ``synthetic`` (only
    for ``vidablate-tiny``: the cached contrastively pretrained weights of DESIGN §4, built on
    first use by ``vidablate.pretrain.ensure_tiny_clip``), or None for random weights.
    Failures raise BackboneError naming the model and weights.
    """
    register_model_configs()
    if name not in open_clip.list_models():
        raise BackboneError(
            f"model.backbone={name!r} is not an open_clip model; e.g. ViT-B-16 or vidablate-tiny"
        )
    if pretrained == "synthetic":
        if name != "vidablate-tiny":
            raise BackboneError(
                f"model.pretrained='synthetic' exists only for model.backbone='vidablate-tiny', "
                f"not {name!r}; use an open_clip tag (e.g. openai) or a weights file"
            )
        from .pretrain import ensure_tiny_clip  # deferred: pretrain imports this module

        pretrained = str(ensure_tiny_clip())
    if pretrained and os.sep in pretrained and not Path(pretrained).is_file():
        raise BackboneError(f"model.pretrained={pretrained!r}: no such weights file")
    try:
        model = open_clip.create_model(name, pretrained=pretrained or None)
    except Exception as err:  # open_clip raises RuntimeError/HF errors/OSError
        raise BackboneError(
            f"could not load weights model.pretrained={pretrained!r} for model.backbone={name!r}: "
            f"{type(err).__name__}: {err}. Offline machines need a local weights file."
        ) from err
    return model, open_clip.get_tokenizer(name)


def embed_dim_of(name: str) -> int | None:
    """The joint embedding width D of an open_clip model config (None if unknown)."""
    register_model_configs()
    cfg = open_clip.get_model_config(name)
    return int(cfg["embed_dim"]) if cfg and "embed_dim" in cfg else None


class _Tail(nn.Module):
    """The last blocks of a ViT plus its pooling head (ln_post, projection)."""

    def __init__(self, visual: nn.Module, blocks: nn.ModuleList) -> None:
        super().__init__()
        self.blocks = blocks
        self.visual = visual  # supplies _pool, ln_post and proj

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            tokens = block(tokens)
        pooled, _ = self.visual._pool(tokens)
        if self.visual.proj is not None:
            pooled = pooled @ self.visual.proj
        return pooled


class FrameEncoder(nn.Module):
    """CLIP image tower applied per frame, split at ``len(blocks) - trainable_blocks``.

    The prefix (patch embedding + first blocks) is frozen and runs without autograd; the tail is
    fine-tuned (isclip §II-B: last two blocks and the final projection). The teacher of feature
    distillation is a frozen copy of the tail only, fed with the shared prefix output, so the
    frozen prefix is computed once for student and teacher.
    """

    def __init__(
        self,
        visual: nn.Module,
        trainable_blocks: int = 2,
        train_proj: bool = True,
        teacher: bool = False,
    ) -> None:
        super().__init__()
        blocks = visual.transformer.resblocks
        depth = len(blocks)
        self.split = max(depth - trainable_blocks, 0)
        self.full_finetune = trainable_blocks >= depth
        self.visual = visual
        for p in visual.parameters():
            p.requires_grad_(False)
        for block in blocks[self.split:]:
            for p in block.parameters():
                p.requires_grad_(True)
        if self.full_finetune:
            for p in visual.parameters():
                p.requires_grad_(True)
        if visual.proj is not None:
            visual.proj.requires_grad_(train_proj)
        self.tail = _Tail(visual, nn.ModuleList(blocks[self.split:]))
        self.teacher: _Tail | None = None
        self.teacher_stem: nn.Module | None = None
        if teacher:
            frozen = copy.deepcopy(visual)
            frozen.requires_grad_(False)
            frozen.eval()
            self.teacher = _Tail(frozen, nn.ModuleList(frozen.transformer.resblocks[self.split:]))
            if self.full_finetune:
                self.teacher_stem = frozen
            else:
                frozen.transformer.resblocks = nn.ModuleList()  # only the tail is kept
                for name in ("conv1", "ln_pre"):
                    setattr(frozen, name, nn.Identity())

    @property
    def embed_dim(self) -> int:
        return int(self.visual.proj.shape[1]) if self.visual.proj is not None else int(
            self.visual.transformer.width)

    def prefix(self, images: torch.Tensor) -> torch.Tensor:
        """Tokens after the frozen blocks; [B*, L, W]."""
        with torch.set_grad_enabled(self.full_finetune and torch.is_grad_enabled()):
            tokens = self.visual._embeds(images)
            for block in self.visual.transformer.resblocks[: self.split]:
                tokens = block(tokens)
        return tokens

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-image features [B*, D] of the student and (if built) the frozen teacher."""
        tokens = self.prefix(images)
        student = self.tail(tokens)
        teacher = None
        if self.teacher is not None:
            with torch.no_grad():
                if self.teacher_stem is not None:
                    teacher = self.teacher(self.teacher_stem._embeds(images))
                else:
                    teacher = self.teacher(tokens)
        return student, teacher

    def train(self, mode: bool = True) -> FrameEncoder:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self


class TextEncoder(nn.Module):
    """Frozen CLIP text tower (isclip §II-B: "all parameters frozen") with cached class features."""

    def __init__(self, clip: nn.Module, tokenizer: object, template: str) -> None:
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.template = template
        for name, p in clip.named_parameters():
            if not name.startswith("visual."):
                p.requires_grad_(False)
        self._cache: dict[tuple[str, ...], torch.Tensor] = {}

    @torch.no_grad()
    def forward(self, class_names: list[str] | tuple[str, ...]) -> torch.Tensor:
        """L2-normalised text features [C, D] for the given class names."""
        key = tuple(class_names)
        device = next(self.clip.token_embedding.parameters()).device
        cached = self._cache.get(key)
        if cached is None or cached.device != device:
            tokens = self.tokenizer([self.template.format(n) for n in key]).to(device)
            feats = self.clip.encode_text(tokens).float()
            cached = feats / feats.norm(dim=-1, keepdim=True)
            self._cache[key] = cached
        return cached
