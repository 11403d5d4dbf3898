"""Behaviour tests for the OmniCLIP modules (omniclip §3): temporal encoding (Eq. 1), SPG
(§3.2, Eq. 6), PTA (§3.3, Eq. 4 and 7) with its placements (Table 11) and block ranges
(Table 10), the Eq. 5 frame MHA, their wiring in VideoCLIP and their config validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

# isort: split
from vidablate.config import ConfigError, ExperimentConfig, ModelConfig
from vidablate.modules.omniclip import (
    OmniTemporal,
    ParallelTemporalAdapter,
    PreChain,
    SelfPromptGenerator,
    TemporalEncoding,
    parse_blocks,
)
from vidablate.specs import vision_spec

B, T, W = 2, 4, 16
GRID = (4, 4)
L = 1 + GRID[0] * GRID[1]
FULL = dict(pta=True, spg=True, omni_temporal=True)


def _tokens(seed: int = 0, length: int = L, b: int = B, t: int = T) -> torch.Tensor:
    return torch.randn(b * t, length, W, generator=torch.Generator().manual_seed(seed))


def _video(seed: int = 7) -> torch.Tensor:
    return torch.randn(2, T, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _randomise_(module: torch.nn.Module, seed: int = 3) -> None:
    """Give zero-initialised weights (PTA Up, Eq. 5 out_proj, TE) random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad and p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


# --------------------------------------------------------------------------- block ranges


def test_parse_blocks_is_identity_on_the_papers_12_blocks():
    assert parse_blocks("1-12", 12) == list(range(12))
    assert parse_blocks("1-3", 12) == [0, 1, 2]
    assert parse_blocks("4-6, 10-12", 12) == [3, 4, 5, 9, 10, 11]
    assert parse_blocks("1,5,12", 12) == [0, 4, 11]


@pytest.mark.parametrize(("spec", "expected"), [
    ("1-3", [0]), ("4-6", [1]), ("7-9", [2]), ("10-12", [3]),
    ("1-6", [0, 1]), ("1-9", [0, 1, 2]), ("1-12", [0, 1, 2, 3]), ("2", [0]), ("5", [1]),
])
def test_parse_blocks_maps_table10_groups_onto_the_tiny_tower(spec, expected):
    assert parse_blocks(spec, 4) == expected


def test_parse_blocks_proportional_on_deeper_towers_and_direct_numbering():
    assert parse_blocks("1-3", 24) == list(range(6))
    assert parse_blocks("10-12", 24) == list(range(18, 24))
    assert parse_blocks("2-3", 4, ref_depth=0) == [1, 2]  # the backbone's own blocks


@pytest.mark.parametrize("spec", ["0-3", "1-13", "5-4", "a-b", "", " , ", "1-"])
def test_parse_blocks_rejects_bad_ranges(spec):
    with pytest.raises(ValueError):
        parse_blocks(spec, 4)


def test_parse_blocks_direct_numbering_checks_the_backbone_depth():
    with pytest.raises(ValueError, match="4 blocks"):
        parse_blocks("1-5", 4, ref_depth=0)


# --------------------------------------------------------------------------- TE (Eq. 1)


def test_temporal_encoding_adds_one_vector_per_frame_to_every_token():
    torch.manual_seed(0)
    te = TemporalEncoding(T, W, init_std=0.5)
    x = _tokens()
    out = te(x, T, GRID).view(B, T, L, W)
    expected = x.view(B, T, L, W) + te.embed[None, :, None, :]
    torch.testing.assert_close(out, expected)
    assert torch.equal(TemporalEncoding(T, W, init_std=0.0)(x, T, GRID), x)
    with pytest.raises(ValueError, match="T=4"):
        te(_tokens(t=3), 3, GRID)


# --------------------------------------------------------------------------- SPG (Eq. 6)


@pytest.mark.parametrize(("grid", "n"), [((4, 4), 4), ((14, 14), 49), ((3, 3), 4), ((2, 6), 3)])
def test_spg_makes_k_over_4_prompts(grid, n):
    spg = SelfPromptGenerator(W, projector=False)
    x = torch.randn(3, 1 + grid[0] * grid[1], W)
    assert SelfPromptGenerator.num_prompts(grid) == n
    out = spg(x, 1, grid)
    assert out.shape == (3, 1 + grid[0] * grid[1] + n, W)
    assert torch.equal(out[:, : x.shape[1]], x)  # CLS and patches untouched


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_spg_pools_2x2_windows_of_the_patch_grid(pool):
    spg = SelfPromptGenerator(W, pool=pool, projector=False)
    x = _tokens()
    grid = x[:, 1:].view(-1, 4, 4, W)
    reduce = (lambda t: t.mean(dim=(1, 2))) if pool == "avg" else (lambda t: t.amax(dim=(1, 2)))
    expected = torch.stack([reduce(grid[:, i:i + 2, j:j + 2]) for i in (0, 2) for j in (0, 2)],
                           dim=1)
    torch.testing.assert_close(spg(x, T, GRID)[:, L:], expected)


