"""open_clip backbone: frame encoder split into a frozen prefix and a trainable tail, a frozen
teacher tail for feature distillation, and a frozen text encoder with cached class features.

open_clip is pinned to ``<4``: its 3.x ``VisionTransformer`` exposes ``_embeds``/``_pool`` and a
``transformer.resblocks`` ModuleList, which we call and wrap rather than patch.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.utils.checkpoint
from torch import nn

from .errors import BackboneError
from .pretrain import ensure_tiny_clip
from .specs import register_model_configs


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
            f"model.backbone={name!r} is not an open_clip model; e.g. ViT-B-16-quickgelu or vidablate-tiny"
        )
    if pretrained == "synthetic":
        if name != "vidablate-tiny":
            raise BackboneError(
                f"model.pretrained='synthetic' exists only for model.backbone='vidablate-tiny', "
                f"not {name!r}; use an open_clip tag (e.g. openai) or a weights file"
            )
        pretrained = str(ensure_tiny_clip())
    if pretrained and os.sep in pretrained and not Path(pretrained).is_file():
        raise BackboneError(f"model.pretrained={pretrained!r}: no such weights file")
    if pretrained and not Path(pretrained).is_file():
        check_activation(name, pretrained)
    try:
        with _quiet_random_init(name, enabled=not pretrained):
            model = open_clip.create_model(name, pretrained=pretrained or None)
    except Exception as err:  # open_clip raises RuntimeError/HF errors/OSError
        raise BackboneError(
            f"could not load weights model.pretrained={pretrained!r} for model.backbone={name!r}: "
            f"{type(err).__name__}: {err}. Offline machines need a local weights file."
        ) from err
    return model, _tokenizer(name)


@functools.cache
def _tokenizer(name: str) -> object:
    """open_clip's tokenizer of ``name``, made once per process (reading its BPE vocabulary
    takes ~0.1 s, and a sweep's planning builds one model per distinct configuration)."""
    return open_clip.get_tokenizer(name)


