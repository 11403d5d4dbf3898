"""MotionPrompt (Wang et al., "Seeing in Flowing: Adapting CLIP for Action Recognition with
Motion Prompts Learning", MM '23): the Motion Modeling Block (MMB, §3.2 Eq. 4-6), Motion-Aware
Prompts (MAP, §3.3 Eq. 7) and the Multimodal Communication Block (MCB, §3.4 Eq. 2).

Where each attaches (``build``): MMB is the frame->video pool and also
hands its motion cue to MAP (``Pooled.motion``); MAP replaces the hand-crafted text prompts;
MCB is the cross-modal stage before the cosine head (Eq. 3).

Interpretations of what §3 leaves open (each is a config knob, see ``ModelConfig``):

- The motion cue fed to MAP's adapter is AvgPool(M) in R^D, the motion term of Eq. 6: §3.3
  adds "the projected motion information" to every prompt vector P_i in R^D, so the L x D
  motion representation M has to become one vector per video; the AvgPool of Eq. 6 is the
  reduction the paper already applies to M.
- When MMB's motion stream is absent (MMB off, or the paper's "Baseline" spatial-only pool),
  MAP's cue is the average raw representation difference AvgPool(D) of Eq. 4, i.e. the motion
  stream with no transformer. The paper only runs MAP together with MMB.
- MCB follows Eq. 2, MCB(T, V): SMA's key/value is the pooled video V (one token) by default;
  the ``frames`` variant lets text query the T frame features instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ConfigError
from ..stages import Paper, Parts, Pooled, StageContext, ValidationContext

if TYPE_CHECKING:  # annotation only: the backbone layer sits above the modules
    from ..backbone import TextEncoder

TABLE1_PHRASES = {3: "human action of", 4: "a human action of", 5: "a common human action of"}
"""Hand-crafted prompts A/B/C of motionprompt Table 1 (lengths 3/4/5) without the class; the
paper initialises MAP with "human action of [CLASS]." when H = 3 (§3.3) and sets H in MAP to
3, 4, 5 "correspondingly" to these prompts (§4.2)."""

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
"""Non-linearities of MAP's motion adapter (§3.3 says "a non-linear activation")."""

MCB_VIDEO = ("pooled", "frames")
"""What SMA's key/value is: the pooled video V of Eq. 2, or the T frame features."""
MCB_TEXT = ("raw", "unit")
"""The class text MCB reads: the text encoder's output, or its L2-normalised form."""


# --------------------------------------------------------------------------- MMB (§3.2)


def difference_pairs(num_frames: int, step: int) -> list[tuple[int, int]]:
    """The frame pairs (i, j) of Eq. 4 with 0 < j - i <= s, ordered by step, then by i.

    There are L = sum_{k=1}^{s} (T - k) of them (Eq. 5)."""
    return [(i, i + k) for k in range(1, step + 1) for i in range(num_frames - k)]


def frame_differences(frames: torch.Tensor, step: int) -> torch.Tensor:
    """The representation differences D_k = I_j - I_i of Eq. 4 for 0 < j - i <= ``step``.

    frames [B, T, D] -> [B, L, D], in the order of ``difference_pairs``."""
    t = frames.shape[1]
    if not 1 <= step <= t - 1:
        raise ValueError(f"the temporal step s={step} must satisfy 1 <= s <= T-1 = {t - 1}")
    return torch.cat([frames[:, k:] - frames[:, :-k] for k in range(1, step + 1)], dim=1)