def test_spg_odd_grid_partial_windows_average_their_valid_cells():
    spg = SelfPromptGenerator(W, pool="avg", projector=False)
    x = torch.randn(2, 1 + 9, W)
    grid = x[:, 1:].view(2, 3, 3, W)
    r = spg.prompts(x, (3, 3))
    torch.testing.assert_close(r[:, 0], grid[:, :2, :2].mean(dim=(1, 2)))
    torch.testing.assert_close(r[:, 3], grid[:, 2, 2])  # the corner window holds one cell


def test_spg_projector_is_a_two_layer_mlp_on_the_pooled_tokens():
    torch.manual_seed(0)
    spg = SelfPromptGenerator(W, pool="avg", projector=True, hidden=8)
    plain = SelfPromptGenerator(W, pool="avg", projector=False)
    x = _tokens()
    lin1, act, lin2 = spg.projector
    assert (lin1.in_features, lin1.out_features, lin2.out_features) == (W, 8, W)
    pooled = plain(x, T, GRID)[:, L:]
    torch.testing.assert_close(spg(x, T, GRID)[:, L:], lin2(F.gelu(lin1(pooled))))
    assert SelfPromptGenerator(W).projector[0].out_features == W  # hidden 0 -> width


def test_spg_replace_regenerates_the_prompts_in_place():
    torch.manual_seed(0)
    spg = SelfPromptGenerator(W, projector=False, replace=True)
    x = _tokens(length=L + 4 + 2)  # CLS, 16 patches, 4 old prompts, 2 other extras
    out = spg(x, T, GRID)
    assert out.shape == x.shape
    assert torch.equal(out[:, :L], x[:, :L])
    assert torch.equal(out[:, L + 4:], x[:, L + 4:])
    torch.testing.assert_close(out[:, L:L + 4], spg.prompts(x, GRID))
    with pytest.raises(ValueError, match="no prompt tokens"):
        spg(_tokens(), T, GRID)


# --------------------------------------------------------------------------- PTA (Eq. 7)


def _pta(seed: int = 0, **kw) -> ParallelTemporalAdapter:
    torch.manual_seed(seed)
    kw = {"ratio": 0.5, "heads": 2, "zero_up": False, **kw}
    return ParallelTemporalAdapter(W, **kw)


def test_pta_matches_per_position_attention_over_time():
    pta = _pta(alpha_init=0.7)
    x = _tokens()
    out = pta(x, T, GRID)
    assert out.shape == x.shape and pta.hidden == 8
    xs = x.view(B, T, L, W)
    expected = torch.empty_like(xs)
    for b in range(B):
        for pos in range(L):
            seq = pta.down(pta.norm(xs[b, :, pos]))[None]  # [1, T, hidden]: one position
            a = pta.attn(seq, seq, seq)[0][0]
            expected[b, :, pos] = 0.7 * pta.up(a)
    torch.testing.assert_close(out, expected.view_as(x), rtol=1e-5, atol=1e-6)


def test_pta_mixes_time_not_space_nor_clips():
    pta = _pta()
    x = _tokens()
    base = pta(x, T, GRID).view(B, T, L, W)
    y = x.clone().view(B, T, L, W)
    y[0, 2, 5] += 3.0 * torch.randn(W)  # one token of one frame of clip 0
    out = pta(y.view_as(x), T, GRID).view(B, T, L, W)
    changed = (out - base).abs().amax(dim=-1) > 1e-6
    assert changed[0, :, 5].all()  # every frame at that position sees it
    changed[0, :, 5] = False
    assert not changed.any()  # other positions and the other clip do not


def test_pta_is_equivariant_to_frame_order():
    pta = _pta()
    x = _tokens()
    flip = x.view(B, T, L, W).flip(1).reshape_as(x)
    out = pta(flip, T, GRID).view(B, T, L, W).flip(1).reshape_as(x)
    torch.testing.assert_close(out, pta(x, T, GRID), rtol=1e-5, atol=1e-6)


def test_pta_default_init_is_a_zero_branch_that_can_learn():
    pta = ParallelTemporalAdapter(W, ratio=0.25, heads=2)
    assert pta.alpha.item() == 1.0
    x = _tokens()
    out = pta(x, T, GRID)
    assert torch.equal(out, torch.zeros_like(x))
    (out * torch.randn_like(out)).sum().backward()
    assert pta.up.weight.grad.abs().sum() > 0  # learning starts at step one