class _DropRandomInitNotice(logging.Filter):
    """open_clip logs "No pretrained weights loaded" on the root logger when weights are None;
    here random weights are the config's explicit choice (and the report says so)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.text = f"No pretrained weights loaded for model '{name}'"

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.text)


@contextlib.contextmanager
def _quiet_random_init(name: str, enabled: bool) -> Iterator[None]:
    root = logging.getLogger()
    notice = _DropRandomInitNotice(name)
    if enabled:
        root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


def check_activation(name: str, tag: str) -> None:
    """Refuse an open_clip weight tag trained with another activation than the config builds
    (QuickGELU vs nn.GELU; open_clip itself only warns)."""
    tagged = open_clip.get_pretrained_cfg(name, tag) or {}
    if not tagged:
        return
    needs = bool(tagged.get("quick_gelu", False))
    builds = bool((open_clip.get_model_config(name) or {}).get("quick_gelu", False))
    if needs != builds:
        want = name + "-quickgelu" if needs else name.removesuffix("-quickgelu")
        raise BackboneError(
            f"model.pretrained={tag!r} weights of model.backbone={name!r} were trained with "
            f"{'QuickGELU' if needs else 'nn.GELU'}, but the config builds "
            f"{'QuickGELU' if builds else 'nn.GELU'}; use model.backbone={want!r}")


class VideoBlock(nn.Module):
    """One pretrained ViT block run on the T frames of each clip, with the papers' hook points.

    Tokens are ``[B*T, L, W]`` with the frames of a clip adjacent (clip-major); ``num_frames`` is
    T and ``grid`` the patch grid (gh, gw) so a hook can find the spatial layout
    ``[CLS, gh*gw patches, extra tokens...]``. Every hook is optional and owned by one paper's
    module (``vidablate.modules.*``); with no hooks this is exactly the pretrained block.

    - ``pre(x, T, grid) -> x'``: rewrites the sequence before the block and may append tokens
      that stay for later blocks (OmniCLIP SPG).
    - ``message(x, T, grid) -> m [B*T, M, W]``: tokens appended for this block's attention only
      and dropped before the MLP (X-CLIP cross-frame communication).
    - ``attention(block, y, T, grid) -> a``: replaces the block's self-attention on the
      LayerNormed sequence ``y`` (STDD space-time cross attention, which reuses ``block.attn``).
      A hook with ``needs_input = True`` also gets the sequence before ``ln_1`` as ``x=``; a
      hook may return ``(a, a_mlp)``: the residual stream becomes ``x + a`` while the MLP reads
      ``LN(x + a_mlp)`` (stdd Eq. 2: MLP of the spatial path, short-cut with the padded one).
    - ``adapter(x, T, grid) -> delta``: a residual branch (OmniCLIP PTA) placed by
      ``adapter_mode``: ``parallel`` (input of the block -> added to its output),
      ``cascade`` (output of the block -> added to it), ``attn_parallel`` (input of the block ->
      added after the attention, before the MLP).
    """

    ADAPTER_MODES = ("parallel", "cascade", "attn_parallel")

    def __init__(
        self,
        block: nn.Module,
        pre: nn.Module | None = None,
        message: nn.Module | None = None,
        attention: nn.Module | None = None,
        adapter: nn.Module | None = None,
        adapter_mode: str = "parallel",
    ) -> None:
        super().__init__()
        if adapter_mode not in self.ADAPTER_MODES:
            raise ValueError(f"adapter_mode must be one of {self.ADAPTER_MODES}, got {adapter_mode!r}")
        self.block = block
        self.pre, self.message, self.attention, self.adapter = pre, message, attention, adapter
        self.adapter_mode = adapter_mode

    @property
    def hooked(self) -> bool:
        return any(h is not None for h in (self.pre, self.message, self.attention, self.adapter))

    def forward(self, x: torch.Tensor, num_frames: int, grid: tuple[int, int]) -> torch.Tensor:
        if not self.hooked:
            return self.block(x)
        blk = self.block
        if self.pre is not None:
            x = self.pre(x, num_frames, grid)
        n = x.shape[1]
        h = x if self.message is None else torch.cat([x, self.message(x, num_frames, grid)], 1)
        y = blk.ln_1(h)
        a_mlp = None
        if self.attention is not None:
            extra = {"x": h} if getattr(self.attention, "needs_input", False) else {}
            a = self.attention(blk, y, num_frames, grid, **extra)
            if isinstance(a, tuple):
                a, a_mlp = a
        else:
            a = blk.attn(y, y, y, need_weights=False)[0]
        out = x + blk.ls_1(a[:, :n])
        mlp_in = out if a_mlp is None else x + blk.ls_1(a_mlp[:, :n])
        if self.adapter is not None and self.adapter_mode == "attn_parallel":
            delta = self.adapter(x, num_frames, grid)
            out = out + delta
            mlp_in = out if a_mlp is None else mlp_in + delta
        out = out + blk.ls_2(blk.mlp(blk.ln_2(mlp_in)))
        if self.adapter is not None and self.adapter_mode == "parallel":
            out = out + self.adapter(x, num_frames, grid)
        elif self.adapter is not None and self.adapter_mode == "cascade":
            out = out + self.adapter(out, num_frames, grid)
        return out


@dataclass
class VisualOutput:
    """What the video tower produces for a batch of clips."""

    frames: torch.Tensor
    """[B, T, D] per-frame embeddings (CLS after ln_post and the projection)."""
    patches: torch.Tensor | None
    """Patch tokens when requested: [B, T, P, D] after ln_post and the projection
    (``return_patches="projected"``), or [B, T, P, W] as the last block left them
    (``"raw"``: the official X-CLIP feeds these to its own LayerNorm and projection)."""
    teacher: torch.Tensor | None
    """[B, T, D] frame embeddings of the frozen teacher (feature distillation)."""


class FrameEncoder(nn.Module):
    """CLIP image tower run over the frames of a clip, split into a frozen prefix and a tail.

    ``hooks`` maps a block index to the keyword arguments of its ``VideoBlock`` (the papers'
    modules). The prefix is every block before both the first hooked block and the first
    fine-tuned block (``depth - trainable_blocks``, isclip §II-B: the last two blocks and the
    final projection); it holds no trainable parameter and runs without autograd, so its
    output is what a feature cache may store. The teacher of feature distillation is a frozen,
    unhooked copy of the tail fed with the shared prefix output, i.e. the original CLIP. It runs
    in training mode only (evaluation never pays for it).
    """

    def __init__(
        self,
        visual: nn.Module,
        trainable_blocks: int = 2,
        train_proj: bool = True,
        teacher: bool = False,
        hooks: dict[int, dict[str, Any]] | None = None,
        return_patches: bool | str = False,
    ) -> None:
        super().__init__()
        if return_patches not in (False, True, "projected", "raw"):
            raise ValueError(f"return_patches must be False, 'projected' or 'raw', got "
                             f"{return_patches!r}")
        if getattr(visual, "attn_pool", None) is not None or visual.pool_type != "tok" \
                or visual.final_ln_after_pool:
            raise BackboneError("FrameEncoder needs a CLS-token ViT (open_clip pool_type='tok', "
                                "no attentional pooling), like ViT-B-16")
        blocks = visual.transformer.resblocks
        depth = len(blocks)
        hooks = dict(hooks or {})
        bad = [i for i in hooks if not 0 <= i < depth]
        if bad:
            raise ValueError(f"hooks on blocks {bad}, but the tower has blocks 0..{depth - 1}")
        self.tune_from = max(depth - trainable_blocks, 0)
        first_hooked = min((i for i, kw in hooks.items() if any(kw.values())), default=depth)
        self.split = min(self.tune_from, first_hooked)
        self.full_finetune = trainable_blocks >= depth
        self.return_patches: str | None = (
            "projected" if return_patches is True else return_patches or None)
        self.checkpoint_blocks = False
        self.visual = visual
        for p in visual.parameters():
            p.requires_grad_(False)
        for block in blocks[self.tune_from:]:
            for p in block.parameters():
                p.requires_grad_(True)
        if self.full_finetune:
            for p in visual.parameters():
                p.requires_grad_(True)
        if visual.proj is not None:
            visual.proj.requires_grad_(train_proj)
        self.blocks = nn.ModuleList(
            VideoBlock(blocks[i], **hooks.get(i, {})) for i in range(self.split, depth))
        self.teacher: nn.ModuleList | None = None
        self.teacher_visual: nn.Module | None = None
        if teacher:
            frozen = copy.deepcopy(visual)
            frozen.requires_grad_(False)
            frozen.eval()
            self.teacher = nn.ModuleList(frozen.transformer.resblocks[self.split:])
            if not self.full_finetune:
                frozen.transformer.resblocks = nn.ModuleList()  # only the tail is kept
                for name in ("conv1", "ln_pre"):
                    setattr(frozen, name, nn.Identity())
            self.teacher_visual = frozen

    def set_activation_checkpointing(self, on: bool) -> None:
        """Recompute the trainable tail blocks in backward (``trainer.activation_checkpointing``):
        their activations are not kept, at the cost of a second forward of those blocks."""
        self.checkpoint_blocks = bool(on)

    @property
    def embed_dim(self) -> int:
        return int(self.visual.proj.shape[1]) if self.visual.proj is not None else int(
            self.visual.transformer.width)

    @property
    def grid(self) -> tuple[int, int]:
        gh, gw = self.visual.grid_size
        return int(gh), int(gw)

    def prefix(self, images: torch.Tensor) -> torch.Tensor:
        """Tokens after the frozen prefix blocks; images [B*T, 3, H, W] -> [B*T, L, W]."""
        with torch.set_grad_enabled(self.full_finetune and torch.is_grad_enabled()):
            tokens = self.visual._embeds(images)
            for block in self.visual.transformer.resblocks[: self.split]:
                tokens = block(tokens)
        return tokens

    def _head(self, visual: nn.Module, tokens: torch.Tensor, patches: str | None):
        num_patches = self.grid[0] * self.grid[1]
        if patches == "raw":
            x = visual.ln_post(tokens[:, 0])
            cls, tok = (x @ visual.proj if visual.proj is not None else x), \
                tokens[:, 1:1 + num_patches]
            return cls, tok
        x = visual.ln_post(tokens[:, : 1 + num_patches])
        cls, tok = x[:, 0], (x[:, 1:] if patches else None)
        if visual.proj is not None:
            cls = cls @ visual.proj
            tok = tok @ visual.proj if tok is not None else None
        return cls, tok

    def forward(self, video: torch.Tensor | None, tokens: torch.Tensor | None = None
                ) -> VisualOutput:
        """video [B, T, 3, H, W] -> VisualOutput; or, from a feature cache, the prefix's
        output ``tokens`` [B, T, L, W] (``vidablate.data.cache``) in place of the video."""
        if tokens is not None:
            b, t = tokens.shape[:2]
            tokens = tokens.flatten(0, 1).to(self.visual.class_embedding.dtype)
        else:
            if video is None:
                raise ValueError("FrameEncoder needs video or cached tokens")
            b, t = video.shape[:2]
            tokens = self.prefix(video.flatten(0, 1))
        x = tokens
        recompute = self.checkpoint_blocks and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            if recompute and any(p.requires_grad for p in block.parameters()):
                x = torch.utils.checkpoint.checkpoint(block, x, t, self.grid,
                                                      use_reentrant=False)
            else:
                x = block(x, t, self.grid)
        cls, patches = self._head(self.visual, x, self.return_patches)
        teacher = None
        if self.teacher is not None and self.training:  # only the training loss reads it
            with torch.no_grad():
                y = self.teacher_visual._embeds(video.flatten(0, 1)) if self.full_finetune \
                    else tokens
                for block in self.teacher:
                    y = block(y)
                teacher = self._head(self.teacher_visual, y, None)[0].reshape(b, t, -1)
        return VisualOutput(
            frames=cls.reshape(b, t, -1),
            patches=patches.reshape(b, t, *patches.shape[1:]) if patches is not None else None,
            teacher=teacher,
        )

    def train(self, mode: bool = True) -> FrameEncoder:
        super().train(mode)
        for frozen in (self.teacher_visual, self.teacher):
            if frozen is not None:
                frozen.eval()
        return self


class TextEncoder(nn.Module):
    """CLIP text tower with cached class features, prompt ensembling and learnable context.

    Frozen by default (isclip §II-B "all parameters frozen"; X-CLIP freezes it too), in which
    case class features are computed once per class list and cached. ``raw`` keeps the tower's
    unnormalised output (the heads normalise before the cosine). ``templates`` holds one
    or more hand-crafted prompts with ``{}`` for the class name; several are ensembled by
    averaging their normalised features (X-CLIP Table 9 "ensemble"). ``encode_context`` runs
    the tower on learnable context vectors in place of the first words of the prompt (CoOp
    style; motionprompt MAP, X-CLIP Table 9 "learnable vectors"). ``trim`` runs the tower
    only over the positions up to the batch's last end-of-text token: CLIP's text tower is
    causal and reads its feature there (CLIP, Radford et al. 2021, §2.4), so later positions
    cannot change it; off reproduces open_clip's full 77-position run.
    """

    def __init__(
        self,
        clip: nn.Module,
        tokenizer: object,
        template: str | list[str] | tuple[str, ...],
        trainable: bool = False,
        raw: bool = False,
        trim: bool = True,
    ) -> None:
        super().__init__()
        self.raw = raw
        self.trim = trim
        self.clip = clip
        self.tokenizer = tokenizer
        self.templates = [template] if isinstance(template, str) else list(template)
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError(f"every prompt template needs '{{}}' for the class name: "
                             f"{self.templates}")
        self.trainable = trainable
        for name, p in clip.named_parameters():
            if not name.startswith("visual."):
                p.requires_grad_(trainable)
        self._cache: dict[tuple[str, ...], torch.Tensor] = {}

    @property
    def template(self) -> str:
        return self.templates[0]

    @property
    def width(self) -> int:
        return int(self.clip.token_embedding.weight.shape[1])

    @property
    def device(self) -> torch.device:
        return self.clip.token_embedding.weight.device

    def text_parameters(self) -> list[nn.Parameter]:
        """The text tower's own parameters (trainable only when ``trainable``)."""
        return [p for n, p in self.clip.named_parameters() if not n.startswith("visual.")]

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.device)

    def encode_tokens(self, tokens: torch.Tensor, embeds: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """Unnormalised features [N, D] of token ids [N, L], optionally with token embeddings
        ``embeds`` [N, L, W] replacing the looked-up ones (gradient flows into ``embeds``)."""
        clip = self.clip
        if embeds is None:
            embeds = clip.token_embedding(tokens)
        cast = clip.transformer.get_cast_dtype()
        length = self.used_length(tokens)
        tokens, embeds = tokens[:, :length], embeds[:, :length]
        mask = clip.attn_mask[:length, :length] if clip.attn_mask is not None else None
        x = embeds.to(cast) + clip.positional_embedding[:length].to(cast)
        x = clip.ln_final(clip.transformer(x, attn_mask=mask))
        x = open_clip.transformer.text_global_pool(
            x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
        if clip.text_projection is not None:
            x = clip.text_projection(x) if isinstance(clip.text_projection, nn.Linear) \
                else x @ clip.text_projection
        return x.float()

    def used_length(self, tokens: torch.Tensor) -> int:
        """The token positions the pooled feature can depend on: up to the last end-of-text
        token of the batch when ``trim`` is on, the tower is causal (CLIP's ``attn_mask``) and
        pools at the end-of-text token (``argmax`` / ``eos``); all positions otherwise."""
        clip, full = self.clip, tokens.shape[1]
        if not self.trim or clip.attn_mask is None or clip.text_pool_type not in ("argmax",
                                                                                  "eos"):
            return full
        if clip.text_pool_type == "argmax":
            last = tokens.argmax(dim=-1)
        else:
            last = (tokens == clip.text_eos_id).int().argmax(dim=-1)
        return min(full, int(last.max()) + 1) if tokens.numel() else full

    def _encode(self, names: tuple[str, ...]) -> torch.Tensor:
        feats = []
        for template in self.templates:
            f = self.encode_tokens(self.tokenize([template.format(n) for n in names]))
            if self.raw and len(self.templates) == 1:
                return f
            feats.append(f / f.norm(dim=-1, keepdim=True))
        mean = torch.stack(feats).mean(dim=0)
        return mean / mean.norm(dim=-1, keepdim=True)

    def forward(self, class_names: list[str] | tuple[str, ...]) -> torch.Tensor:
        """Text features [C, D]: L2-normalised and averaged over the templates, or with
        ``raw`` and one template the text tower's output as it is (``encode_text``, the input
        X-CLIP's video prompt and MotionPrompt's MCB take); an ensemble stays the normalised
        mean."""
        key = tuple(class_names)
        if self.trainable and torch.is_grad_enabled():
            return self._encode(key)
        cached = self._cache.get(key)
        if cached is None or cached.device != self.device or self.trainable:
            with torch.no_grad():
                cached = self._encode(key)
            if not self.trainable:
                self._cache[key] = cached
        return cached

    def context_init(self, phrase: str, length: int) -> torch.Tensor:
        """Token embeddings [length, W] of the first ``length`` tokens of ``phrase`` (after SOS),
        to initialise learnable context from words (motionprompt §3.3)."""
        tokens = self.tokenize([phrase])
        with torch.no_grad():
            emb = self.clip.token_embedding(tokens)[0, 1:1 + length].clone()
        return emb

    def encode_context(self, context: torch.Tensor, class_names: list[str] | tuple[str, ...]
                       ) -> torch.Tensor:
        """Features for "<ctx_1> ... <ctx_H> <class>." with learnable context.

        context [H, W] (shared) or [B, H, W] (one per video) -> [C, D] or [B, C, D], L2-normalised
        unless ``raw``.
        The H placeholder tokens sit right after SOS, as in CoOp.
        """
        per_video = context.dim() == 3
        ctx = context if per_video else context.unsqueeze(0)
        n, h = ctx.shape[:2]
        c = len(class_names)
        tokens = self.tokenize([" ".join(["X"] * h) + f" {name}." for name in class_names])
        with torch.no_grad():
            base = self.clip.token_embedding(tokens)  # [C, L, W]
        embeds = torch.cat([
            base[None, :, :1].expand(n, c, 1, -1),
            ctx[:, None].expand(n, c, h, -1).to(base.dtype),
            base[None, :, 1 + h:].expand(n, c, -1, -1)], dim=2)
        feats = self.encode_tokens(tokens.repeat(n, 1), embeds.flatten(0, 1)).view(n, c, -1)
        if not self.raw:
            feats = feats / feats.norm(dim=-1, keepdim=True)
        return feats if per_video else feats[0]