class TransformerStream(nn.Module):
    """One stream of MMB: ``layers`` standard Transformer encoder layers (MHSA + FFN, [40]).

    Each layer is built on its own (independent initialisation; ``nn.TransformerEncoder`` would
    deep-copy one layer). ``norm_first=False`` is the post-LN layer of [40]; ReLU FFN of width
    ``mlp_ratio * dim`` (2D by default: motionprompt Table 3's +2.1 M for the Baseline; [40] uses
    4D). ``length`` adds a learnable position
    embedding over the sequence (std 0.02, as CLIP's), which §3.2 does not mention.
    """

    def __init__(self, dim: int, layers: int = 1, heads: int = 8, mlp_ratio: float = 2.0,
                 dropout: float = 0.0, norm_first: bool = False, length: int | None = None
                 ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"a transformer stream needs >= 1 layer, got {layers}")
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, max(1, round(dim * mlp_ratio)), dropout,
                                       activation="relu", batch_first=True,
                                       norm_first=norm_first)
            for _ in range(layers))
        self.pos = nn.Parameter(torch.randn(length, dim) * 0.02) if length else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, D] -> [B, L, D]."""
        if self.pos is not None:
            if x.shape[1] != self.pos.shape[0]:
                raise ValueError(f"position embedding built for length {self.pos.shape[0]}, "
                                 f"got a sequence of {x.shape[1]}")
            x = x + self.pos.to(x.dtype)
        for layer in self.layers:
            x = layer(x)
        return x


class MotionModelingBlock(nn.Module):
    """Two-stream Motion Modeling Block (motionprompt §3.2, Eq. 4-6).

    Motion stream: M = T_m(D) over the L frame differences with step <= s (Eq. 4-5); spatial
    stream: S = T_s(I) over the T frame features; V = AvgPool(M) + AvgPool(S) (Eq. 6).
    ``motion=False`` drops the motion stream: the paper's "Baseline" (§4.1 i: "only one single
    Transformer to mimic the spatial stream"), V = AvgPool(S).

    ``forward`` returns (V [B, D], motion cue [B, D]); the cue is AvgPool(M), or AvgPool(D) of
    the raw differences when the motion stream is off (for MAP, §3.3).
    """

    def __init__(self, dim: int, num_frames: int, step: int = 4, motion_layers: int = 1,
                 spatial_layers: int = 1, heads: int = 8, mlp_ratio: float = 2.0,
                 dropout: float = 0.0, norm_first: bool = False, pos_emb: bool = False,
                 motion: bool = True) -> None:
        super().__init__()
        if not 1 <= step <= num_frames - 1:
            raise ValueError(f"the temporal step s={step} must satisfy 1 <= s <= T-1 "
                             f"= {num_frames - 1} (motionprompt §3.2)")
        self.num_frames, self.step = num_frames, step
        self.num_pairs = len(difference_pairs(num_frames, step))
        kw = dict(heads=heads, mlp_ratio=mlp_ratio, dropout=dropout, norm_first=norm_first)
        self.spatial = TransformerStream(dim, spatial_layers, length=num_frames if pos_emb
                                         else None, **kw)
        self.motion = TransformerStream(dim, motion_layers, length=self.num_pairs if pos_emb
                                        else None, **kw) if motion else None

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames I [B, T, D] -> (video V [B, D], motion cue [B, D])."""
        if frames.shape[1] != self.num_frames:
            raise ValueError(f"MMB was built for T={self.num_frames} frames, "
                             f"got {frames.shape[1]}")
        diffs = frame_differences(frames, self.step)
        video = self.spatial(frames).mean(dim=1)
        if self.motion is None:
            return video, diffs.mean(dim=1)
        cue = self.motion(diffs).mean(dim=1)
        return cue + video, cue


class MMBPool(nn.Module):
    """Stage adapter: MMB as the frame->video pool; its motion cue goes to ``Pooled.motion``."""

    def __init__(self, mmb: MotionModelingBlock) -> None:
        super().__init__()
        self.mmb = mmb

    def forward(self, frames: torch.Tensor, ctx: StageContext) -> Pooled:
        video, cue = self.mmb(frames)
        return Pooled(video, motion=cue)


# --------------------------------------------------------------------------- MAP (§3.3)


def map_init_phrase(length: int, phrase: str = "") -> str:
    """The phrase MAP's H vectors start from: ``phrase`` if given, else Table 1's hand-crafted
    prompt of length H (H in 3..5); "" (random init, as CoOp) for other H."""
    return phrase or TABLE1_PHRASES.get(length, "")


