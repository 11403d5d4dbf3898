"""Behaviour tests for the STDD modules (stdd §3): Window Shift Masking (Eq. 3-4), Multi-scale
Channel Mixing (Eq. 5-6), Space-time Cross Attention (Eq. 1-2, 7) against a direct port of the
official block, the Table 4 adaptation modes, prompt-set files and the frame-to-prompt alignment
score (Eq. 8)."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
import torch.nn.functional as F

# isort: split
from vidablate.backbone import VideoBlock
from vidablate.config import ConfigError, ExperimentConfig, ModelConfig
from vidablate.data.synthetic import class_names
from vidablate.model import build_model
from vidablate.modules.stdd import (
    CT_TEMPLATES,
    DEFAULT_PROMPT_FILE,
    FramePromptAlignment,
    PromptFileError,
    PromptSets,
    SpaceTimeCrossAttention,
    alignment_scores,
    channel_mix,
    load_prompt_sets,
    parse_scales,
    visible_index_table,
    window_masks,
)
from vidablate.stages import StageContext

B, T = 2, 4
NAMES = ["red square moving left", "red square moving right", "green circle moving up"]


def _video(seed: int = 7, frames: int = T) -> torch.Tensor:
    return torch.randn(B, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _block(width: int = 32, heads: int = 4, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    blk = open_clip.transformer.ResidualAttentionBlock(width, heads, batch_first=True)
    with torch.no_grad():  # non-trivial LayerNorm affine so LN(mix(x)) != mix(LN(x)) matters
        for ln in (blk.ln_1, blk.ln_2):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.normal_(0, 0.1)
    return blk.eval()


# --------------------------------------------------------------------------- WSM (Eq. 3-4)


def test_window_masks_roll_like_the_official_mask_list():
    masks = window_masks((2, 2), 0.5)
    base = [1, 1, 0, 0]
    for p in range(4):  # official: mask_list[-offset:] + mask_list[:-offset]
        expected = base[-p:] + base[:-p] if p else base
        assert masks[p].tolist() == [bool(v) for v in expected]
    assert window_masks((2, 2), 0.25).sum(dim=1).tolist() == [1, 1, 1, 1]


def test_visible_index_table_on_a_4x4_grid():
    table = visible_index_table((4, 4), (2, 2), 0.5)
    assert table.shape == (4, 8)  # N' = (4/2 * 4/2) windows * (r=0.5 * 4) tokens
    # phase 0 masks the top row of every 2x2 window; window-major order
    assert table[0].tolist() == [4, 5, 6, 7, 12, 13, 14, 15]
    # phase 1 masks positions 1, 2 of each window -> keeps (0,0) and (1,1)
    assert table[1].tolist() == [0, 5, 2, 7, 8, 13, 10, 15]
    # every window keeps exactly 2 tokens, and phases 0 and 2 are complementary
    assert sorted(table[0].tolist() + table[2].tolist()) == list(range(16))
    for row in table:
        windows = [(i // 4 // 2, i % 4 // 2) for i in row.tolist()]
        assert all(windows.count(w) == 2 for w in set(windows))


def test_visible_index_table_rejects_untileable_grid():
    with pytest.raises(ValueError, match="not divisible"):
        visible_index_table((5, 4), (2, 2), 0.5)


def test_mask_phase_shifts_with_t_in_eval_and_training():
    stca = SpaceTimeCrossAttention(train_phase="shift").eval()
    assert stca.frame_phases(3, 6, torch.device("cpu")).tolist() == [[0, 1, 2, 3, 0, 1]] * 3
    stca.train()
    torch.manual_seed(0)
    phases = stca.frame_phases(64, 6, torch.device("cpu"))
    assert ((phases[:, 1:] - phases[:, :-1]) % 4 == 1).all()  # periodic shift, Eq. 3
    assert len(set(phases[:, 0].tolist())) > 1  # random start phase per clip
    shuffled = SpaceTimeCrossAttention(train_phase="shuffle").train()
    ph = shuffled.frame_phases(64, 4, torch.device("cpu"))
    assert all(sorted(r) == [0, 1, 2, 3] for r in ph.tolist())  # a permutation of the phases
    assert not ((ph[:, 1:] - ph[:, :-1]) % 4 == 1).all()
    fixed = SpaceTimeCrossAttention(train_phase="fixed").train()
    assert fixed.frame_phases(2, 5, torch.device("cpu")).tolist() == [[0, 1, 2, 3, 0]] * 2


# --------------------------------------------------------------------------- MCM (Eq. 5-6)


def _frame(v, t):
    return v[:, t] if 0 <= t < v.shape[1] else torch.zeros_like(v[:, 0])


def test_separate_mixing_is_eq5():
    torch.manual_seed(0)
    v = torch.randn(2, 6, 3, 16)
    d, delta = 3, 2
    out = channel_mix(v, delta, d, "separate", edge="zero")
    for t in range(6):
        expected = torch.cat([_frame(v, t - delta)[..., :d], _frame(v, t + delta)[..., d:2 * d],
                              v[:, t, :, 2 * d:]], dim=-1)
        assert torch.equal(out[:, t], expected)


def test_continual_mixing_is_eq6():
    torch.manual_seed(0)
    v = torch.randn(2, 6, 3, 16)
    d = 4  # d/delta = 2 channels per neighbour
    out = channel_mix(v, 2, d, "continual", edge="zero")
    for t in range(6):
        expected = torch.cat([_frame(v, t - 2)[..., 0:2], _frame(v, t - 1)[..., 2:4],
                              _frame(v, t + 1)[..., 4:6], _frame(v, t + 2)[..., 6:8],
                              v[:, t, :, 8:]], dim=-1)
        assert torch.equal(out[:, t], expected)


def test_modes_agree_at_scale_one_and_zero_fill_the_ends():
    torch.manual_seed(0)
    v = torch.randn(1, 4, 2, 8)
    a, b = channel_mix(v, 1, 2, "separate"), channel_mix(v, 1, 2, "continual")
    assert torch.equal(a, b)
    assert (a[:, 0, :, :2] == 0).all() and (a[:, -1, :, 2:4] == 0).all()
    assert torch.equal(a[..., 4:], v[..., 4:])


def _official_channel_mixing(x: torch.Tensor, scale: int, fold: int) -> torch.Tensor:
    """Official ``STCrossAttentionBlock._channel_mixing`` on [B, T, N, D] tokens (no CLS)."""
    init_dim = x.size(-1) // fold
    d = init_dim
    x_mix = torch.zeros_like(x)
    x_mix[..., 2 * init_dim:] = x[..., 2 * init_dim:]
    for i in range(scale):
        x_mix[:, (i + 1):, :, :d] = x[:, :-(i + 1), :, :d]
        x_mix[:, :-(i + 1), :, (2 * init_dim - d):2 * init_dim] = \
            x[:, (i + 1):, :, (2 * init_dim - d):2 * init_dim]
        d //= 2
    return x_mix


def test_continual_mixing_matches_the_official_code():
    torch.manual_seed(0)
    v = torch.randn(2, 8, 3, 64)
    fold = 16  # d = 4
    assert torch.equal(channel_mix(v, 1, 4), _official_channel_mixing(v, 1, fold))
    ours, official = channel_mix(v, 2, 4), _official_channel_mixing(v, 2, fold)
    assert torch.equal(ours, official)  # the default edge rule is the official one
    # at t=1 / t=T-2 the official code leaves the t-1 / t+1 slice where zero-fill has zeros
    zero = channel_mix(v, 2, 4, edge="zero")
    assert torch.equal(zero[:, 2:-2], official[:, 2:-2])
    assert (zero[:, 1, :, :2] == 0).all() and torch.equal(official[:, 1, :, :2], v[:, 0, :, :2])


# --------------------------------------------------------------------------- STCA vs reference


def _reference_block(blk, x, t_len, grid, scales, gamma, mode="continual", edge="nearest"):
    """Direct port of the official ``STCrossAttentionBlock.forward`` at evaluation without the
    temporal shuffle (batch-first; 2x2 windows, r=0.5). Mixing: the official channel mixing
    (``edge="nearest"``, continual), or Eq. 5/6 written per frame with zeros beyond the clip."""
    bt, _, w = x.shape
    b = bt // t_len
    gh, gw = grid
    cells = (gh // 2) * (gw // 2)

    def attention(z):
        return blk.attn(z, z, z, need_weights=False)[0]

    def to_windows(p):  # [BT, P, W] -> [B, T, cells*4, W]
        return (p.reshape(b, t_len, gh // 2, 2, gw // 2, 2, w).permute(0, 1, 2, 4, 3, 5, 6)
                .reshape(b, t_len, cells * 4, w))

    def from_windows(p):
        return (p.reshape(b, t_len, gh // 2, gw // 2, 2, 2, w).permute(0, 1, 2, 4, 3, 5, 6)
                .reshape(bt, gh * gw, w))

    mask_list = [1, 1, 0, 0]
    masks = torch.stack([torch.tensor(mask_list[-(i % 4):] + mask_list[:-(i % 4)] if i % 4
                                      else mask_list) for i in range(t_len)]).bool()
    sel = masks[None, :, None, :].expand(b, t_len, cells, 4).reshape(b, t_len, cells * 4)
    win = to_windows(x[:, 1:])
    x_mask = win[~sel].reshape(b, t_len, -1, w)
    cls = x[:, :1]
    d = int(w * gamma)
    agg = []
    for delta in scales:
        mixed = torch.empty_like(x_mask)
        if edge == "nearest":
            mixed = _official_channel_mixing(x_mask, delta, round(1 / gamma))
        for t in range(t_len if edge == "zero" else 0):
            def fr(s, lo, hi, t=t):
                return x_mask[:, s, :, lo:hi] if 0 <= s < t_len else \
                    torch.zeros_like(x_mask[:, 0, :, lo:hi])
            if mode == "separate":
                parts = [fr(t - delta, 0, d), fr(t + delta, d, 2 * d)]
            else:
                step = d // delta
                parts = [fr(t - delta + k, k * step, (k + 1) * step) for k in range(delta)]
                parts += [fr(t + k + 1, d + k * step, d + (k + 1) * step) for k in range(delta)]
            mixed[:, t] = torch.cat(parts + [x_mask[:, t, :, 2 * d:]], dim=-1)
        z = torch.cat([cls, mixed.reshape(bt, -1, w)], dim=1)
        agg.append(z + attention(blk.ln_1(z)))
    avg = torch.stack(agg).mean(0)
    xs = x + attention(blk.ln_1(x))
    out = to_windows(xs[:, 1:]).clone()
    out[~sel] = avg[:, 1:].reshape(b, t_len, -1, w).reshape(-1, w)
    pad = torch.cat([avg[:, :1], from_windows(out)], dim=1)
    return pad + blk.mlp(blk.ln_2(xs))


@pytest.mark.parametrize(("scales", "mode", "edge"), [
    ((1, 2), "continual", "nearest"), ((1,), "continual", "nearest"), ((2,), "continual", "nearest"),
    ((1, 2), "continual", "zero"), ((1, 2), "separate", "zero")])
def test_stca_block_matches_the_official_block(scales, mode, edge):
    blk = _block()
    grid, t_len = (4, 4), 5
    x = torch.randn(2 * t_len, 17, 32, generator=torch.Generator().manual_seed(1))
    stca = SpaceTimeCrossAttention((2, 2), 0.5, scales, 1 / 8, mode, edge=edge).eval()
    ours = VideoBlock(blk, attention=stca)(x, t_len, grid)
    ref = _reference_block(blk, x, t_len, grid, scales, 1 / 8, mode, edge)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_stca_padding_cls_and_mlp_input():
    blk = _block()
    grid, t_len = (4, 4), 4
    x = torch.randn(2 * t_len, 17, 32, generator=torch.Generator().manual_seed(2))
    y = blk.ln_1(x)
    stca = SpaceTimeCrossAttention(gamma=1 / 8).eval()
    a, a_mlp = stca(blk, y, t_len, grid, x=x)
    spatial = blk.attn(y, y, y, need_weights=False)[0]
    assert torch.equal(a_mlp, spatial)  # the MLP reads the spatial path (Eq. 2)
    table = visible_index_table(grid, (2, 2), 0.5)
    for f in range(2 * t_len):
        t = f % t_len
        masked = sorted(set(range(16)) - set(table[t % 4].tolist()))
        # masked positions keep the spatial path; visible ones and CLS come from STCA
        assert torch.equal(a[f, 1 + torch.tensor(masked)], spatial[f, 1 + torch.tensor(masked)])
        assert not torch.allclose(a[f, 1 + table[t % 4]], spatial[f, 1 + table[t % 4]])
        assert not torch.allclose(a[f, 0], spatial[f, 0])


def test_stca_with_both_sub_toggles_off_is_the_pretrained_block():
    blk = _block()
    x = torch.randn(8, 17, 32, generator=torch.Generator().manual_seed(3))
    stca = SpaceTimeCrossAttention(mask_ratio=0.0, scales=())
    assert torch.equal(VideoBlock(blk, attention=stca)(x, 4, (4, 4)), blk(x))


def test_stca_variants_change_the_output_and_keep_extra_tokens():
    blk = _block()
    x = torch.randn(8, 19, 32, generator=torch.Generator().manual_seed(4))  # 2 extra tokens
    outs = {}
    for name, kw in {"default": {}, "frame_q": {"query": "frame"},
                     "frame_sc": {"shortcut": "frame"}, "no_wsm": {"mask_ratio": 0.0}}.items():
        stca = SpaceTimeCrossAttention(gamma=1 / 8, **kw).eval()
        outs[name] = VideoBlock(blk, attention=stca)(x, 4, (4, 4))
        assert outs[name].shape == x.shape
    for name in ("frame_q", "frame_sc", "no_wsm"):
        assert not torch.allclose(outs[name], outs["default"])


def test_stca_has_no_parameters_and_the_model_none_new(tiny_model):
    assert list(SpaceTimeCrossAttention().parameters()) == []
    base, stca = tiny_model.shared(train=False, distill=False), tiny_model.shared(train=False, stca=True, distill=False)  # teacher sizes differ
    assert sum(p.numel() for p in stca.parameters()) == sum(p.numel() for p in base.parameters())
    assert stca.param_groups()["new"] == []


# --------------------------------------------------------------------------- model level


def test_toggles_off_give_exactly_the_baseline(tiny_model):
    base = tiny_model.shared(train=False)
    off = tiny_model.shared(train=False, stca=False, st_aug=False, align=False, wsm=False, mcm_mode="separate",
                 mcm_gamma=0.25, align_prompt_sets="spatial", stdd_prompt_len=3)
    video = _video()
    a, b = base.encode_video(video), off.encode_video(video)
    assert torch.equal(a.video, b.video)
    assert torch.equal(base.logits_of(a, NAMES), off.logits_of(b, NAMES))


def test_stca_without_wsm_and_mcm_equals_the_baseline(tiny_model):
    video = _video()
    assert torch.equal(tiny_model.shared(train=False, stca=True, wsm=False, mcm=False).encode_video(video).video,
                       tiny_model.shared(train=False).encode_video(video).video)


@pytest.mark.parametrize("overrides", [{}, {"wsm": False}, {"mcm_mode": "separate"}])
def test_time_reversal_changes_stca_but_not_the_baseline(tiny_model, overrides):
    video = _video()
    base = tiny_model.shared(train=False)
    torch.testing.assert_close(base.encode_video(video.flip(1)).video,
                               base.encode_video(video).video, rtol=1e-5, atol=1e-5)
    model = tiny_model.shared(train=False, stca=True, **overrides)
    fwd, rev = model.encode_video(video).video, model.encode_video(video.flip(1)).video
    assert not torch.allclose(fwd, rev, atol=1e-4)


def test_evaluation_is_deterministic_training_masks_are_random():
    torch.manual_seed(0)
    model = build_model(ModelConfig(stca=True), num_frames=T)
    video = _video()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.encode_video(video).video, model.encode_video(video).video)
        model.train()
        outs = [model.encode_video(video).video for _ in range(6)]
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("mode", ["frozen", "prompt", "full"])
def test_adaptation_modes_set_what_trains(mode):
    torch.manual_seed(0)
    model = build_model(ModelConfig(stca=True, stdd_adaptation=mode, st_aug=True, align=True),
                        num_frames=T)
    groups = model.param_groups()
    visual = model.frame_encoder.visual
    if mode == "frozen":
        assert groups["clip_visual"] == [] and groups["new"] == []
        return
    if mode == "prompt":
        assert groups["clip_visual"] == []
        prompts = [vb.message for vb in model.frame_encoder.blocks]
        assert len(prompts) == 4 and all(p is not None for p in prompts)
        assert {id(p) for p in groups["new"]} == {id(p) for m in prompts for p in m.parameters()}
    else:
        assert groups["new"] == []
        assert {id(p) for p in groups["clip_visual"]} == {id(p) for p in visual.parameters()}
    model.train()
    logits, out = model(_video(), None, NAMES)
    model.loss(logits, out, torch.tensor([0, 2]))["loss"].backward()
    for name, params in groups.items():
        for p in params:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


def test_prompt_adaptation_prompts_are_per_frame_tokens(tiny_model):
    model = tiny_model.shared(train=False, stca=True, stdd_adaptation="prompt", stdd_prompt_len=3)
    prompt = model.frame_encoder.blocks[0].message
    x = torch.randn(8, 17, 64)
    assert prompt(x, 4, (4, 4)).shape == (8, 3, 64)
    assert prompt.net[0].out_features == 16  # width / 4


# --------------------------------------------------------------------------- prompt sets


def test_shipped_prompt_file_covers_the_synthetic_classes():
    raw = json.loads(DEFAULT_PROMPT_FILE.read_text())
    assert set(raw) == set(class_names(32))
    tok = open_clip.get_tokenizer("vidablate-tiny")
    for name, entry in raw.items():
        assert entry["spatial"] and entry["temporal"], name
        for p in entry["spatial"] + entry["temporal"]:
            assert len(tok.encode(p)) + 2 <= tok.context_length, p  # never truncated


def test_prompt_set_selection():
    s, t, st = (load_prompt_sets("", k) for k in ("spatial", "temporal", "all"))
    name = NAMES[0]
    assert st[name] == s[name] + t[name]
    assert len(s[name]) == 3 and len(t[name]) == 2


def test_prompt_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PromptFileError, match="bad.json"):
        load_prompt_sets(bad)
    with pytest.raises(PromptFileError, match="nope.json"):
        load_prompt_sets(tmp_path / "nope.json")
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"a {}": ["x"]}))
    with pytest.raises(PromptFileError, match="plain list"):
        load_prompt_sets(flat, "spatial")
    assert load_prompt_sets(flat, "all") == {"a {}": ["x"]}
    fmt = tmp_path / "fmt.json"
    fmt.write_text(json.dumps({"cat": ["a video of {}.", "a cat."]}))
    assert load_prompt_sets(fmt) == {"cat": ["a video of cat.", "a cat."]}


def test_prompt_sets_missing_class_error_names_file_and_class(tiny_model, tmp_path):
    path = tmp_path / "few.json"
    path.write_text(json.dumps({NAMES[0]: ["a video of red square moving left."]}))
    text = tiny_model.shared(train=False).text
    module = PromptSets(text, load_prompt_sets(path), str(path))
    with pytest.raises(PromptFileError, match=r"few\.json.*red square moving right"):
        module(NAMES)


def test_prompt_sets_features_and_padding(tiny_model, tmp_path):
    path = tmp_path / "p.json"
    sets = {NAMES[0]: ["a red square.", "a video of {}."], NAMES[1]: ["a video of {}."]}
    path.write_text(json.dumps(sets))
    text = tiny_model.shared(train=False).text
    loaded = load_prompt_sets(path)
    per = PromptSets(text, loaded, str(path), per_prompt=True)(NAMES[:2])
    mean = PromptSets(text, loaded, str(path), per_prompt=False)(NAMES[:2])
    enc = F.normalize(text.encode_tokens(text.tokenize(
        ["a red square.", f"a video of {NAMES[0]}.", f"a video of {NAMES[1]}."])), dim=-1)
    assert per.shape == (2, 2, 64)
    torch.testing.assert_close(per[0], enc[:2])
    torch.testing.assert_close(per[1, 0], enc[2])
    assert (per[1, 1] == 0).all()  # padding
    torch.testing.assert_close(mean[0], F.normalize(enc[:2].mean(0), dim=-1))
    torch.testing.assert_close(mean[1], enc[2])


# --------------------------------------------------------------------------- Eq. 8


def _eq8_loops(frames, prompts):
    """S = (S^v2t + S^t2v) / 2 of Eq. 8 with explicit loops; prompts: list per class of [K, D]."""
    z = F.normalize(frames, dim=-1)
    out = torch.zeros(frames.shape[0], len(prompts))
    for n in range(frames.shape[0]):
        for k, c in enumerate(prompts):
            c = F.normalize(c, dim=-1)
            s = torch.tensor([[float(z[n, t] @ c[j]) for j in range(len(c))]
                              for t in range(frames.shape[1])])
            v2t = s.max(dim=1).values.mean()
            t2v = s.max(dim=0).values.mean()
            out[n, k] = (v2t + t2v) / 2
    return out


def test_alignment_scores_are_eq8_and_ignore_padding():
    torch.manual_seed(0)
    frames = torch.randn(3, 5, 8)
    prompts = [torch.randn(4, 8), torch.randn(2, 8), torch.randn(1, 8)]
    padded = torch.zeros(3, 4, 8)
    for k, c in enumerate(prompts):
        padded[k, :len(c)] = c
    torch.testing.assert_close(alignment_scores(frames, padded), _eq8_loops(frames, prompts))
    single = torch.randn(3, 8)  # [C, D] = one prompt per class
    torch.testing.assert_close(alignment_scores(frames, single),
                               _eq8_loops(frames, [c[None] for c in single]))


def test_alignment_head_is_order_invariant_but_not_a_mean_pool():
    torch.manual_seed(0)
    frames, text = torch.randn(2, 4, 8), torch.randn(3, 2, 8)

    class Ctx:
        pass

    ctx = Ctx()
    ctx.frames = frames
    head = FramePromptAlignment()
    logits = head(frames.mean(1), text, ctx, torch.tensor(0.0))
    torch.testing.assert_close(logits, alignment_scores(frames, text))
    ctx.frames = frames.flip(1)
    torch.testing.assert_close(head(None, text, ctx, torch.tensor(0.0)), logits)


def test_full_model_logits_use_eq8_over_frames_and_prompts(tiny_model):
    model = tiny_model.shared(train=False, stca=True, st_aug=True, align=True)
    out = model.encode_video(_video())
    text = model.encode_text(NAMES, out.ctx)
    assert text.shape == (3, 5, 64)
    expected = model.logit_scale.exp() * alignment_scores(out.ctx.frames, text)
    torch.testing.assert_close(model.logits_of(out, NAMES), expected)
    # st_aug without align: one averaged feature per class through the cosine head
    ens = tiny_model.shared(train=False, st_aug=True)
    assert ens.encode_text(NAMES, out.ctx).shape == (3, 64)
    # align without st_aug: one template feature per class, scored as the official code
    # (mean over frames of the cosine); align_single=eq8 keeps Eq. 8 with K = 1
    one = tiny_model.shared(train=False, align=True)
    o = one.encode_video(_video())
    cos = F.normalize(o.ctx.frames, dim=-1) @ F.normalize(one.text(NAMES), dim=-1).t()
    torch.testing.assert_close(one.logits_of(o, NAMES), one.logit_scale.exp() * cos.mean(1))
    eq8 = tiny_model.shared(train=False, align=True, align_single="eq8")
    torch.testing.assert_close(
        eq8.logits_of(o, NAMES),
        eq8.logit_scale.exp() * alignment_scores(o.ctx.frames, eq8.text(NAMES)))


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(("overrides", "match"), [
    ({"stca": True, "wsm_w1": 3}, "wsm_w1"),
    ({"stca": True, "wsm_ratio": 0.2}, "masks no token"),
    ({"wsm_ratio": 1.0}, "wsm_ratio"),
    ({"mcm_mode": "both"}, "mcm_mode"),
    ({"mcm_scales": "1,x"}, "mcm_scales"),
    ({"mcm_scales": "1,1"}, "mcm_scales"),
    ({"stca": True, "mcm_scales": "1,8"}, "data.num_frames"),
    ({"stca": True, "mcm_gamma": 0.01}, "mcm_gamma"),
    ({"mcm_gamma": 0.6}, "mcm_gamma"),
    ({"stca": True, "stca_blocks": "0-3"}, "stca_blocks"),
    ({"stca_query": "x"}, "stca_query"),
    ({"stdd_adaptation": "lora"}, "stdd_adaptation"),
    ({"stdd_adaptation": "prompt", "cct": True}, "message"),
    ({"align": True, "sgam": True}, "sgam"),
    ({"align": True, "video_prompt": True}, "video_prompt"),
    ({"st_aug": True, "learnable_ctx": True}, "text prompts"),
    ({"st_aug": True, "align_prompt_file": "/no/such.json"}, "such.json"),
    ({"align": True, "linear_head": True}, "head"),
])
def test_config_validation(overrides, match):
    with pytest.raises(ConfigError, match=match):
        ExperimentConfig(model=ModelConfig(**overrides)).validate()


def test_config_checks_prompt_file_covers_the_classes(tmp_path):
    path = tmp_path / "part.json"
    path.write_text(json.dumps({c: ["a video of {}."] for c in class_names(16)}))
    cfg = ExperimentConfig(model=ModelConfig(st_aug=True, align_prompt_file=str(path)))
    with pytest.raises(ConfigError, match=r"part\.json.*red square growing"):
        cfg.validate()
    cfg.data.num_classes = 16
    cfg.data.base_classes = 8
    cfg.validate()


def test_parse_scales():
    assert parse_scales("1,2") == (1, 2)
    with pytest.raises(ValueError):
        parse_scales("0")


def test_one_feature_per_class_is_scored_as_the_official_code(tiny_model):
    """With [C, D] text (no prompt sets) the default head is the mean over frames of the
    frame-class cosine (STDD's official 2-D classifier); eq8 keeps Eq. 8 with K = 1."""
    frames = torch.randn(2, 4, 64, generator=torch.Generator().manual_seed(0))
    text = torch.randn(3, 64, generator=torch.Generator().manual_seed(1))
    ctx = StageContext(frames=frames)
    scale = torch.tensor(0.0)
    v2t = FramePromptAlignment()(frames.mean(1), text, ctx, scale)
    cos = F.normalize(frames, dim=-1) @ F.normalize(text, dim=-1).t()
    torch.testing.assert_close(v2t, cos.mean(dim=1))
    eq8 = FramePromptAlignment("eq8")(frames.mean(1), text, ctx, scale)
    torch.testing.assert_close(eq8, alignment_scores(frames, text))
    assert not torch.allclose(v2t, eq8)


def test_category_templates_are_the_official_28(tiny_model):
    model = tiny_model.shared(ct_templates=True, align=True, train=False)
    names = ["red square moving left", "blue triangle growing"]
    feats = []
    for template in CT_TEMPLATES:
        f = model.text.encode_tokens(model.text.tokenize([template.format(n) for n in names]))
        feats.append(F.normalize(f, dim=-1))
    expected = F.normalize(torch.stack(feats).mean(0), dim=-1)
    torch.testing.assert_close(model.text(names), expected)
    assert len(CT_TEMPLATES) == 28 and CT_TEMPLATES[-1] == "a demonstration of a person practicing {}."
    with pytest.raises(ConfigError, match="ct_templates"):
        ExperimentConfig(model=ModelConfig(ct_templates=True, st_aug=True)).validate()
