"""OmniCLIP (Liu, Li and Yu, "OmniCLIP: Adapting CLIP for Video Recognition with
Spatial-Temporal Omni-Scale Feature Learning"): the temporal encoding of Eq. 1, the Self-Prompt
Generator (SPG, §3.2, Eq. 6), the Parallel Temporal Adapter (PTA, §3.3, Eq. 3-4 and 7) and the
frame-level multi-head attention of the video feature (Eq. 5).

The official repository (XiaoBuL/OmniCLIP) holds only a README, so every choice the paper
leaves open is a constructor argument here and a documented knob in ``ModelConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..specs import parse_block_spec
from ..stages import Paper, Parts, ValidationContext

PAPER_DEPTH = 12
"""OmniCLIP numbers blocks 1-12 of ViT-B/16 (Table 10: groups 1-3, 4-6, 7-9, 10-12)."""

PTA_MODES = ("parallel", "cascade", "attn_parallel")
"""Where PTA sits (Table 11, Figure 5): parallel to the block (the paper's design, Eq. 4), in
cascade after the block, or parallel to the attention only."""

SPG_POOLS = ("avg", "max")
"""SPG down-sampling (Table 9: Avg. and Max.)."""


def parse_blocks(spec: str, depth: int, ref_depth: int = PAPER_DEPTH) -> list[int]:
    """PTA's block spec: ``parse_block_spec`` in the paper's 12-block numbering by default, so
    Table 10's groups (1-3, 4-6, 7-9, 10-12) map proportionally onto any backbone (one block each
    on the 4-block tiny tower); ``ref_depth=0`` numbers the backbone's own blocks."""
    return parse_block_spec(spec, depth, ref_depth)