def test_pta_alpha_scales_the_branch_and_rezero_start_is_identity():
    pta = _pta(alpha_init=0.0)
    x = _tokens()
    assert torch.equal(pta(x, T, GRID), torch.zeros_like(x))
    with torch.no_grad():
        pta.alpha.fill_(2.0)
    torch.testing.assert_close(pta(x, T, GRID), 2.0 * pta.temporal(x, T))


def test_pta_rejects_bad_bottleneck_and_dead_init():
    with pytest.raises(ValueError, match="divisible"):
        ParallelTemporalAdapter(W, ratio=0.25, heads=3)
    with pytest.raises(ValueError, match="gradient"):
        ParallelTemporalAdapter(W, alpha_init=0.0, zero_up=True)


# --------------------------------------------------------------------------- Eq. 5 MHA


def test_omni_temporal_residual_starts_as_identity_and_literal_form_is_mha():
    torch.manual_seed(0)
    frames = torch.randn(B, T, W)
    res = OmniTemporal(W, heads=4, residual=True)
    assert torch.equal(res(frames), frames)
    lit = OmniTemporal(W, heads=4, residual=False)
    y = lit.norm(frames)
    torch.testing.assert_close(lit(frames), lit.attn(y, y, y)[0])
    _randomise_(res)
    y = res.norm(frames)
    torch.testing.assert_close(res(frames), frames + res.attn(y, y, y)[0])
    with pytest.raises(ValueError):
        OmniTemporal(W, heads=5)


def test_pre_chain_runs_hooks_in_order():
    torch.manual_seed(0)
    te, spg = TemporalEncoding(T, W, 1.0), SelfPromptGenerator(W, projector=False)
    x = _tokens()
    torch.testing.assert_close(PreChain(te, spg)(x, T, GRID), spg(te(x, T, GRID), T, GRID))


# --------------------------------------------------------------------------- in VideoCLIP


@torch.no_grad()
def test_toggles_off_is_exactly_the_baseline(tiny_model):
    video = _video()
    base = tiny_model().encode_video(video)
    off = tiny_model(pta_ratio=0.5, pta_blocks="1-3", pta_mode="cascade", spg_pool="max",
                 spg_projector=False, omni_heads=4, omni_residual=False, omni_te_std=1.0)
    assert all(not b.hooked for b in off.frame_encoder.blocks)
    assert len(off.refiners) == 0
    out = off.encode_video(video)
    assert torch.equal(out.video, base.video)
    assert torch.equal(out.frames, base.frames)


@pytest.mark.parametrize("mode", ["parallel", "cascade", "attn_parallel"])
@torch.no_grad()
def test_pta_and_eq5_start_as_the_baseline(tiny_model, mode):
    video = _video()
    base = tiny_model().encode_video(video).video
    model = tiny_model(pta=True, pta_mode=mode, omni_temporal=True, omni_te_std=0.0)
    torch.testing.assert_close(model.encode_video(video).video, base, rtol=1e-5, atol=1e-6)


def test_hooks_follow_pta_blocks_mode_and_spg(tiny_model):
    model = tiny_model(pta=True, pta_blocks="4-9", pta_mode="attn_parallel", spg=True,
                   omni_te=False)
    blocks = model.frame_encoder.blocks
    assert model.frame_encoder.split == 0  # SPG hooks block 0: no frozen prefix
    assert isinstance(blocks[0].pre, SelfPromptGenerator) and not blocks[0].pre.replace
    assert [b.adapter is not None for b in blocks] == [False, True, True, False]
    assert {b.adapter_mode for b in blocks if b.adapter is not None} == {"attn_parallel"}
    assert blocks[1].adapter.hidden == 16 and blocks[1].adapter.attn.num_heads == 4
    per_layer = tiny_model(spg=True, spg_per_layer=True).frame_encoder.blocks
    assert isinstance(per_layer[0].pre, PreChain)  # TE then SPG
    assert all(b.pre.replace for b in per_layer[1:])
    assert len(model.refiners) == 0


@torch.no_grad()
def test_spg_changes_the_output_and_prompts_stay_out_of_the_frame_feature(tiny_model):
    video = _video()
    base = tiny_model().encode_video(video)
    model = tiny_model(spg=True, omni_te=False)
    tokens = model.frame_encoder.prefix(video.flatten(0, 1))
    x = tokens
    for block in model.frame_encoder.blocks:
        x = block(x, T, model.frame_encoder.grid)
    assert x.shape[1] == tokens.shape[1] + 4  # the 4 prompts are carried to the end
    out = model.encode_video(video)
    assert out.frames.shape == base.frames.shape
    assert not torch.allclose(out.video, base.video)
    per_layer = tiny_model(spg=True, spg_per_layer=True, omni_te=False).encode_video(video)
    assert not torch.allclose(per_layer.video, out.video)


