"""STDD (Yu et al., "Building a Multi-modal Spatiotemporal Expert for Zero-shot Action Recognition
with CLIP", AAAI 2025): Space-time Cross Attention (§3 "Space-time Cross Attention", Eq. 1-7:
Window Shift Masking, Multi-scale Channel Mixing, MHSA, spatial padding, short-cut), the
prompt-based adaptation of Table 4, spatiotemporal text prompts loaded from a file (§3
"Spatiotemporal Text Augmentation"; the ASKG/LLM step that writes them is out of scope) and the
frame-to-prompt alignment score (Eq. 8).

Facts taken from the official code (Mia-YatingYu/STDD,
slowfast/models/customize_visiontransformer.py, ``STCrossAttentionBlock``) are marked
"official". Two of its behaviours are deliberately not copied: it shuffles the mask phases over
time at evaluation too (results not deterministic; here evaluation uses the fixed phase t mod
w1*w2), and its distillation feature is computed under ``no_grad`` (use ``model.distill``, whose
student side keeps its gradient).

The file is longer than the other papers' (~630 lines) because STDD has the most parts (three
sub-mechanisms inside the block, an adaptation mode, a prompt-file format and its own head);
it stays one file so that the paper lives in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..specs import parse_block_spec
from ..stages import Paper, Parts, ValidationContext

DEFAULT_PROMPT_FILE = (Path(__file__).resolve().parents[1] / "assets" / "prompts"
                       / "synthetic_st_prompts.json")
"""Spatial and temporal prompts for the 32 synthetic classes (``data.synthetic.class_names``),
used when ``model.align_prompt_file`` is empty."""

MCM_MODES = ("separate", "continual")
MCM_EDGES = ("nearest", "zero")
WSM_TRAIN_PHASES = ("shift", "shuffle", "fixed")
STCA_SHORTCUTS = ("mixed", "frame")
STCA_QUERIES = ("mixed", "frame")
ADAPTATIONS = ("", "frozen", "prompt", "full")
PROMPT_SETS = ("all", "spatial", "temporal")
ALIGN_SINGLE = ("v2t", "eq8")
CT_TEMPLATES: tuple[str, ...] = tuple(
    f"a {kind} of {who}{{}}." for kind in ("photo", "video", "example", "demonstration")
    for who in ("", "a person ", "a person using ", "a person doing ", "a person during ",
                "a person performing ", "a person practicing "))
"""Table 3's category templates (CT) as STDD's official code builds them (``text_prompt``:
"a photo of {}.", "a photo of a person {}.", ... "a demonstration of a person practicing
{}.", 28 in all, Open-VCLIP's list); the class feature is their normalised mean."""
_SET_KEYS = {"spatial": ("spatial",), "temporal": ("temporal",), "all": ("spatial", "temporal")}


class PromptFileError(ValueError):
    """The prompt-set file is missing, malformed, or lacks a class; the message names the file."""


# --------------------------------------------------------------------------- parsing helpers


def parse_scales(spec: str) -> tuple[int, ...]:
    """Temporal scales ``"1,2"`` -> (1, 2): distinct positive steps delta (stdd §4: "temporal
    scales [+-1, +-2]")."""
    try:
        scales = tuple(int(s) for s in spec.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"bad temporal scales {spec!r}: use e.g. '1,2'") from None
    if not scales or any(s < 1 for s in scales) or len(set(scales)) != len(scales):
        raise ValueError(f"temporal scales {spec!r} must be distinct positive integers")
    return scales


def mixed_channels(width: int, gamma: float) -> int:
    """d_delta = gamma * D channels taken from each side (Eq. 5); floor as in the official
    ``D // channel_fold``."""
    return int(width * gamma + 1e-9)


def masked_per_window(window: tuple[int, int], ratio: float) -> int:
    """Tokens discarded per w1 x w2 window: floor(ratio * w1 * w2), the number the official
    ``int(mask_rate * T * P * P) // (T * cells)`` gives."""
    return int(ratio * window[0] * window[1] + 1e-9)


# --------------------------------------------------------------------------- WSM (Eq. 3-4)


def window_masks(window: tuple[int, int], ratio: float) -> torch.Tensor:
    """Masking maps of one w1 x w2 window for every phase p: bool [w1*w2, w1*w2], True = masked.

    Phase p is the base map [1]*k + [0]*(n-k) rolled by p positions (official:
    ``mask_list[-offset:] + mask_list[:-offset]``); frame t uses phase t mod n, so the masked
    positions shift periodically with t (Eq. 3, Figure 3b)."""
    n = window[0] * window[1]
    k = masked_per_window(window, ratio)
    base = torch.tensor([True] * k + [False] * (n - k))
    return torch.stack([torch.roll(base, p) for p in range(n)])


def visible_index_table(grid: tuple[int, int], window: tuple[int, int], ratio: float
                        ) -> torch.Tensor:
    """Patch indices (row-major in the gh x gw grid) kept by each phase: long [n, N'].

    Order is window-major, then the row-major position inside the window (official
    ``rearrange('(h s1) (w s2) -> (h w) (s1 s2)')``), so token j of frame t and token j of frame
    t +- delta lie in the same window at interleaved positions -- what MCM mixes (Figure 3c).
    N' = (gh/w1)(gw/w2)(w1 w2 - k) (Eq. 4)."""
    gh, gw = grid
    w1, w2 = window
    if gh % w1 or gw % w2:
        raise ValueError(f"the {gh}x{gw} patch grid is not divisible into {w1}x{w2} windows")
    masks = window_masks(window, ratio)
    rows = []
    for mask in masks:
        idx = []
        for ci in range(gh // w1):
            for cj in range(gw // w2):
                for j in range(w1 * w2):
                    if not mask[j]:
                        s1, s2 = divmod(j, w2)
                        idx.append((ci * w1 + s1) * gw + cj * w2 + s2)
        rows.append(idx)
    return torch.tensor(rows, dtype=torch.long)


# --------------------------------------------------------------------------- MCM (Eq. 5-6)


def _from_frame(v: torch.Tensor, offset: int, lo: int, hi: int, edge: str = "nearest"
                ) -> torch.Tensor:
    """Channels [lo, hi) of frame t + offset for every frame t. Where t + offset lies outside
    the clip: ``zero`` fills zeros; ``nearest`` takes the clip's end frame on that side (so
    t - 2 falls back to t - 1 at t = 1, as the official code's nested writes leave it), and
    zeros only where there is no other frame on that side."""
    t = v.shape[1]
    piece = v[..., lo:hi]
    frames = torch.arange(t, device=v.device)
    src = frames + offset
    if edge == "nearest":
        src = src.clamp(0, t - 1)
        valid = src != frames
    else:
        valid = (src >= 0) & (src < t)
    out = piece.index_select(1, src.clamp(0, t - 1))
    shape = [1, t] + [1] * (piece.dim() - 2)
    return out * valid.view(shape).to(out.dtype)


def channel_mix(v: torch.Tensor, delta: int, d: int, mode: str = "continual",
                edge: str = "nearest") -> torch.Tensor:
    """Multi-scale Channel Mixing of window-shifted tokens at temporal scale delta.

    v [B, T, N', D] -> [B, T, N', D]. ``separate`` (Eq. 5): [z_{t-delta}(0:d); z_{t+delta}(d:2d);
    z_t(2d:D)]. ``continual`` (Eq. 6): the 2d mixed channels are split into delta slices per side,
    z_{t-delta} ... z_{t-1} fill (0:d) and z_{t+1} ... z_{t+delta} fill (d:2d) ("divided by delta
    to achieve zero-cost dimensionality reduction"). The paper does not say what a frame near
    the clip's ends mixes in; ``edge`` (see ``_from_frame``): ``nearest`` is what the official
    code computes at scales 1 and 2, ``zero`` fills zeros. For delta = 1 the two modes
    coincide, and so do the edge rules.
    """
    if mode not in MCM_MODES:
        raise ValueError(f"mode must be one of {MCM_MODES}, got {mode!r}")
    if edge not in MCM_EDGES:
        raise ValueError(f"edge must be one of {MCM_EDGES}, got {edge!r}")
    if not 1 <= 2 * d <= v.shape[-1]:
        raise ValueError(f"cannot mix 2*{d} channels of {v.shape[-1]}")
    if mode == "separate":
        pieces = [(-delta, 0, d), (delta, d, 2 * d)]
    else:
        if d < delta:
            raise ValueError(f"continual mixing at scale {delta} needs d >= {delta}, got {d}")
        b = [round(k * d / delta) for k in range(delta + 1)]
        pieces = [(-(delta - k), b[k], b[k + 1]) for k in range(delta)]
        pieces += [(k + 1, d + b[k], d + b[k + 1]) for k in range(delta)]
    parts = [_from_frame(v, off, lo, hi, edge) for off, lo, hi in pieces]
    return torch.cat(parts + [v[..., 2 * d:]], dim=-1)


# --------------------------------------------------------------------------- STCA


class SpaceTimeCrossAttention(nn.Module):
    """Space-time Cross Attention (stdd §3, Eq. 1-7, Figure 3a): the ``attention`` hook of a block.

    No parameters: it reuses the block's pretrained ``ln_1`` and ``attn``. Per block (official
    ``STCrossAttentionBlock.forward``):

    1. spatial path: z = x + MHSA(LN(x)) on every token (Eq. 1);
    2. WSM: keep N' patch tokens per frame with the phase-shifted window mask (Eq. 3-4); CLS and
       any extra tokens are kept and never mixed;
    3. for each temporal scale delta: MCM (Eq. 5/6), then MHSA(LN(mixed)) plus the short-cut
       (Eq. 7); the per-scale results are averaged;
    4. padding: the average fills the visible positions and the CLS token (and extra tokens);
       masked positions keep the spatial path; the MLP reads the spatial path and is short-cut
       with the padded tokens (Eq. 2, official ``x_pad + mlp(ln_2(x))``).

    With ``mask_ratio=0`` (WSM off) every patch is visible; with ``scales=()`` (MCM off) one
    unmixed pass is run. Both off gives exactly the pretrained block.

    Knobs the paper leaves open or states differently from the official code:
    ``shortcut``: ``mixed`` adds the mixed tokens (official ``x_mix + attention(ln_1(x_mix))``),
    ``frame`` adds the unmixed window-shifted tokens z_t (Eq. 7 as printed).
    ``query``: ``mixed`` = MHSA on the mixed tokens (Eq. 7, official); ``frame`` = queries from the
    frame's own (unmixed) tokens and keys/values from the mixed ones (X-ViT style).
    ``train_phase``: how mask phases vary while training: ``shift`` (a random start phase per clip,
    then t mod n: the periodic shift of Eq. 3; official ``spatial_repeat``), ``shuffle`` (those
    phases randomly permuted over frames, official ``temporal_shuffle``), ``fixed`` (as at
    evaluation). Evaluation always uses phase t mod n (deterministic).
    """

    needs_input = True

    def __init__(
        self,
        window: tuple[int, int] = (2, 2),
        mask_ratio: float = 0.5,
        scales: tuple[int, ...] = (1, 2),
        gamma: float = 1 / 32,
        mode: str = "continual",
        shortcut: str = "mixed",
        query: str = "mixed",
        train_phase: str = "shift",
        edge: str = "nearest",
    ) -> None:
        super().__init__()
        if mode not in MCM_MODES:
            raise ValueError(f"mode must be one of {MCM_MODES}, got {mode!r}")
        if shortcut not in STCA_SHORTCUTS:
            raise ValueError(f"shortcut must be one of {STCA_SHORTCUTS}, got {shortcut!r}")
        if query not in STCA_QUERIES:
            raise ValueError(f"query must be one of {STCA_QUERIES}, got {query!r}")
        if train_phase not in WSM_TRAIN_PHASES:
            raise ValueError(f"train_phase must be one of {WSM_TRAIN_PHASES}, got {train_phase!r}")
        n = window[0] * window[1]
        if not 0 <= masked_per_window(window, mask_ratio) < n:
            raise ValueError(f"mask_ratio={mask_ratio} must leave a visible token per window")
        self.window, self.mask_ratio = tuple(window), float(mask_ratio)
        self.masking = masked_per_window(window, mask_ratio) > 0
        self.scales = tuple(scales)
        if edge not in MCM_EDGES:
            raise ValueError(f"edge must be one of {MCM_EDGES}, got {edge!r}")
        self.gamma, self.mode, self.edge = gamma, mode, edge
        self.shortcut, self.query, self.train_phase = shortcut, query, train_phase
        self._tables: dict[tuple, torch.Tensor] = {}

    @property
    def phases(self) -> int:
        return self.window[0] * self.window[1] if self.masking else 1

    def _table(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        key = (grid, str(device))
        if key not in self._tables:
            if self.masking:
                table = visible_index_table(grid, self.window, self.mask_ratio)
            else:
                table = torch.arange(grid[0] * grid[1]).unsqueeze(0)
            self._tables[key] = table.to(device)
        return self._tables[key]

    def frame_phases(self, clips: int, num_frames: int, device: torch.device) -> torch.Tensor:
        """Mask phase of each frame: long [clips, T]."""
        n = self.phases
        t = torch.arange(num_frames, device=device)
        if not self.training or self.train_phase == "fixed" or n == 1:
            return (t % n).expand(clips, num_frames)
        start = torch.randint(n, (clips, 1), device=device)
        phases = (t + start) % n
        if self.train_phase == "shuffle":
            perm = torch.rand(clips, num_frames, device=device).argsort(dim=1)
            phases = phases.gather(1, perm)
        return phases

    def forward(self, block: nn.Module, y: torch.Tensor, num_frames: int,
                grid: tuple[int, int], x: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """y = ln_1(x) [B*T, L, W], x the block input -> (a, a_mlp): the residual stream becomes
        x + a (padded tokens), the MLP reads LN(x + a_mlp) (spatial path)."""
        if x is None:
            raise ValueError("SpaceTimeCrossAttention needs the pre-LayerNorm tokens (x=)")
        bt, _, width = y.shape
        clips = bt // num_frames
        num_patches = grid[0] * grid[1]
        spatial = block.attn(y, y, y, need_weights=False)[0]
        phases = self.frame_phases(clips, num_frames, y.device)
        idx = self._table(grid, y.device)[phases].reshape(bt, -1)
        kept = idx.shape[1]
        gidx = idx.unsqueeze(-1).expand(-1, -1, width)
        vis = x[:, 1:1 + num_patches].gather(1, gidx)
        cls, extra = x[:, :1], x[:, 1 + num_patches:]
        z = torch.cat([cls, vis, extra], dim=1)
        d = mixed_channels(width, self.gamma)
        q_frame = block.ln_1(z) if self.query == "frame" else None
        outs = []
        for delta in (self.scales or (0,)):
            if delta:
                mixed = channel_mix(vis.view(clips, num_frames, kept, width), delta, d, self.mode,
                                    self.edge)
                zm = torch.cat([cls, mixed.reshape(bt, kept, width), extra], dim=1)
            else:
                zm = z
            ym = block.ln_1(zm)
            q = ym if q_frame is None else q_frame
            a = block.attn(q, ym, ym, need_weights=False)[0]
            if delta and self.shortcut == "mixed":
                a = a + (zm - z)
            outs.append(a)
        a_bar = outs[0] if len(outs) == 1 else torch.stack(outs).mean(dim=0)
        dtype = torch.promote_types(spatial.dtype, a_bar.dtype)  # autocast: bf16 attn + fp32 x
        spatial, a_bar = spatial.to(dtype), a_bar.to(dtype)
        patches = spatial[:, 1:1 + num_patches].scatter(1, gidx, a_bar[:, 1:1 + kept])
        padded = torch.cat([a_bar[:, :1], patches, a_bar[:, 1 + kept:]], dim=1)
        return padded, spatial


class STCAPrompt(nn.Module):
    """Prompt-based adaptation (stdd Table 4, §4 "Effect of Space-time Cross Attention"): "only a
    MLP is tuned to transform tokens after Space-time Cross Attention into prompts prepended with
    visual tokens within each block". The ``message`` hook of a block: the MLP maps each frame's
    CLS token of the block input (the output of the previous block, i.e. after its STCA) to
    ``length`` prompt tokens that join this block's attention and are dropped before its MLP.
    Which tokens feed the MLP, the prompt count and the MLP's size are not given; the CLS token,
    ``length`` = 1 and a width/4 bottleneck (adapter convention) are this platform's choices.
    """

    def __init__(self, width: int, length: int = 1, hidden: int = 0) -> None:
        super().__init__()
        hidden = hidden or max(width // 4, 1)
        self.length = length
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.GELU(),
                                 nn.Linear(hidden, length * width))

    def forward(self, x: torch.Tensor, num_frames: int, grid: tuple[int, int]) -> torch.Tensor:
        """x [B*T, L, W] -> prompts [B*T, length, W]."""
        return self.net(x[:, 0]).view(x.shape[0], self.length, x.shape[-1])


# --------------------------------------------------------------------------- text prompts


def load_prompt_sets(path: str | Path | None = None, sets: str = "all") -> dict[str, list[str]]:
    """Read a prompt-set file: JSON mapping class name -> list of prompts, or -> {"spatial":
    [...], "temporal": [...]} (C^s and C^t of stdd §3). ``sets`` picks [S] (spatial), [T]
    (temporal) or [S]+[T] (all; Figure 4). A prompt may contain ``{}`` for the class name.
    Empty ``path`` = the shipped synthetic file. Errors name the file."""
    if sets not in PROMPT_SETS:
        raise PromptFileError(f"prompt sets must be one of {PROMPT_SETS}, got {sets!r}")
    file = Path(path) if path else DEFAULT_PROMPT_FILE
    try:
        raw = json.loads(file.read_text())
    except FileNotFoundError:
        raise PromptFileError(f"prompt file {str(file)!r} does not exist") from None
    except (OSError, json.JSONDecodeError) as err:
        raise PromptFileError(f"prompt file {str(file)!r} is not valid JSON: {err}") from None
    if not isinstance(raw, dict) or not raw:
        raise PromptFileError(f"prompt file {str(file)!r} must map class names to prompts")
    out: dict[str, list[str]] = {}
    for name, entry in raw.items():
        if isinstance(entry, list):
            if sets != "all":
                raise PromptFileError(
                    f"prompt file {str(file)!r}: class {name!r} has a plain list of prompts, so "
                    f"model.align_prompt_sets={sets!r} cannot pick spatial/temporal ones; use "
                    "{\"spatial\": [...], \"temporal\": [...]} or 'all'")
            prompts = entry
        elif isinstance(entry, dict):
            unknown = set(entry) - {"spatial", "temporal"}
            if unknown:
                raise PromptFileError(f"prompt file {str(file)!r}: class {name!r} has unknown "
                                      f"keys {sorted(unknown)}; use 'spatial' and 'temporal'")
            prompts = [p for key in _SET_KEYS[sets] for p in entry.get(key, [])]
        else:
            raise PromptFileError(f"prompt file {str(file)!r}: class {name!r} must map to a "
                                  "list of prompts or to {\"spatial\": [...], \"temporal\": [...]}")
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise PromptFileError(f"prompt file {str(file)!r}: class {name!r} has no "
                                  f"{'' if sets == 'all' else sets + ' '}prompts (or an empty one)")
        out[name] = [p.format(name) if "{}" in p else p for p in prompts]
    return out


def missing_classes(prompts: dict[str, list[str]], class_names: list[str]) -> list[str]:
    return [c for c in class_names if c not in prompts]


class PromptSets(nn.Module):
    """Spatiotemporal text prompts (stdd §3 "Extending Text Prompts with Refined Knowledge"):
    several prompts per class through the (frozen, cached) CLIP text tower.

    ``per_prompt=True`` returns the prompt-level features c_{k,j} as [C, K, D] for the Eq. 8
    head, zero-padded where a class has fewer than K prompts (the head ignores zero rows);
    ``False`` averages each class's normalised prompt features into [C, D] (a prompt ensemble,
    for the cosine head)."""

    def __init__(self, text: nn.Module, prompts: dict[str, list[str]], source: str = "",
                 per_prompt: bool = True, chunk: int = 256) -> None:
        super().__init__()
        self.text = text
        self.prompts = prompts
        self.source = source or str(DEFAULT_PROMPT_FILE)
        self.per_prompt = per_prompt
        self.chunk = chunk
        self._cache: dict[tuple[str, ...], torch.Tensor] = {}

    def _encode(self, names: tuple[str, ...]) -> torch.Tensor:
        missing = missing_classes(self.prompts, list(names))
        if missing:
            raise PromptFileError(
                f"prompt file {self.source!r} has no prompts for class(es) {missing} "
                f"(it covers {len(self.prompts)} classes)")
        sentences = [p for n in names for p in self.prompts[n]]
        feats = torch.cat([self.text.encode_tokens(self.text.tokenize(sentences[i:i + self.chunk]))
                           for i in range(0, len(sentences), self.chunk)])
        feats = F.normalize(feats.float(), dim=-1)
        counts = [len(self.prompts[n]) for n in names]
        k = max(counts)
        out = feats.new_zeros(len(names), k, feats.shape[-1])
        start = 0
        for c, count in enumerate(counts):
            out[c, :count] = feats[start:start + count]
            start += count
        if self.per_prompt:
            return out
        mean = out.sum(dim=1) / torch.tensor(counts, device=out.device, dtype=out.dtype)[:, None]
        return F.normalize(mean, dim=-1)

    def forward(self, class_names: list[str], ctx: object = None) -> torch.Tensor:
        key = tuple(class_names)
        trainable = getattr(self.text, "trainable", False)
        if trainable and torch.is_grad_enabled():
            return self._encode(key)
        cached = self._cache.get(key)
        if cached is None or cached.device != self.text.device or trainable:
            with torch.no_grad():
                cached = self._encode(key)
            if not trainable:
                self._cache[key] = cached
        return cached


# --------------------------------------------------------------------------- Eq. 8


def alignment_scores(frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Frame-to-prompt alignment S_{n,k} (stdd Eq. 8): frames [B, T, D], text [C, K, D] or
    [C, D] (K = 1) -> [B, C], the mean of

    S^v2t = 1/T sum_t max_j z_t . c_kj   and   S^t2v = 1/K sum_j max_t z_t . c_kj

    on L2-normalised features. Zero rows of ``text`` are padding and are ignored."""
    if text.dim() == 2:
        text = text.unsqueeze(1)
    if text.dim() != 3:
        raise ValueError(f"text must be [C, D] or [C, K, D], got {tuple(text.shape)}")
    z = F.normalize(frames.float(), dim=-1)
    valid = text.float().norm(dim=-1) > 0  # [C, K]
    c = F.normalize(text.float(), dim=-1)
    sims = torch.einsum("btd,ckd->btck", z, c)
    v2t = sims.masked_fill(~valid, float("-inf")).amax(dim=-1).mean(dim=1)
    t2v = (sims.amax(dim=1) * valid).sum(dim=-1) / valid.sum(dim=-1).clamp(min=1)
    return (v2t + t2v) / 2


class FramePromptAlignment(nn.Module):
    """Head scoring classes by Eq. 8 over the frames (``ctx.frames``, after any refiner) and the
    class prompts, scaled by CLIP's temperature (official: ``logit_scale.exp() * sims``); used for
    training (Eq. 9, cross-entropy) and zero-shot inference. No pooling: the pooled video
    embedding is ignored. Text of shape [C, K, D] is prompt-level.

    Text of shape [C, D] (one feature per class, e.g. category templates) is scored with
    ``single``: ``v2t`` = the mean over frames of the frame-class cosine, S^v2t of Eq. 8, what
    the official code computes for a 2-D class-feature matrix; ``eq8`` = Eq. 8 with K = 1 (the
    mean of that and the best frame's cosine)."""

    def __init__(self, single: str = "v2t") -> None:
        super().__init__()
        if single not in ALIGN_SINGLE:
            raise ValueError(f"single must be one of {ALIGN_SINGLE}, got {single!r}")
        self.single = single

    def forward(self, video: torch.Tensor, text: torch.Tensor, ctx: object,
                logit_scale: torch.Tensor) -> torch.Tensor:
        frames = getattr(ctx, "frames", None)
        if frames is None:
            frames = video.unsqueeze(1)
        if text.dim() == 2 and self.single == "v2t":
            z = F.normalize(frames.float(), dim=-1)
            sims = torch.einsum("btd,cd->btc", z, F.normalize(text.float(), dim=-1))
            return logit_scale.exp() * sims.mean(dim=1)
        return logit_scale.exp() * alignment_scores(frames, text)


# --------------------------------------------------------------------------- knobs


@dataclass
class STDDKnobs:
    """STDD (stdd §3); knob names start with stca_, wsm_, mcm_, stdd_, align_."""

    stca: bool = False
    """Space-time Cross Attention (stdd §3, Eq. 1-7): WSM -> MCM -> MHSA with the block's own
    attention -> padding -> short-cut, inside the ViT blocks; adds no parameters."""
    stca_blocks: str = "all"
    """Blocks with STCA, 1-based (``all``, ``1-12``, ``1,3,5``); stdd §3: "within each ViT
    block"."""
    wsm: bool = True
    """Window Shift Masking sub-toggle of ``stca`` (stdd Table 4 "WSM"); off = every patch
    token is visible and mixed at its own position."""
    wsm_w1: int = 2
    """Window height w1 in patches (stdd §4: "w1 = w2 = 2")."""
    wsm_w2: int = 2
    """Window width w2 in patches (stdd §4: "w1 = w2 = 2")."""
    wsm_ratio: float = 0.5
    """Mask ratio r, floor(r*w1*w2) tokens dropped per window (stdd §4: "a mask ratio of
    50%")."""
    wsm_train_phase: str = "shift"
    """Mask phases while training: shift (random start phase per clip, then periodic shift with
    t: Eq. 3; official spatial_repeat) | shuffle (those phases permuted over frames: official
    temporal_shuffle) | fixed. Evaluation always uses phase t mod w1*w2 (deterministic; the
    official code also shuffles at evaluation, not copied)."""
    mcm: bool = True
    """Multi-scale Channel Mixing sub-toggle of ``stca`` (stdd Table 4 "MCM")."""
    mcm_gamma: float = 0.03125
    """gamma of d_delta = gamma * D channels mixed from each side (Eq. 5); D/32 as the official
    README runs it (MODEL.CHANNEL_FOLD 32; code default 64)."""
    mcm_scales: str = "1,2"
    """Temporal scales delta, averaged (stdd §4: "temporal scales to [+-1, +-2]"; official
    TEMPORAL_SCALE [1,2])."""
    mcm_mode: str = "continual"
    """separate (Eq. 5) | continual (Eq. 6; Table 4 best; what the official code does)."""
    mcm_edge: str = "nearest"
    """What a frame near the clip's ends mixes in where t +- k lies outside the clip (the paper
    does not say): nearest (official: the end frame on that side, e.g. t - 1 for t - 2 at t = 1;
    zeros only with no frame on that side) | zero."""
    stca_shortcut: str = "mixed"
    """Short-cut of the per-scale MHSA: mixed (official ``x_mix + attention(ln_1(x_mix))``) |
    frame (the unmixed tokens z_t, Eq. 7 as printed)."""
    stca_query: str = "mixed"
    """Queries of the per-scale MHSA: mixed (MHSA on the mixed tokens, Eq. 7 and official) |
    frame (queries from the frame's own tokens, keys/values mixed; X-ViT style)."""
    stdd_adaptation: str = ""
    """stdd Table 4: "" (keep model.trainable_blocks / train_visual_proj) | frozen (no visual
    weight trains) | prompt (frozen backbone, per-block prompt MLP) | full (every visual
    weight, "fully-tuned"). Non-empty values override model.trainable_blocks (0 or all) and
    model.train_visual_proj."""
    stdd_prompt_len: int = 1
    """Prompt tokens per frame and block in prompt-based adaptation (not given in stdd)."""
    stdd_prompt_hidden: int = 0
    """Hidden width of the prompt MLP; 0 = ViT width / 4 (not given in stdd)."""
    st_aug: bool = False
    """Spatiotemporal text augmentation (stdd §3): several prompts per class read from
    ``align_prompt_file`` replace the template (the ASKG/LLM step that writes them is out of
    scope). With ``align`` the head sees every prompt, else their features are averaged."""
    align: bool = False
    """Frame-to-prompt alignment head (stdd Eq. 8): mean of frame->prompt and prompt->frame
    max-similarities over the frame features, no pooling; also used at inference."""
    align_prompt_file: str = ""
    """JSON file (class name -> list of prompts, or -> {"spatial": [...], "temporal": [...]})
    read by ``st_aug``; empty = the shipped synthetic file
    (vidablate/assets/prompts/synthetic_st_prompts.json)."""
    align_prompt_sets: str = "all"
    """Prompts used by ``st_aug``: all ([S]+[T]) | spatial ([S]) | temporal ([T]) (stdd
    Figure 4)."""
    align_single: str = "v2t"
    """How ``align`` scores one text feature per class (no ``st_aug``): v2t (the mean over
    frames of the frame-class cosine, S^v2t of Eq. 8: STDD's official code for a 2-D class
    matrix) | eq8 (Eq. 8 with K = 1)."""
    ct_templates: bool = False
    """Category templates of Table 3 ("CT"): the class text is the normalised mean over the 28
    templates of STDD's official code (``CT_TEMPLATES``) instead of ``prompt_template``."""


def validate(ctx: ValidationContext) -> None:
    """STDD knobs (stdd §3): STCA geometry against the backbone, adaptation, prompt file."""
    m, d, spec = ctx.model, ctx.data, ctx.spec
    for name, allowed in (("wsm_train_phase", WSM_TRAIN_PHASES), ("mcm_mode", MCM_MODES),
                          ("mcm_edge", MCM_EDGES),
                          ("stca_shortcut", STCA_SHORTCUTS), ("stca_query", STCA_QUERIES),
                          ("stdd_adaptation", ADAPTATIONS), ("align_prompt_sets", PROMPT_SETS),
                          ("align_single", ALIGN_SINGLE)):
        if getattr(m, name) not in allowed:
            raise ConfigError(f"model.{name} must be one of {allowed}, got {getattr(m, name)!r}")
    if m.wsm_w1 < 1 or m.wsm_w2 < 1:
        raise ConfigError(f"model.wsm_w1 and model.wsm_w2 must be >= 1, got "
                          f"{m.wsm_w1}x{m.wsm_w2}")
    if not 0 <= m.wsm_ratio < 1:
        raise ConfigError(f"model.wsm_ratio must be in [0, 1), got {m.wsm_ratio}")
    if not 0 < m.mcm_gamma <= 0.5:
        raise ConfigError(f"model.mcm_gamma must be in (0, 0.5] (2*gamma*D channels are mixed), "
                          f"got {m.mcm_gamma}")
    if m.stdd_prompt_len < 1 or m.stdd_prompt_hidden < 0:
        raise ConfigError("model.stdd_prompt_len must be >= 1 and model.stdd_prompt_hidden >= 0")
    try:
        scales = parse_scales(m.mcm_scales)
    except ValueError as err:
        raise ConfigError(f"model.mcm_scales: {err}") from None
    if m.stca:
        window = (m.wsm_w1, m.wsm_w2)
        if m.wsm and masked_per_window(window, m.wsm_ratio) == 0:
            raise ConfigError(
                f"model.wsm_ratio={m.wsm_ratio} masks no token of a {m.wsm_w1}x{m.wsm_w2} window; "
                "raise it or turn model.wsm off")
        if m.mcm and max(scales) >= d.num_frames:
            raise ConfigError(f"model.mcm_scales={m.mcm_scales!r}: every scale must be below "
                              f"data.num_frames={d.num_frames}")
        if spec is not None:
            try:
                parse_block_spec(m.stca_blocks, spec.depth)
            except ValueError as err:
                raise ConfigError(f"model.stca_blocks: {err} (model.backbone={m.backbone!r})"
                                  ) from None
            gh, gw = spec.grid
            if m.wsm and (gh % m.wsm_w1 or gw % m.wsm_w2):
                raise ConfigError(
                    f"model.wsm_w1 x model.wsm_w2 = {m.wsm_w1}x{m.wsm_w2} windows do not tile the "
                    f"{gh}x{gw} patch grid of model.backbone={m.backbone!r}")
            channels = mixed_channels(spec.width, m.mcm_gamma)
            need = max(scales) if m.mcm_mode == "continual" else 1
            if m.mcm and channels < need:
                raise ConfigError(
                    f"model.mcm_gamma={m.mcm_gamma} mixes {channels} channel(s) of the ViT width "
                    f"{spec.width} per side; model.mcm_mode={m.mcm_mode!r} at scale "
                    f"{max(scales)} needs >= {need}")
    if m.stdd_adaptation == "prompt" and ctx.on("block_messages"):
        raise ConfigError(f"model.stdd_adaptation='prompt' and model.{ctx.on('block_messages')[0]}"
                          " both add per-block message tokens; turn one off")
    if m.ct_templates and ctx.on("prompts"):
        raise ConfigError(f"model.ct_templates sets hand-crafted templates, but "
                          f"model.{ctx.on('prompts')[0]} replaces them; turn one off")
    if m.align:
        if ctx.on("pool"):
            raise ConfigError(f"model.align scores frames against prompts without pooling "
                              f"(stdd Eq. 8), so model.{ctx.on('pool')[0]} would be ignored; "
                              "turn one off")
        if ctx.on("per_video_text"):
            raise ConfigError(f"model.align needs class-level text ([C, D] or [C, K, D]); "
                              f"model.{ctx.on('per_video_text')[0]} makes it per video; turn one "
                              "off")
    if m.st_aug:
        try:
            prompts = load_prompt_sets(m.align_prompt_file, m.align_prompt_sets)
        except PromptFileError as err:
            raise ConfigError(f"model.align_prompt_file: {err}") from None
        missing = missing_classes(prompts, ctx.class_names or [])
        if missing:
            raise ConfigError(
                f"model.align_prompt_file={m.align_prompt_file or str(DEFAULT_PROMPT_FILE)!r}"
                f" has no prompts for class(es) {missing}")


def build(cfg: STDDKnobs, parts: Parts) -> None:
    """Space-time cross attention hooks, the Table 4 adaptation modes (prompt MLP message
    hooks), spatiotemporal prompt sets, frame-prompt alignment head (Eq. 8)."""
    if cfg.stca:
        stca = dict(
            window=(cfg.wsm_w1, cfg.wsm_w2), mask_ratio=cfg.wsm_ratio if cfg.wsm else 0.0,
            scales=parse_scales(cfg.mcm_scales) if cfg.mcm else (), gamma=cfg.mcm_gamma,
            mode=cfg.mcm_mode, edge=cfg.mcm_edge, shortcut=cfg.stca_shortcut,
            query=cfg.stca_query,
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
        sets = load_prompt_sets(cfg.align_prompt_file, cfg.align_prompt_sets)
        source, per_prompt = cfg.align_prompt_file, cfg.align
        parts.set_prompts(lambda text: PromptSets(text, sets, source, per_prompt=per_prompt),
                          "model.st_aug")
    if cfg.ct_templates:
        if parts.templates is not None:
            raise ValueError("model.ct_templates sets the template list, and another one is on")
        parts.templates = list(CT_TEMPLATES)
    if cfg.align:
        parts.set_head(FramePromptAlignment(cfg.align_single), "model.align")


PAPER = Paper(
    name="stdd", knobs=STDDKnobs, build=build, validate=validate,
    claims={"stca": "tower", "st_aug": "prompts", "align": "head", "ct_templates": "templates"},
    temporal={"stca mcm (stdd)": {"stca": True, "wsm": False},
              "stca wsm+mcm (stdd)": {"stca": True}},
    attention={"stca": True},
    # two temporal scales: three attentions (spatial + one per scale) replace each block's one
    attention_calls=lambda spec: 2 * spec.depth,
)