class TemporalEncoding(nn.Module):
    """Learnable temporal encoding TE_t added to every token of frame t (omniclip Eq. 1:
    V^0 = X^0 + PE + TE).

    The paper gives no initialisation; ``init_std`` follows the ViT/TimeSformer convention
    (normal, std 0.02). ``init_std=0`` starts as the identity. It is added to the tokens after
    CLIP's ``ln_pre`` (our hook point), where PE has already been added. This is the only part of
    OmniCLIP that knows the frame order: PTA's attention and the Eq. 5 MHA have no positions.
    """

    def __init__(self, num_frames: int, width: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.embed = nn.Parameter(torch.randn(num_frames, width) * init_std)

    def forward(self, x: torch.Tensor, num_frames: int, grid: tuple[int, int]) -> torch.Tensor:
        """x [B*T, L, W] -> x + TE_t (broadcast over the L tokens of frame t)."""
        if num_frames != self.num_frames:
            raise ValueError(f"TemporalEncoding was built for T={self.num_frames} frames, "
                             f"got {num_frames}")
        b = x.shape[0] // num_frames
        te = self.embed.to(x.dtype)[None, :, None, :]
        return (x.view(b, num_frames, *x.shape[1:]) + te).flatten(0, 1)


class SelfPromptGenerator(nn.Module):
    """Self-Prompt Generator (omniclip §3.2, Eq. 6): R = Projector(Avg(V)).

    Each frame's patch grid is down-sampled by 2x2 pooling with stride 2 (``pool``: avg or max,
    Table 9), giving K/4 prompt tokens per frame (R in R^{T x K/4 x d}); odd grids round up
    (ceil mode, partial windows pool their valid cells). The projector is the paper's two-layer
    MLP (``projector=False`` is Table 9's pooling-only rows); its hidden width is not given,
    ``hidden`` defaults to the token width. The prompts are appended after the CLS and patch
    tokens, so every later block (and PTA) sees them (§3.1: V^0 = Concat(V^0, R^0)); the tower's
    head reads only CLS, so they never reach the frame feature directly.

    ``replace=True`` regenerates the prompts from the current patch tokens and overwrites the
    ``num_prompts`` tokens that an earlier SPG put right after the patches (the per-layer R^i
    reading of §3.2; off by default, see ``ModelConfig.spg_per_layer``).
    """

    def __init__(
        self,
        width: int,
        pool: str = "avg",
        projector: bool = True,
        hidden: int = 0,
        replace: bool = False,
    ) -> None:
        super().__init__()
        if pool not in SPG_POOLS:
            raise ValueError(f"pool must be one of {SPG_POOLS}, got {pool!r}")
        self.pool, self.replace = pool, replace
        hidden = hidden or width
        self.projector = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width)
        ) if projector else None

    @staticmethod
    def num_prompts(grid: tuple[int, int]) -> int:
        """K/4 prompts for a gh x gw grid (rounded up per side for odd grids)."""
        return -(-grid[0] // 2) * -(-grid[1] // 2)

    def prompts(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """x [B*T, L, W] -> prompts [B*T, K/4, W] from the patch tokens x[:, 1:1+K]."""
        gh, gw = grid
        patches = x[:, 1:1 + gh * gw].transpose(1, 2).reshape(x.shape[0], -1, gh, gw)
        pool = F.avg_pool2d if self.pool == "avg" else F.max_pool2d
        r = pool(patches, kernel_size=2, stride=2, ceil_mode=True).flatten(2).transpose(1, 2)
        return self.projector(r) if self.projector is not None else r

    def forward(self, x: torch.Tensor, num_frames: int, grid: tuple[int, int]) -> torch.Tensor:
        """x [B*T, L, W] -> [B*T, L + K/4, W] (or the same L with fresh prompts when replacing)."""
        r = self.prompts(x, grid)
        if not self.replace:
            return torch.cat([x, r], dim=1)
        start = 1 + grid[0] * grid[1]
        if x.shape[1] < start + r.shape[1]:
            raise ValueError("SPG(replace=True) found no prompt tokens to replace; the first "
                             "block needs an appending SPG")
        return torch.cat([x[:, :start], r, x[:, start + r.shape[1]:]], dim=1)


class ParallelTemporalAdapter(nn.Module):
    """Parallel Temporal Adapter (omniclip §3.3, Eq. 7): alpha * Up(Attn(Down(V))).

    The tokens [B*T, L, W] are regrouped to [B*L, T, w] so that self-attention runs across the
    T frames at each token position (CLS, every patch and the SPG prompts: "the input of PTA
    contains self-prompts R^i"). Down/Up are linear maps W -> ratio*W -> W (Table 8: ratio 1/4
    best). The attention "shares the same structure as the attention block in the ViT" and is
    randomly initialised: a pre-LayerNorm multi-head attention (the LayerNorm is on the adapter's
    input, as the ViT block normalises its input before attending); Eq. 7 has no residual inside.

    alpha is the learnable fusion factor of Eq. 4. The paper gives no initialisation; by default
    the Up projection is zero-initialised with alpha=1 (the AIM / ST-Adapter convention), so the
    adapter starts as a zero branch (the block is exactly CLIP's) and Up receives gradient from
    the first step. ``zero_up=False`` with ``alpha_init=0`` is the other identity start
    (ReZero-style); ``zero_up=True`` with ``alpha_init=0`` would never train (rejected).

    Where the returned delta is added (Eq. 4 parallel, cascade, attention-parallel; Table 11) is
    the ``adapter_mode`` of ``VideoBlock``.
    """

    def __init__(
        self,
        width: int,
        ratio: float = 0.25,
        heads: int = 4,
        alpha_init: float = 1.0,
        zero_up: bool = True,
    ) -> None:
        super().__init__()
        hidden = round(width * ratio)
        if hidden < 1 or hidden % heads:
            raise ValueError(f"PTA bottleneck width round({width}*{ratio})={hidden} must be >= 1 "
                             f"and divisible by heads={heads}")
        if zero_up and alpha_init == 0:
            raise ValueError("alpha_init=0 with a zero-initialised Up projection gets no gradient")
        self.hidden = hidden
        self.norm = nn.LayerNorm(width)
        self.down = nn.Linear(width, hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.up = nn.Linear(hidden, width)
        if zero_up:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))

    def temporal(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """V_t = Up(Attn(Down(V))) (Eq. 7) before the alpha of Eq. 4; x [B*T, L, W]."""
        bt, length, _ = x.shape
        b = bt // num_frames
        h = self.down(self.norm(x))
        h = h.view(b, num_frames, length, -1).transpose(1, 2).reshape(b * length, num_frames, -1)
        a = self.attn(h, h, h, need_weights=False)[0]
        a = a.view(b, length, num_frames, -1).transpose(1, 2).reshape(bt, length, -1)
        return self.up(a)

    def forward(self, x: torch.Tensor, num_frames: int, grid: tuple[int, int]) -> torch.Tensor:
        """x [B*T, L, W] -> alpha * V_t [B*T, L, W], the residual branch of Eq. 4."""
        return self.alpha * self.temporal(x, num_frames)


class PreChain(nn.Module):
    """Several ``pre`` hooks run in order on one block (TE of Eq. 1, then SPG on V^0)."""

    def __init__(self, *hooks: nn.Module) -> None:
        super().__init__()
        self.hooks = nn.ModuleList(hooks)

    def forward(self, x: torch.Tensor, num_frames: int, grid: tuple[int, int]) -> torch.Tensor:
        for hook in self.hooks:
            x = hook(x, num_frames, grid)
        return x


class OmniTemporal(nn.Module):
    """Frame-level MHA of the video feature, F_V = Avg(MHA([F_1 .. F_T])) (omniclip Eq. 5); the
    Avg is the pipeline's frame-mean pool, this is the refiner before it.

    The paper gives neither heads nor normalisation: ``heads`` defaults to 8 (a 64-wide head
    for D=512), and the attention is pre-LayerNorm. ``residual=True`` (default) returns
    F + MHA(LN(F)) with a zero-initialised output projection, so it starts as the CLIP frame
    features (keeps CLIP's image-text alignment at step 0); ``residual=False`` is Eq. 5 to the
    letter, MHA(LN(F)) with the default initialisation.
    """

    def __init__(self, dim: int, heads: int = 8, residual: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.residual = residual
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        if residual:
            nn.init.zeros_(self.attn.out_proj.weight)
            nn.init.zeros_(self.attn.out_proj.bias)

    def forward(self, frames: torch.Tensor, ctx: object = None) -> torch.Tensor:
        """frames [B, T, D] -> [B, T, D]."""
        y = self.norm(frames)
        a = self.attn(y, y, y, need_weights=False)[0]
        return frames + a if self.residual else a


# --------------------------------------------------------------------------- knobs


@dataclass
class OmniCLIPKnobs:
    """OmniCLIP (omniclip §3); knob names start with pta_, spg_, omni_."""

    pta: bool = False
    """Parallel Temporal Adapter (omniclip §3.3, Eq. 3-4, 7): alpha * Up(Attn_T(Down(V)))."""
    pta_ratio: float = 0.25
    """PTA down-projection ratio, bottleneck = ratio * ViT width (omniclip Table 8: 1/4 best of
    1/8, 1/4, 1/2, 1)."""
    pta_blocks: str = "1-12"
    """Blocks carrying PTA, 1-based inclusive ranges ("1-3", "1-3,7-9") numbered on a
    ``pta_blocks_depth``-block reference tower and mapped proportionally onto the backbone
    (omniclip Table 10: all of 1-12 best). On the 4-block tiny tower each group of three is one
    block; on ViT-B/16 it is the identity."""
    pta_blocks_depth: int = 12
    """Depth of the numbering used by ``pta_blocks``: 12 = the paper's ViT-B/16 numbering;
    0 = the backbone's own blocks (no mapping)."""
    pta_mode: str = "parallel"
    """parallel (Eq. 4, the paper's design) | cascade | attn_parallel (omniclip Table 11,
    Figure 5)."""
    pta_heads: int = 0
    """Heads of PTA's temporal attention; 0 = the ViT's heads ("the same structure as the
    attention block in the ViT", §3.3). Must divide the bottleneck width."""
    pta_alpha_init: float = 1.0
    """Initial value of the learnable fusion factor alpha (Eq. 4; the paper gives none)."""
    pta_zero_up: bool = True
    """Zero-initialise PTA's Up projection so the adapter starts as a zero branch (AIM /
    ST-Adapter convention; the paper gives no initialisation)."""
    spg: bool = False
    """Self-Prompt Generator (omniclip §3.2, Eq. 6): K/4 pooled prompt tokens per frame,
    concatenated to the tokens before the first block (§3.1: V^0 = Concat(V^0, R^0))."""
    spg_pool: str = "avg"
    """avg | max 2x2 pooling of the patch grid (omniclip Table 9: Avg. best)."""
    spg_projector: bool = True
    """Two-layer MLP projector on the pooled prompts (omniclip Eq. 6, Table 9: "+ Projector")."""
    spg_hidden: int = 0
    """Hidden width of the SPG projector; 0 = the ViT width (the paper does not say)."""
    spg_per_layer: bool = False
    """Regenerate the prompts from the current patch tokens before every later block with its
    own projector (reading §3.2's R^i as per-layer); off = §3.1, prompts made once from V^0 and
    carried through the blocks."""
    omni_temporal: bool = False
    """Video feature F_V = Avg(MHA(frame features)) (omniclip Eq. 5): an MHA refiner before the
    frame-mean pool. Part of the full OmniCLIP; the paper never ablates it separately."""
    omni_heads: int = 8
    """Heads of the Eq. 5 MHA (not given in the paper; 8 = 64-wide heads for D=512)."""
    omni_residual: bool = True
    """Eq. 5 MHA as F + MHA(LN(F)) with a zero-initialised output projection (starts as CLIP's
    frame features); false = MHA(LN(F)) as Eq. 5 is written."""
    omni_te: bool = True
    """Learnable temporal encoding TE added to the tokens of frame t (omniclip Eq. 1) whenever
    pta, spg or omni_temporal is on; the only source of frame order in OmniCLIP."""
    omni_te_std: float = 0.02
    """Init std of TE (the paper gives none; ViT/TimeSformer convention 0.02; 0 = identity)."""


def validate(ctx: ValidationContext) -> None:
    """OmniCLIP knobs (omniclip §3) against the backbone."""
    m, spec = ctx.model, ctx.spec
    if not 0 < m.pta_ratio <= 1:
        raise ConfigError(f"model.pta_ratio must be in (0, 1] (Table 8: 1/8 .. 1), "
                          f"got {m.pta_ratio}")
    if m.pta_mode not in PTA_MODES:
        raise ConfigError(f"model.pta_mode must be one of {PTA_MODES}, got {m.pta_mode!r}")
    if m.pta_blocks_depth < 0 or m.pta_heads < 0 or m.spg_hidden < 0:
        raise ConfigError("model.pta_blocks_depth, model.pta_heads and model.spg_hidden must be "
                          ">= 0 (0 = the backbone's value)")
    if m.pta_zero_up and m.pta_alpha_init == 0:
        raise ConfigError("model.pta_alpha_init=0 with model.pta_zero_up=true: neither alpha nor "
                          "the Up projection would get a gradient; change one of them")
    if m.spg_pool not in SPG_POOLS:
        raise ConfigError(f"model.spg_pool must be one of {SPG_POOLS}, got {m.spg_pool!r}")
    if m.omni_heads < 1 or m.omni_te_std < 0:
        raise ConfigError("model.omni_heads must be >= 1 and model.omni_te_std >= 0")
    if m.pta:
        depth = spec.depth if spec else PAPER_DEPTH  # unknown config: assume ViT-B
        try:
            parse_blocks(m.pta_blocks, depth, m.pta_blocks_depth)
        except ValueError as err:
            raise ConfigError(f"model.pta_blocks={m.pta_blocks!r} (model.pta_blocks_depth="
                              f"{m.pta_blocks_depth}, model.backbone={m.backbone!r} has {depth} "
                              f"blocks): {err}") from None
        if spec:
            width, heads = spec.width, m.pta_heads or spec.heads
            hidden = round(width * m.pta_ratio)
            if hidden < 1 or hidden % heads:
                raise ConfigError(
                    f"model.pta_ratio={m.pta_ratio} gives a bottleneck of {hidden} channels "
                    f"(ViT width {width}), which model.pta_heads={heads} must divide")
    if m.omni_temporal and spec is not None and spec.embed_dim % m.omni_heads:
        raise ConfigError(f"model.omni_heads={m.omni_heads} must divide the embedding width "
                          f"{spec.embed_dim} of model.backbone={m.backbone!r}")


def build(cfg: OmniCLIPKnobs, parts: Parts) -> None:
    """PTA adapter hooks, SPG pre-hook, temporal encoding, temporal MHA refiner."""
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
        for i in parse_blocks(cfg.pta_blocks, parts.depth, cfg.pta_blocks_depth):
            adapter = ParallelTemporalAdapter(
                parts.width, cfg.pta_ratio, cfg.pta_heads or parts.heads,
                cfg.pta_alpha_init, cfg.pta_zero_up)
            parts.hook(i, "adapter", adapter, adapter_mode=cfg.pta_mode)
    if cfg.omni_temporal:
        parts.refiners.append(OmniTemporal(parts.dim, cfg.omni_heads, cfg.omni_residual))


PAPER = Paper(
    name="omniclip", knobs=OmniCLIPKnobs, build=build, validate=validate,
    claims={"pta": "tower", "spg": "tower", "omni_temporal": "refiner"},
    temporal={"pta (omniclip)": {"pta": True, "pta_zero_up": False}},
    attention={"pta": True, "spg": True, "pta_zero_up": False, "omni_temporal": True},
    # PTA's temporal attention on every block (the default 1-12), the Eq. 5 MHA
    attention_calls=lambda spec: spec.depth + 1,
)
