"""OmniCLIP (Liu, Li and Yu, "OmniCLIP: Adapting CLIP for Video Recognition with
Spatial-Temporal Omni-Scale Feature Learning"): the temporal encoding of Eq. 1, the Self-Prompt
Generator (SPG, §3.2, Eq. 6), the Parallel Temporal Adapter (PTA, §3.3, Eq. 3-4 and 7) and the
frame-level multi-head attention of the video feature (Eq. 5).

The official repository (XiaoBuL/OmniCLIP) holds only a README, so every choice the paper
leaves open is a constructor argument here and a documented knob in ``ModelConfig``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import parse_block_spec

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


def vision_shape_of(backbone: str) -> tuple[int, int, int] | None:
    """(depth, width, heads) of an open_clip model's vision tower from its config, or None when
    the config is unknown (heads = width // head_width, open_clip's default head width 64)."""
    import open_clip

    from ..backbone import register_model_configs

    register_model_configs()
    cfg = open_clip.get_model_config(backbone) or {}
    vision = cfg.get("vision_cfg")
    if not vision or "layers" not in vision or "width" not in vision:
        return None
    layers = vision["layers"]
    if not isinstance(layers, int):  # ResNet towers list stage depths
        return None
    width = int(vision["width"])
    return layers, width, width // int(vision.get("head_width", 64))