class MotionAdapter(nn.Module):
    """linear -> activation -> linear (motionprompt §3.3): squeeze the motion cue to ``hidden``
    and recover the prompt width. ``zero_init`` zeroes the last layer so MAP starts exactly at
    its initial phrase (the paper does not say how the adapter is initialised)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, activation: str = "relu",
                 zero_init: bool = False) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, "
                             f"got {activation!r}")
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), ACTIVATIONS[activation](),
                                 nn.Linear(hidden, out_dim))
        if zero_init:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, cue: torch.Tensor) -> torch.Tensor:
        """[B, in_dim] -> [B, out_dim]."""
        return self.net(cue)


class MotionAwarePrompts(nn.Module):
    """Motion-Aware Prompts (motionprompt §3.3, Eq. 7): [SOS][P_1..P_H][CLASS][.][EOS].

    H learnable vectors P_i (initialised from the token embeddings of a hand-crafted phrase),
    plus the motion adapter's output added to every P_i, give one prompt per video; the frozen
    text tower encodes them: (class_names, ctx) -> normalised [B, C, D]. The cue is
    ``ctx.motion`` (MMB's AvgPool(M)); without it, AvgPool of the raw frame differences with
    step <= ``fallback_step`` (Eq. 4) of ``ctx.frames``.
    """

    def __init__(self, text: TextEncoder, length: int = 5, init_phrase: str = "",
                 motion_dim: int = 512, hidden: int = 0, activation: str = "relu",
                 zero_init: bool = False, fallback_step: int = 4) -> None:
        super().__init__()
        if length < 1:
            raise ValueError(f"MAP needs H >= 1 context vectors, got {length}")
        self.text = text
        self.init_phrase = init_phrase
        if init_phrase:
            available = int((text.tokenize([init_phrase])[0] != 0).sum()) - 2  # minus SOS, EOS
            if available < length:
                raise ValueError(f"MAP init phrase {init_phrase!r} has {available} tokens, "
                                 f"fewer than H={length}")
            context = text.context_init(init_phrase, length).float()
        else:
            context = torch.randn(length, text.width) * 0.02  # CoOp's generic init
        self.context = nn.Parameter(context.to(text.device))
        self.adapter = MotionAdapter(motion_dim, hidden or max(1, motion_dim // 16), text.width,
                                     activation, zero_init).to(text.device)
        self.fallback_step = fallback_step

    def motion_cue(self, ctx: StageContext) -> torch.Tensor:
        """[B, D]: the pool's motion cue, else AvgPool of the raw frame differences."""
        if ctx.motion is not None:
            return ctx.motion
        if ctx.frames is None:
            raise ValueError("MAP needs a motion cue (ctx.motion) or frame features (ctx.frames)")
        step = min(self.fallback_step, ctx.frames.shape[1] - 1)
        return frame_differences(ctx.frames, step).mean(dim=1)

    def context_vectors(self, cue: torch.Tensor) -> torch.Tensor:
        """P_i + adapter(cue) for every i: cue [B, D] -> [B, H, W]."""
        return self.context[None] + self.adapter(cue.to(self.context.dtype))[:, None]

    def forward(self, class_names: list[str], ctx: StageContext) -> torch.Tensor:
        """-> per-video class text features [B, C, D] (L2-normalised)."""
        return self.text.encode_context(self.context_vectors(self.motion_cue(ctx)), class_names)


# --------------------------------------------------------------------------- MCB (§3.4)


class MultimodalCommunicationBlock(nn.Module):
    """Multimodal Communication Block (motionprompt §3.4, Eq. 2): two parallel cross attentions
    with residual connections on the original T and V.

    SMA (Semantic Matching Attention): text queries the video, T' = T + SMA(T, V, V).
    SAA (Semantic Allocating Attention): video queries the text, V' = V + SAA(V, T, T).
    T are the class text representations as the text encoder gives them (Eq. 1, unnormalised:
    the cosine of Eq. 3 normalises after MCB) and V the video representation of Eq. 6. With V one
    vector (Eq. 6) SMA has a single key, so it adds the same vector to every class's text; the
    cosine of Eq. 3 still ranks the classes differently after it. "Standard cross attention with
    residual connection" (§3.4): ``prenorm=False``. ``prenorm=True`` LayerNorms queries and
    keys/values inside each attention (the residual adds to the un-normalised input), and
    ``unit_text`` L2-normalises the text first (the earlier behaviour of this project).
    """

    def __init__(self, dim: int, heads: int = 8, prenorm: bool = False,
                 unit_text: bool = False) -> None:
        super().__init__()
        self.unit_text = unit_text
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.sma = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.saa = nn.MultiheadAttention(dim, heads, batch_first=True)
        norm = (lambda: nn.LayerNorm(dim)) if prenorm else nn.Identity
        self.sma_q, self.sma_kv, self.saa_q, self.saa_kv = norm(), norm(), norm(), norm()

    def forward(self, text: torch.Tensor, video: torch.Tensor,
                video_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """text [C, D] or [B, C, D], video [B, D], optional SMA key/value [B, N, D]
        -> (text' [B, C, D], video' [B, D])."""
        b = video.shape[0]
        if text.dim() == 2:
            text = text.unsqueeze(0).expand(b, -1, -1)
        elif text.dim() != 3 or text.shape[0] != b:
            raise ValueError(f"MCB takes text [C, D] or [B={b}, C, D], got {tuple(text.shape)} "
                             "(per-class prompt sets [C, K, D] are not supported)")
        text = text.to(video.dtype)
        if self.unit_text:
            text = torch.nn.functional.normalize(text, dim=-1)
        kv = video.unsqueeze(1) if video_tokens is None else video_tokens.to(video.dtype)
        kv = self.sma_kv(kv)
        matched = self.sma(self.sma_q(text), kv, kv, need_weights=False)[0]
        t_kv = self.saa_kv(text)
        allocated = self.saa(self.saa_q(video.unsqueeze(1)), t_kv, t_kv, need_weights=False)[0]
        return text + matched, video + allocated[:, 0]


class MCBStage(nn.Module):
    """Stage adapter: MCB as the cross-modal stage; ``use_frames`` makes SMA attend over the
    frame features ``ctx.frames`` instead of the pooled video."""

    def __init__(self, mcb: MultimodalCommunicationBlock, use_frames: bool = False) -> None:
        super().__init__()
        self.mcb, self.use_frames = mcb, use_frames

    def forward(self, text: torch.Tensor, video: torch.Tensor, ctx: StageContext
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mcb(text, video, ctx.frames if self.use_frames else None)


# --------------------------------------------------------------------------- knobs


@dataclass
class MotionPromptKnobs:
    """MotionPrompt (motionprompt §3); knob names start with mmb_, map_, mcb_."""

    mmb: bool = False
    """Motion Modeling Block as the frame->video pool (motionprompt §3.2, Eq. 4-6): motion
    transformer over frame differences + spatial transformer over frames, AvgPool sum."""
    mmb_spatial_only: bool = False
    """With ``mmb``: drop the motion stream, V = AvgPool(T_s(I)). This is the paper's
    "Baseline" pool (§4.1 i: "only one single Transformer to mimic the spatial stream"); the
    Baseline row is ``mmb + mmb_spatial_only`` with ``map`` and ``mcb`` off."""
    mmb_step: int = 4
    """Maximum temporal step s of Eq. 4, 1 <= s <= T-1 (§4.2: "we set the s to 4")."""
    mmb_motion_layers: int = 1
    """Layers of the motion transformer T_m (§3.2 leaves it open; one layer)."""
    mmb_spatial_layers: int = 1
    """Layers of the spatial transformer T_s (§3.2 leaves it open; one layer)."""
    mmb_heads: int = 8
    """Attention heads of T_m and T_s ("standard architecture in [40]": 8 heads)."""
    mmb_mlp_ratio: float = 2.0
    """FFN width / D of T_m and T_s. motionprompt Table 3 gives the Baseline (one spatial
    layer at D = 512) +2.1 M parameters: one layer with d_ff = 2D has 2.10 M, with [40]'s
    d_ff = 4D (2048 for 512) it would have 3.15 M."""
    mmb_dropout: float = 0.0
    """Dropout inside T_m and T_s (the paper names none)."""
    mmb_norm_first: bool = False
    """Pre-LN layers; False is the post-LN layer of [40] that §3.2 cites."""
    mmb_pos_emb: bool = False
    """Learnable position embeddings over the T frames (T_s) and the L differences (T_m);
    §3.2 names only MHSA + FFN. Without them the spatial-only Baseline is frame-order
    invariant, while the motion stream still sees order through the signs of I_j - I_i."""
    map: bool = False
    """Motion-Aware Prompts (motionprompt §3.3, Eq. 7): H learnable context vectors plus a
    motion adapter of the motion cue, one prompt per video. The cue is MMB's AvgPool(M);
    without MMB's motion stream, AvgPool of the raw frame differences of Eq. 4."""
    map_length: int = 5
    """H, the number of learnable vectors (§4.2: "we set H = 5")."""
    map_init: str = ""
    """Phrase whose first H tokens initialise the vectors; "" = Table 1's hand-crafted prompt of
    length H ("human action of" / "a human action of" / "a common human action of" for
    H = 3/4/5, §3.3 and §4.2), random N(0, 0.02) (CoOp) for other H."""
    map_hidden: int = 0
    """Squeezed width of the motion adapter (§3.3: "squeeze the dimension"); 0 = D // 16, the
    meta-net of CoCoOp [50] that MAP extends."""
    map_activation: str = "relu"
    """relu | gelu | tanh: the adapter's "non-linear activation" (§3.3; CoCoOp uses ReLU)."""
    map_zero_init: bool = False
    """Zero the adapter's last layer so MAP starts exactly at its initial phrase (the paper
    does not say how the adapter is initialised; default PyTorch init as CoCoOp)."""
    mcb: bool = False
    """Multimodal Communication Block (motionprompt §3.4, Eq. 2): SMA (text queries video) and
    SAA (video queries text), parallel cross attentions with residuals."""
    mcb_heads: int = 8
    """Heads of SMA and SAA (§3.4: "standard cross attention"; 8 as [40])."""
    mcb_video: str = "pooled"
    """SMA's key/value: ``pooled`` = the video representation V of Eq. 2 (one token);
    ``frames`` = the T frame features."""
    mcb_prenorm: bool = False
    """LayerNorm queries and keys/values inside SMA/SAA; off = "the standard cross attention
    with residual connection" of §3.4."""
    mcb_text: str = "raw"
    """The class text MCB reads: raw (the text encoder's output T of Eq. 1, unnormalised; Eq. 3
    takes the cosine after MCB) | unit (L2-normalised first: with unit text the SMA prefix
    dominates and the class texts nearly collapse at initialisation)."""


def validate(ctx: ValidationContext) -> None:
    """MotionPrompt knobs (motionprompt §3): MMB, MAP, MCB."""
    m, d = ctx.model, ctx.data
    if m.mmb_spatial_only and not m.mmb:
        raise ConfigError("model.mmb_spatial_only drops MMB's motion stream (the paper's "
                          "Baseline) and needs model.mmb on")
    if (m.mmb or m.map) and not 1 <= m.mmb_step <= d.num_frames - 1:
        raise ConfigError(f"model.mmb_step={m.mmb_step} must satisfy 1 <= s <= "
                          f"data.num_frames-1 = {d.num_frames - 1} (motionprompt §3.2)")
    for name in ("mmb_motion_layers", "mmb_spatial_layers", "mmb_heads", "map_length",
                 "mcb_heads"):
        if getattr(m, name) < 1:
            raise ConfigError(f"model.{name} must be >= 1, got {getattr(m, name)}")
    if m.mmb_mlp_ratio <= 0 or not 0.0 <= m.mmb_dropout < 1.0:
        raise ConfigError("model.mmb_mlp_ratio must be > 0 and 0 <= model.mmb_dropout < 1")
    if m.map_hidden < 0:
        raise ConfigError(f"model.map_hidden must be >= 0 (0 = D // 16), got {m.map_hidden}")
    if m.map_activation not in ACTIVATIONS:
        raise ConfigError(f"model.map_activation must be one of {sorted(ACTIVATIONS)}, "
                          f"got {m.map_activation!r}")
    if m.map and m.map_init and len(m.map_init.split()) < m.map_length:
        raise ConfigError(f"model.map_init={m.map_init!r} has fewer words than "
                          f"model.map_length={m.map_length}")
    if m.mcb_video not in MCB_VIDEO:
        raise ConfigError(f"model.mcb_video must be one of {MCB_VIDEO}, got {m.mcb_video!r}")
    if m.mcb_text not in MCB_TEXT:
        raise ConfigError(f"model.mcb_text must be one of {MCB_TEXT}, got {m.mcb_text!r}")
    dim = ctx.spec.embed_dim if ctx.spec is not None else None
    for toggle, heads in (("mmb", "mmb_heads"), ("mcb", "mcb_heads")):
        if getattr(m, toggle) and dim is not None and dim % getattr(m, heads):
            raise ConfigError(f"model.{heads}={getattr(m, heads)} must divide the embedding "
                              f"width {dim} of model.backbone={m.backbone!r}")


def build(cfg: MotionPromptKnobs, parts: Parts) -> None:
    """MMB pool, MAP prompts, MCB cross-modal stage.

    The paper's "Baseline" (§4.1) is ``mmb`` + ``mmb_spatial_only`` (spatial stream only) with
    the hand-crafted ``prompt_template`` and no MCB. Config validation rejects s > T-1; a direct
    ``build_model`` call with fewer frames clamps s to T-1."""
    step = max(1, min(cfg.mmb_step, parts.num_frames - 1))
    if cfg.mmb:
        mmb = MotionModelingBlock(
            parts.dim, parts.num_frames, step, cfg.mmb_motion_layers,
            cfg.mmb_spatial_layers, cfg.mmb_heads, cfg.mmb_mlp_ratio, cfg.mmb_dropout,
            cfg.mmb_norm_first, cfg.mmb_pos_emb, motion=not cfg.mmb_spatial_only)
        parts.set_pool(MMBPool(mmb), "model.mmb")
    if cfg.map:
        phrase, dim = map_init_phrase(cfg.map_length, cfg.map_init), parts.dim
        parts.set_prompts(lambda text: MotionAwarePrompts(
            text, cfg.map_length, phrase, dim, cfg.map_hidden, cfg.map_activation,
            cfg.map_zero_init, fallback_step=step), "model.map")
    if cfg.mcb:
        parts.raw_text = parts.raw_text or cfg.mcb_text == "raw"
        parts.set_cross_modal(MCBStage(
            MultimodalCommunicationBlock(parts.dim, cfg.mcb_heads, cfg.mcb_prenorm,
                                         unit_text=cfg.mcb_text == "unit"),
            use_frames=cfg.mcb_video == "frames"), "model.mcb")


PAPER = Paper(
    name="motionprompt", knobs=MotionPromptKnobs, build=build, validate=validate,
    claims={"mmb": "pool", "map": ("prompts", "per_video_text"),
            "mcb": ("cross_modal", "per_video_text")},
    temporal={"mmb (motionprompt)": {"mmb": True}},
    attention={"mmb": True, "map": True, "mcb": True},
    # MMB's two streams, the text tower MAP re-runs per video, MCB's SMA and SAA
    attention_calls=lambda spec: 2 + spec.text_layers + 2,
)
