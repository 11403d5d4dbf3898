"""X-CLIP (Ni et al., "Expanding Language-Image Pretrained Models for General Video
Recognition", ECCV 2022): cross-frame communication (CCT, §3.2 Eq. 7-9), the multi-frame
integration transformer (MIT, §3.2 Eq. 6), the video-specific prompt (§3.3 Eq. 10), and the
ablation baselines of §4.5: a linear head without text (Table 8), prompt ensembling and
learnable context vectors (Table 9).

Facts taken from the official code (microsoft/VideoX, X-CLIP/models/) are marked "official".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..specs import parse_block_spec
from ..stages import Paper, Parts, ValidationContext

ENSEMBLE_TEMPLATES: tuple[str, ...] = (
    "a photo of action {}", "a picture of action {}", "Human action of {}", "{}, an action",
    "{} this is an action", "{}, a video of action", "Playing action of {}", "{}",
    "Playing a kind of action, {}", "Doing a kind of action, {}", "Look, the human is {}",
    "Can you recognize the action of {}?", "Video classification of {}", "A video of {}",
    "The man is {}", "The woman is {}",
)
"""The 16 hand-crafted templates of X-CLIP Table 9 "Ensemble" ("prompt ensembling [36] with 16
handcraft templates", §4.5). The paper does not list them; these are the 16 action templates of
ActionCLIP [48] (its ``text_aug`` list), the 16-template video set X-CLIP compares against."""


def auto_heads(dim: int, heads: int = 0) -> int:
    """``heads`` if set, else ``dim // 64`` as in the official MIT and prompt generator
    (8 heads for D=512), at least 1."""
    if heads:
        return heads
    h = max(dim // 64, 1)
    return h if dim % h == 0 else 1


def _trunc_normal_init(module: nn.Module) -> None:
    """Official init of MIT and the prompt generator: Linear ~ trunc_normal(std=0.02), bias 0,
    LayerNorm weight 1, bias 0."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), the activation of CLIP and of the official X-CLIP modules."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def _mlp(dim: int, ratio: int = 4) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim * ratio), QuickGELU(), nn.Linear(dim * ratio, dim))


# --------------------------------------------------------------------------- CCT (§3.2)