@torch.no_grad()
def test_time_reversal_baseline_invariant_omniclip_not(tiny_model):
    video = _video()
    base = tiny_model()
    torch.testing.assert_close(base.encode_video(video.flip(1)).video,
                               base.encode_video(video).video, rtol=1e-5, atol=1e-6)
    for kw in (dict(pta=True, pta_zero_up=False), dict(omni_temporal=True), dict(spg=True), FULL):
        model = tiny_model(**kw)
        a = model.encode_video(video).video
        b = model.encode_video(video.flip(1)).video
        assert not torch.allclose(a, b, rtol=1e-4, atol=1e-5), kw


@torch.no_grad()
def test_without_te_omniclip_cannot_tell_the_order(tiny_model):
    # PTA's attention and the Eq. 5 MHA have no positions and the pool averages, so Eq. 1's TE
    # is what carries the frame order.
    video = _video()
    model = tiny_model(**FULL, pta_zero_up=False, omni_te=False)
    _randomise_(model)
    torch.testing.assert_close(model.encode_video(video.flip(1)).video,
                               model.encode_video(video).video, rtol=1e-4, atol=1e-5)


def test_gradients_reach_every_new_parameter(tiny_model):
    model = tiny_model(**FULL, spg_per_layer=True, pta_zero_up=False)
    _randomise_(model)
    new = model.param_groups()["new"]
    names = {id(p): n for n, p in model.named_parameters()}
    omni = [n for n in names.values() if any(k in n for k in (".pre.", ".adapter.", "refiners"))]
    assert {id(p) for p in new} == {id(p) for n, p in model.named_parameters() if n in omni}
    logits, out = model(_video(), None, ["a", "b", "c"])
    model.loss(logits, out, torch.tensor([0, 2]))["loss"].backward()
    for p in new:
        assert p.grad is not None and p.grad.abs().sum() > 0, names[id(p)]


def test_default_init_gets_gradient_where_learning_starts(tiny_model):
    model = tiny_model(**FULL)
    logits, out = model(_video(), None, ["a", "b", "c"])
    model.loss(logits, out, torch.tensor([0, 2]))["loss"].backward()
    blocks = model.frame_encoder.blocks
    assert blocks[0].pre.hooks[0].embed.grad.abs().sum() > 0  # TE
    assert all(b.adapter.up.weight.grad.abs().sum() > 0 for b in blocks)
    assert model.refiners[0].attn.out_proj.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- config


def _validate(**model) -> None:
    ExperimentConfig(model=ModelConfig(**model)).validate()


def test_default_and_full_configs_validate():
    _validate()
    _validate(**FULL, pta_ratio=0.125)
    _validate(**FULL, pta_ratio=1.0, pta_blocks="1-3,10-12", pta_mode="cascade")
    tiny, vitb = vision_spec("vidablate-tiny"), vision_spec("ViT-B-16")
    assert (tiny.depth, tiny.width, tiny.heads) == (4, 64, 4)
    assert (vitb.depth, vitb.width, vitb.heads) == (12, 768, 12)


@pytest.mark.parametrize(("model", "match"), [
    (dict(pta=True, pta_blocks="1-13"), "model.pta_blocks"),
    (dict(pta=True, pta_blocks="0-3"), "model.pta_blocks"),
    (dict(pta=True, pta_blocks="x"), "model.pta_blocks"),
    (dict(pta=True, pta_blocks="1-5", pta_blocks_depth=0), "has 4 blocks"),
    (dict(pta=True, pta_ratio=0.0), "model.pta_ratio"),
    (dict(pta=True, pta_ratio=1.5), "model.pta_ratio"),
    (dict(pta=True, pta_ratio=0.25, pta_heads=3), "model.pta_heads"),
    (dict(pta=True, pta_mode="serial"), "model.pta_mode"),
    (dict(pta=True, pta_alpha_init=0.0), "model.pta_alpha_init"),
    (dict(pta=True, pta_blocks_depth=-1), "model.pta_blocks_depth"),
    (dict(spg=True, spg_pool="median"), "model.spg_pool"),
    (dict(spg=True, spg_hidden=-2), "model.spg_hidden"),
    (dict(omni_temporal=True, omni_heads=5), "model.omni_heads"),
    (dict(omni_temporal=True, omni_heads=0), "model.omni_heads"),
    (dict(omni_te_std=-0.1), "model.omni_te_std"),
])
def test_config_rejects_bad_values_naming_the_field(model, match):
    with pytest.raises(ConfigError, match=match):
        _validate(**model)


def test_config_allows_rezero_start_without_zero_up():
    _validate(pta=True, pta_alpha_init=0.0, pta_zero_up=False)
