"""X-CLIP (Ni et al., "Expanding Language-Image Pretrained Models for General Video
Recognition", ECCV 2022): cross-frame communication (CCT, §3.2 Eq. 7-9), the multi-frame
integration transformer (MIT, §3.2 Eq. 6), the video-specific prompt (§3.3 Eq. 10), and the
ablation baselines of §4.5: a linear head without text (Table 8), prompt ensembling and
learnable context vectors (Table 9).

Facts taken from the official code (microsoft/VideoX, X-CLIP/models/) are marked "official".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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
    c_bar = c + MHSA(LN(c), z_bar); c_tilde = c_bar + FFN(LN(c_bar))."""

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
    c_tilde. Patch tokens come from ``ctx.patches`` [B, T, P, D] (CLIP's ln_post and visual
    projection; the official code uses its own LayerNorm and a new W->D projection instead).
    Text may be shared [C, D] or per video [B, C, D]; the output is [B, C, D].
    """

    def __init__(self, dim: int, layers: int = 2, heads: int = 0, alpha: float = 0.1) -> None:
        super().__init__()
        heads = auto_heads(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(PromptGeneratorLayer(dim, heads) for _ in range(layers))
        self.apply(_trunc_normal_init)
        self.alpha = nn.Parameter(torch.full((dim,), float(alpha)))

    def prompt(self, text: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """alpha * c_tilde for text [B, C, D] and patches [B, T, P, D] -> [B, C, D]."""
        visual = self.norm(patches.mean(dim=1))
        x = text
        for layer in self.layers:
            x = layer(x, visual)
        return self.alpha * x

    def forward(self, text: torch.Tensor, ctx) -> torch.Tensor:
        patches = ctx.patches
        if patches is None:
            raise ValueError("the video-specific prompt needs patch tokens (ctx.patches); "
                             "build the tower with return_patches=True")
        b = patches.shape[0]
        if text.dim() == 2:
            text = text.unsqueeze(0).expand(b, -1, -1)
        elif text.dim() != 3 or text.shape[0] != b:
            raise ValueError(f"the video-specific prompt takes text [C, D] or [B={b}, C, D], "
                             f"got {tuple(text.shape)}")
        text = text.to(patches.dtype)
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


def ctx_fits(length: int, context_length: int) -> bool:
    """Whether H learnable vectors leave room for SOS, one class token and EOT."""
    return length + 3 <= context_length


def backbone_dims(name: str) -> dict[str, int] | None:
    """Depth, width, heads, embed dim and text context length of an open_clip config (None if
    the model is unknown): what validation needs without building the model."""
    import open_clip

    from ..backbone import register_model_configs

    register_model_configs()
    cfg = open_clip.get_model_config(name)
    if not cfg:
        return None
    vis, txt = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if isinstance(vis.get("layers"), (list, tuple)):
        return None  # ResNet towers
    width = int(vis.get("width", 768))
    return {
        "depth": int(vis.get("layers", 12)), "width": width,
        "heads": max(width // int(vis.get("head_width", 64)), 1),
        "dim": int(cfg.get("embed_dim", width)),
        "context_length": int(txt.get("context_length", 77)),
    }