class CrossFrameMessage(nn.Module):
    """Message tokens of one CCT block (xclip §3.2, Eq. 7), the ``message`` hook of a block.

    m_t = Linear(z_{t,0}) from each frame's current [class] token (re-derived in every block,
    official), then cross-frame fusion attention over the T message tokens of a clip:
    M^ = M + CFA(LN(M)). The block appends m^_t to frame t for its own (pretrained, intra-frame
    diffusion) attention and drops it before the MLP (Eq. 8-9; done by ``VideoBlock``).
    CFA has no temporal position encoding (Eq. 7), so CCT is equivariant to frame order: the
    frame features of a reversed clip are the reversed frame features. Randomly initialised
    (§3.2 "Initialization"); the official code keeps PyTorch's default init here.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width={width} is not divisible by heads={heads}")
        self.fc = nn.Linear(width, width)
        self.ln = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, x: torch.Tensor, num_frames: int, grid: tuple[int, int]) -> torch.Tensor:
        """x [B*T, L, W] -> message tokens [B*T, 1, W]."""
        bt, _, w = x.shape
        m = self.fc(x[:, 0]).view(bt // num_frames, num_frames, w)
        y = self.ln(m)
        m = m + self.attn(y, y, y, need_weights=False)[0]
        return m.reshape(bt, 1, w)


# --------------------------------------------------------------------------- MIT (§3.2)


class _PreLNBlock(nn.Module):
    """Standard pre-LN transformer block (MHSA + FFN, xclip §3.2: "standard multi-head
    self-attention and feed-forward networks [46]")."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = _mlp(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class MultiFrameIntegration(nn.Module):
    """MIT as a frame refiner (xclip Eq. 6): H' = MIT(H + e^temp) + H.

    The default mean pool then gives v = AvgPool(H') as in Eq. 6 (the residual to the input
    frames is the official code's); a learned pool (IS-CLIP SGAM) pools H' instead. e^temp is a
    learnable absolute embedding, one per frame position (trunc-normal std 0.02, official);
    ``depth`` layers (§4.1: "a simple 1-layer multi-frame integration transformer").
    """

    def __init__(self, dim: int, num_frames: int, depth: int = 1, heads: int = 0) -> None:
        super().__init__()
        heads = auto_heads(dim, heads)
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.num_frames = num_frames
        self.pos = nn.Parameter(torch.empty(1, num_frames, dim))
        self.blocks = nn.ModuleList(_PreLNBlock(dim, heads) for _ in range(depth))
        self.apply(_trunc_normal_init)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, frames: torch.Tensor, ctx: object = None) -> torch.Tensor:
        """frames [B, T, D] -> refined frames [B, T, D]."""
        if frames.shape[1] != self.num_frames:
            raise ValueError(f"MIT was built for T={self.num_frames} frames (its temporal "
                             f"position embedding), got {frames.shape[1]}")
        x = frames + self.pos.to(frames.dtype)
        for block in self.blocks:
            x = block(x)
        return x + frames


# --------------------------------------------------------------------------- prompt (§3.3)


class CrossAttention(nn.Module):
    """Multi-head attention of text queries over visual keys/values, with the official
    prompt generator's layout: q/k/v projections without bias, output projection with bias."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """query [B, C, D], kv [B, P, D] -> [B, C, D]."""
        b, c, d = query.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, t.shape[1], h, d // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q(query)), split(self.k(kv)),
                                             split(self.v(kv)))
        return self.proj(out.transpose(1, 2).reshape(b, c, d))


class PromptGeneratorLayer(nn.Module):
    """One block of the video-specific prompt (xclip Eq. 10):
    c_bar = c + MHSA(LN(c), z_bar); c_tilde = c_bar + FFN(LN(c_bar)), with the pre-LayerNorms
    of the official PromptGeneratorLayer (Eq. 10 itself writes none)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _mlp(dim)

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        text = text + self.cross_attn(self.norm1(text), visual)
        return text + self.mlp(self.norm2(text))


class VideoSpecificPrompt(nn.Module):
    """Video-specific prompting (xclip §3.3, Eq. 10), a text refiner.

    The text features c query z_bar, the patch tokens averaged over time (after a LayerNorm),
    through ``layers`` blocks (§4.1: 2); the result c_tilde is scaled by a learnable per-channel
    alpha initialised to 0.1 (official: ``alpha * ones(D)``) and added: c_hat = c + alpha *
    c_tilde. Eq. 10 and the official code take c as the text tower's output, unnormalised
    (``model.vprompt_text=raw``).

    Patch tokens come from ``ctx.patches``. With ``visual_width`` > 0 (official,
    ``model.vprompt_visual=own``) they are the last block's tokens [B, T, P, W]: each goes
    through the prompt's own LayerNorm(W) and W->D projection (official ``prompts_visual_ln``,
    ``prompts_visual_proj``, initialised N(0, 1) and trained with the new modules) before the
    mean over time; with ``visual_width=0`` they are [B, T, P, D] after CLIP's ln_post and
    visual projection (shared with, and frozen with, the CLS path). Text may be shared [C, D] or
    per video [B, C, D]; the output is [B, C, D]. ``unit_text`` L2-normalises the text first.
    """

    def __init__(self, dim: int, layers: int = 2, heads: int = 0, alpha: float = 0.1,
                 visual_width: int = 0, unit_text: bool = False) -> None:
        super().__init__()
        self.unit_text = unit_text
        heads = auto_heads(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(PromptGeneratorLayer(dim, heads) for _ in range(layers))
        self.apply(_trunc_normal_init)
        self.alpha = nn.Parameter(torch.full((dim,), float(alpha)))
        self.visual_ln = nn.LayerNorm(visual_width) if visual_width else None
        self.visual_proj = nn.Parameter(torch.randn(visual_width, dim)) if visual_width else None

    def visual_tokens(self, patches: torch.Tensor) -> torch.Tensor:
        """z_bar: patches [B, T, P, W or D] -> LayerNormed time average [B, P, D]."""
        if self.visual_ln is not None:
            patches = self.visual_ln(patches) @ self.visual_proj.to(patches.dtype)
        return self.norm(patches.mean(dim=1))

    def prompt(self, text: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """alpha * c_tilde for text [B, C, D] and patches -> [B, C, D]."""
        visual = self.visual_tokens(patches)
        x = text
        for layer in self.layers:
            x = layer(x, visual)
        return self.alpha * x

    def forward(self, text: torch.Tensor, ctx) -> torch.Tensor:
        patches = ctx.patches
        if patches is None:
            raise ValueError("the video-specific prompt needs patch tokens (ctx.patches); "
                             "build the tower with return_patches")
        b = patches.shape[0]
        if text.dim() == 2:
            text = text.unsqueeze(0).expand(b, -1, -1)
        elif text.dim() != 3 or text.shape[0] != b:
            raise ValueError(f"the video-specific prompt takes text [C, D] or [B={b}, C, D], "
                             f"got {tuple(text.shape)}")
        text = text.to(patches.dtype)
        if self.unit_text:
            text = F.normalize(text, dim=-1)
        return text + self.prompt(text, patches)


# --------------------------------------------------------------------------- Table 8 / 9


class LinearHead(nn.Module):
    """"w/o text" of xclip Table 8: a randomly initialised fully-connected classifier on the
    video embedding replaces the text branch ("we replace the text encoder with a randomly
    initialized fully-connected layer as the classification head"). Closed-set only: the
    number of classes is fixed at construction; the class texts are ignored except for checking
    that their count matches."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, video: torch.Tensor, text: torch.Tensor, ctx: object,
                logit_scale: torch.Tensor) -> torch.Tensor:
        if text.shape[-2] != self.num_classes:
            raise ValueError(f"the linear head was built for {self.num_classes} classes but got "
                             f"{text.shape[-2]} class names; it only supports the closed-set "
                             "protocol with model.linear_head_classes = data.num_classes")
        return self.fc(video.to(self.fc.weight.dtype))


class LearnableContext(nn.Module):
    """Learnable context vectors (CoOp [60]; xclip Table 9 "Vectors", length 16): the prompt is
    "<v_1> ... <v_H> {class}." with H shared learnable token embeddings after SOS, encoded by
    ``TextEncoder.encode_context``. ``init_phrase`` initialises the first vectors from its word
    embeddings (any left over draw N(0, 0.02), CoOp's random init, used for all when empty).
    """

    def __init__(self, text: nn.Module, length: int = 16, init_phrase: str = "") -> None:
        super().__init__()
        self.text = text
        self.length = length
        context = torch.empty(length, text.width)
        nn.init.normal_(context, std=0.02)
        if init_phrase:
            n = int((text.tokenize([init_phrase])[0] != 0).sum()) - 2  # minus SOS and EOT
            k = min(max(n, 0), length)
            if k:
                context[:k] = text.context_init(init_phrase, k).to(context)
        self.context = nn.Parameter(context)
        self._checked: set[tuple[str, ...]] = set()

    def _check_fits(self, names: tuple[str, ...]) -> None:
        encode = getattr(self.text.tokenizer, "encode", None)
        limit = getattr(self.text.clip, "context_length", None)
        if encode is None or limit is None:
            return
        for name in names:
            need = 2 + self.length + len(encode(f"{name}."))
            if need > limit:
                raise ValueError(
                    f"learnable context of length {self.length} + class {name!r} needs {need} "
                    f"tokens, more than the text context length {limit}; lower "
                    "model.learnable_ctx_length")
        self._checked.add(names)

    def forward(self, class_names: list[str], ctx: object = None) -> torch.Tensor:
        key = tuple(class_names)
        if key not in self._checked:
            self._check_fits(key)
        return self.text.encode_context(self.context, class_names)


VPROMPT_TEXT = ("raw", "unit")
VPROMPT_VISUAL = ("own", "clip")


def ctx_fits(length: int, context_length: int) -> bool:
    """Whether H learnable vectors leave room for SOS, one class token and EOT."""
    return length + 3 <= context_length


# --------------------------------------------------------------------------- knobs


@dataclass
class XCLIPKnobs:
    """X-CLIP (xclip §3) and the ablation baselines of its §4.5; knob names start with cct_,
    mit_, vprompt_, linear_head, prompt_ensemble, learnable_ctx."""

    cct: bool = False
    """Cross-frame communication (xclip §3.2, Eq. 7-9): per block a message token from each
    frame's CLS, fusion attention over the T messages, appended for the block's attention."""
    cct_blocks: str = "all"
    """Blocks that carry message tokens, 1-based: ``all``, ``1-12``, ``1,3,5`` (xclip §3.2: every
    block of the L_c-layer CCT)."""
    cct_heads: int = 0
    """Heads of the cross-frame fusion attention; 0 = the ViT's heads (official: width // 64)."""
    mit: bool = False
    """Multi-frame integration transformer (xclip Eq. 6): temporal position embedding +
    transformer + residual, then the mean pool."""
    mit_depth: int = 1
    """MIT layers L_m (xclip §4.1: "a simple 1-layer multi-frame integration transformer")."""
    mit_heads: int = 0
    """MIT heads; 0 = D // 64 (official)."""
    video_prompt: bool = False
    """Video-specific prompting (xclip §3.3, Eq. 10): text features query the time-averaged
    patch tokens; c_hat = c + alpha * c_tilde."""
    vprompt_layers: int = 2
    """Prompt generator blocks (xclip §4.1: "the number of the video-specific prompting blocks
    is 2")."""
    vprompt_heads: int = 0
    """Prompt generator heads; 0 = D // 64 (official)."""
    vprompt_alpha: float = 0.1
    """Initial value of the learnable per-channel alpha (xclip §3.3: "initial value of 0.1";
    official: one alpha per channel)."""
    vprompt_text: str = "raw"
    """The class text the prompt refines: raw (the text tower's output, unnormalised: Eq. 10's
    c and the official ``encode_text``) | unit (L2-normalised features; at ViT-B/16 size and the
    official init the unit text is turned far more by alpha * c_tilde at initialisation)."""
    vprompt_visual: str = "own"
    """The patch tokens the prompt reads: own (official: the last block's tokens through the
    prompt's own LayerNorm and a new W->D projection, ``prompts_visual_ln`` /
    ``prompts_visual_proj``, trained at the new-module rate) | clip (CLIP's ln_post and visual
    projection, shared with the CLS path and frozen with it)."""
    linear_head: bool = False
    """"w/o text" (xclip Table 8): a randomly initialised linear classifier on the video
    embedding instead of the text branch; closed-set protocol only."""
    linear_head_classes: int = 32
    """Outputs of the linear head; must equal data.num_classes (checked), whose default it
    copies. A fixed size (not sized at the first call) so the optimizer and DDP see it."""
    prompt_ensemble: bool = False
    """Prompt ensembling (xclip Table 9, CLIP [36]): average the text features of 16
    hand-crafted templates (``modules.xclip.ENSEMBLE_TEMPLATES``) instead of
    ``prompt_template``."""
    learnable_ctx: bool = False
    """Learnable context vectors (xclip Table 9 "Vectors", CoOp [60]) replace the template."""
    learnable_ctx_length: int = 16
    """Number of learnable vectors (xclip §4.5: "learnable vectors [60] with length 16")."""
    learnable_ctx_init: str = ""
    """Phrase whose word embeddings initialise the first vectors; empty = N(0, 0.02) (CoOp's
    random init; xclip does not say)."""


def validate(ctx: ValidationContext) -> None:
    """X-CLIP knobs (xclip §3) and the Table 8/9 baselines."""
    m, d, spec = ctx.model, ctx.data, ctx.spec
    for name in ("mit_depth", "vprompt_layers", "learnable_ctx_length"):
        if getattr(m, name) < 1:
            raise ConfigError(f"model.{name} must be >= 1, got {getattr(m, name)}")
    for name in ("cct_heads", "mit_heads", "vprompt_heads"):
        if getattr(m, name) < 0:
            raise ConfigError(f"model.{name} must be >= 0 (0 = the official default)")
    for name, allowed in (("vprompt_text", VPROMPT_TEXT), ("vprompt_visual", VPROMPT_VISUAL)):
        if getattr(m, name) not in allowed:
            raise ConfigError(f"model.{name} must be one of {allowed}, got {getattr(m, name)!r}")
    if m.prompt_ensemble and ctx.on("prompts"):
        raise ConfigError(f"model.prompt_ensemble averages hand-crafted templates, but "
                          f"model.{ctx.on('prompts')[0]} replaces them; turn one off")
    if m.linear_head:
        if d.protocol != "closed_set":
            raise ConfigError(
                f"model.linear_head classifies a fixed set of classes and cannot score unseen "
                f"ones: it needs data.protocol='closed_set', not {d.protocol!r} (xclip Table 8)")
        if m.linear_head_classes != d.num_classes:
            raise ConfigError(f"model.linear_head_classes={m.linear_head_classes} must equal "
                              f"data.num_classes={d.num_classes}")
        textual = (ctx.on("text_refiner") + ["prompt_ensemble"] * m.prompt_ensemble
                   + ["train_text"] * m.train_text + ctx.on("prompts"))
        if textual:
            raise ConfigError(f"model.linear_head has no text branch, so model.{textual[0]} "
                              "has nothing to act on; turn one off")
    if spec is None:
        return
    if m.cct:
        try:
            parse_block_spec(m.cct_blocks, spec.depth)
        except ValueError as err:
            raise ConfigError(f"model.cct_blocks: {err}") from None
        if m.cct_heads and spec.width % m.cct_heads:
            raise ConfigError(f"model.cct_heads={m.cct_heads} must divide the ViT width "
                              f"{spec.width} of model.backbone={m.backbone!r}")
    for toggle, heads in (("mit", "mit_heads"), ("video_prompt", "vprompt_heads")):
        h = getattr(m, heads)
        if getattr(m, toggle) and h and spec.embed_dim % h:
            raise ConfigError(f"model.{heads}={h} must divide the embedding width "
                              f"{spec.embed_dim} of model.backbone={m.backbone!r}")
    if m.learnable_ctx and not ctx_fits(m.learnable_ctx_length, spec.context_length):
        raise ConfigError(
            f"model.learnable_ctx_length={m.learnable_ctx_length} leaves no room for the "
            f"class name in the text context ({spec.context_length} tokens) of "
            f"model.backbone={m.backbone!r}")


def build(cfg: XCLIPKnobs, parts: Parts) -> None:
    """CCT message hooks, MIT refiner, video-specific prompt text refiner; the Table 8 linear
    head and the Table 9 prompt ensemble / learnable context."""
    if cfg.cct:
        heads = cfg.cct_heads or parts.heads
        for i in parse_block_spec(cfg.cct_blocks, parts.depth):
            parts.hook(i, "message", CrossFrameMessage(parts.width, heads))
    if cfg.mit:
        parts.refiners.append(
            MultiFrameIntegration(parts.dim, parts.num_frames, cfg.mit_depth, cfg.mit_heads))
    if cfg.video_prompt:
        own = cfg.vprompt_visual == "own"
        parts.patches = "raw" if own else "projected"
        parts.raw_text = parts.raw_text or cfg.vprompt_text == "raw"
        parts.text_refiners.append(
            VideoSpecificPrompt(parts.dim, cfg.vprompt_layers, cfg.vprompt_heads,
                                cfg.vprompt_alpha, parts.width if own else 0,
                                unit_text=cfg.vprompt_text == "unit"))
    if cfg.linear_head:
        parts.set_head(LinearHead(parts.dim, cfg.linear_head_classes), "model.linear_head")
    if cfg.prompt_ensemble:
        parts.templates = list(ENSEMBLE_TEMPLATES)
    if cfg.learnable_ctx:
        length, phrase = cfg.learnable_ctx_length, cfg.learnable_ctx_init
        parts.set_prompts(lambda text: LearnableContext(text, length, phrase),
                          "model.learnable_ctx")


PAPER = Paper(
    name="xclip", knobs=XCLIPKnobs, build=build, validate=validate,
    claims={"cct": ("tower", "block_messages"), "mit": "refiner", "prompt_ensemble": "templates",
            "video_prompt": ("text_refiner", "per_video_text"), "linear_head": "head",
            "learnable_ctx": "prompts"},
    temporal={"mit (xclip)": {"mit": True}, "cct + mit (xclip)": {"cct": True, "mit": True}},
    attention={"cct": True, "mit": True, "video_prompt": True},
    # CCT's fusion attention in every block, MIT's layer, the prompt generator's 2 layers
    attention_calls=lambda spec: spec.depth + 1 + 2,
    attention_types=(CrossAttention,),
)
