"""Behaviour tests for MotionPrompt (motionprompt §3): MMB (Eq. 4-6), MAP (Eq. 7 + motion
adapter), MCB (Eq. 2, SMA/SAA), their wiring into VideoCLIP, config validation and the
search spaces."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

# isort: split
from vidablate.config import ConfigError, DataConfig, ExperimentConfig, ModelConfig
from vidablate.model import MeanPool, StageContext, TemplatePrompts
from vidablate.modules.motionprompt import (
    TABLE1_PHRASES,
    MCBStage,
    MMBPool,
    MotionAdapter,
    MotionAwarePrompts,
    MotionModelingBlock,
    MultimodalCommunicationBlock,
    TransformerStream,
    difference_pairs,
    frame_differences,
    map_init_phrase,
)

D = 16  # embedding width for module-level tests
B, T = 2, 4  # clips and frames for model-level tests (tiny backbone: D = 64)
CLASSES = ["red square moving left", "blue circle growing", "cat"]




def _video(seed: int = 7, frames: int = T) -> torch.Tensor:
    return torch.randn(B, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _frames(seed: int = 3, b: int = 2, t: int = 5, d: int = D) -> torch.Tensor:
    return torch.randn(b, t, d, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- Eq. 4


@pytest.mark.parametrize(("t", "s"), [(8, 1), (8, 4), (8, 7), (5, 2), (2, 1)])
def test_difference_pairs_cover_steps_up_to_s(t, s):
    pairs = difference_pairs(t, s)
    # L = sum_{k=1}^{s} (T - k) (Eq. 5)
    assert len(pairs) == sum(t - k for k in range(1, s + 1))
    assert set(pairs) == {(i, j) for i in range(t) for j in range(t) if 0 < j - i <= s}
    assert pairs[: t - 1] == [(i, i + 1) for i in range(t - 1)]  # step 1 first


def test_difference_pairs_default_t8_s4_has_22():
    assert len(difference_pairs(8, 4)) == 7 + 6 + 5 + 4


def test_frame_differences_are_ij_pairs():
    frames = _frames(t=6)
    diffs = frame_differences(frames, 3)
    expected = torch.stack([frames[:, j] - frames[:, i] for i, j in difference_pairs(6, 3)], 1)
    assert torch.equal(diffs, expected)


@pytest.mark.parametrize("s", [0, 5, 9])
def test_frame_differences_reject_steps_outside_1_to_t_minus_1(s):
    with pytest.raises(ValueError, match="T-1"):
        frame_differences(_frames(t=5), s)


# --------------------------------------------------------------------------- transformer streams


def _post_ln_reference(layer: torch.nn.TransformerEncoderLayer, x: torch.Tensor) -> torch.Tensor:
    a = layer.self_attn(x, x, x, need_weights=False)[0]
    x = layer.norm1(x + a)
    return layer.norm2(x + layer.linear2(torch.relu(layer.linear1(x))))


def _pre_ln_reference(layer: torch.nn.TransformerEncoderLayer, x: torch.Tensor) -> torch.Tensor:
    y = layer.norm1(x)
    x = x + layer.self_attn(y, y, y, need_weights=False)[0]
    return x + layer.linear2(torch.relu(layer.linear1(layer.norm2(x))))


@pytest.mark.parametrize("norm_first", [False, True])
def test_stream_is_standard_transformer_layers(norm_first):
    torch.manual_seed(0)
    stream = TransformerStream(D, layers=2, heads=4, mlp_ratio=2.0, norm_first=norm_first)
    x = _frames(t=6)
    ref = _pre_ln_reference if norm_first else _post_ln_reference
    expected = ref(stream.layers[1], ref(stream.layers[0], x))
    torch.testing.assert_close(stream(x), expected, rtol=1e-5, atol=1e-5)
    assert stream.layers[0].linear1.out_features == 2 * D
    assert stream.layers[0].self_attn.num_heads == 4


def test_stream_layers_are_initialised_independently():
    torch.manual_seed(0)
    stream = TransformerStream(D, layers=2, heads=4)
    assert not torch.equal(stream.layers[0].linear1.weight, stream.layers[1].linear1.weight)


def test_stream_position_embedding_is_added_and_length_checked():
    torch.manual_seed(0)
    stream = TransformerStream(D, layers=1, heads=4, length=5)
    x = _frames(t=5)
    torch.testing.assert_close(stream(x), _post_ln_reference(stream.layers[0], x + stream.pos))
    with pytest.raises(ValueError, match="length 5"):
        stream(_frames(t=4))


def test_stream_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        TransformerStream(18, heads=4)
    with pytest.raises(ValueError, match="layer"):
        TransformerStream(D, layers=0, heads=4)


# --------------------------------------------------------------------------- MMB (Eq. 5-6)


def _mmb(**kw) -> MotionModelingBlock:
    torch.manual_seed(0)
    kw = {"dim": D, "num_frames": 5, "step": 3, "heads": 4, **kw}
    return MotionModelingBlock(**kw)


def test_mmb_video_is_avgpool_m_plus_avgpool_s():
    mmb = _mmb()
    frames = _frames()
    video, cue = mmb(frames)
    assert video.shape == (2, D) and cue.shape == (2, D)
    m = mmb.motion(frame_differences(frames, 3))  # M = T_m(D), [B, L, D]
    s = mmb.spatial(frames)  # S = T_s(I), [B, T, D]
    assert m.shape == (2, 4 + 3 + 2, D) and s.shape == (2, 5, D)
    torch.testing.assert_close(cue, m.mean(dim=1))
    torch.testing.assert_close(video, m.mean(dim=1) + s.mean(dim=1))


def test_mmb_spatial_only_is_the_baseline_pool():
    full, spatial = _mmb(), _mmb(motion=False)
    assert spatial.motion is None
    n_stream = sum(p.numel() for p in spatial.spatial.parameters())
    assert sum(p.numel() for p in full.parameters()) == 2 * n_stream
    assert sum(p.numel() for p in spatial.parameters()) == n_stream
    frames = _frames()
    video, cue = spatial(frames)
    torch.testing.assert_close(video, spatial.spatial(frames).mean(dim=1))
    # the cue for MAP falls back to AvgPool of the raw differences of Eq. 4
    torch.testing.assert_close(cue, frame_differences(frames, 3).mean(dim=1))


def test_mmb_motion_stream_sees_time_reversal():
    mmb = _mmb()
    frames = _frames()
    video, cue = mmb(frames)
    rev_video, rev_cue = mmb(frames.flip(1))
    assert not torch.allclose(video, rev_video, atol=1e-4)
    assert not torch.allclose(cue, rev_cue, atol=1e-4)
    # reversal negates the set of differences (I_j - I_i -> I_i - I_j)
    rev = frame_differences(frames.flip(1), 3)
    torch.testing.assert_close(rev.sum(1), -frame_differences(frames, 3).sum(1))


@pytest.mark.parametrize("pos_emb", [False, True])
def test_spatial_only_order_sensitivity_follows_pos_emb(pos_emb):
    spatial = _mmb(motion=False, pos_emb=pos_emb)
    frames = _frames()
    same = torch.allclose(spatial(frames)[0], spatial(frames.flip(1))[0], atol=1e-5)
    assert same != pos_emb


def test_mmb_pos_emb_lengths():
    mmb = _mmb(pos_emb=True)
    assert mmb.spatial.pos.shape == (5, D)
    assert mmb.motion.pos.shape == (len(difference_pairs(5, 3)), D)
    assert _mmb().spatial.pos is None


def test_mmb_rejects_bad_step_and_frame_count():
    with pytest.raises(ValueError, match="s=5"):
        _mmb(step=5)
    with pytest.raises(ValueError, match="s=0"):
        _mmb(step=0)
    with pytest.raises(ValueError, match="T=5"):
        _mmb()(_frames(t=6))


def test_mmb_gradients_reach_both_streams():
    mmb = _mmb(pos_emb=True)
    video, cue = mmb(_frames())
    (video * _frames(seed=9, t=1)[:, 0]).sum().backward()
    for name, p in mmb.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert mmb.motion.layers[0].linear1.weight.grad.abs().sum() > 0
    assert mmb.spatial.layers[0].linear1.weight.grad.abs().sum() > 0


def test_mmb_pool_adapter_returns_motion_cue():
    mmb = _mmb()
    frames = _frames()
    pooled = MMBPool(mmb)(frames, StageContext())
    video, cue = mmb(frames)
    assert torch.equal(pooled.video, video) and torch.equal(pooled.motion, cue)
    assert pooled.weights is None


# --------------------------------------------------------------------------- MAP (§3.3)


def test_map_init_phrase_follows_table1():
    assert map_init_phrase(3) == "human action of"  # §3.3's example for H = 3
    assert map_init_phrase(4) == "a human action of"
    assert map_init_phrase(5) == "a common human action of"
    assert map_init_phrase(2) == "" and map_init_phrase(7) == ""
    assert map_init_phrase(5, "a popular human action of") == "a popular human action of"


@pytest.mark.parametrize("length", [3, 4, 5])
def test_map_context_starts_at_the_phrase_embeddings(tiny_model, length):
    model = tiny_model.shared(map=True, map_length=length)
    prompts = model.prompts
    assert isinstance(prompts, MotionAwarePrompts)
    assert prompts.context.shape == (length, model.text.width)
    expected = model.text.context_init(TABLE1_PHRASES[length], length)
    assert torch.equal(prompts.context.detach(), expected)


def test_map_random_init_when_no_table1_phrase(tiny_model):
    model = tiny_model.shared(map=True, map_length=2)
    ctx = model.prompts.context.detach()
    assert ctx.shape == (2, model.text.width)
    assert 0.005 < ctx.std().item() < 0.05  # N(0, 0.02), CoOp


def test_map_explicit_phrase_and_too_short_phrase(tiny_model):
    model = tiny_model.shared(map=True, map_length=5, map_init="the common human action of")
    expected = model.text.context_init("the common human action of", 5)
    assert torch.equal(model.prompts.context.detach(), expected)
    with pytest.raises(ValueError, match="fewer than H=5"):
        MotionAwarePrompts(model.text, 5, "human action of", motion_dim=64)


def test_map_zero_init_equals_the_hand_crafted_prompt(tiny_model):
    # with the adapter's last layer zeroed, MAP(H=5) starts exactly as hand-crafted prompt C
    model = tiny_model.shared(map=True, map_length=5, map_zero_init=True)
    hand = tiny_model.shared(prompt_template="a common human action of {}.")
    video = _video()
    out = model.encode_video(video)
    text = model.encode_text(CLASSES, out.ctx)
    assert text.shape == (B, len(CLASSES), 64)
    reference = hand.text(CLASSES)
    for b in range(B):
        torch.testing.assert_close(text[b], reference, rtol=1e-4, atol=1e-5)


def test_map_adds_the_adapter_output_to_every_vector(tiny_model):
    model = tiny_model.shared(map=True, map_length=4, map_activation="gelu", map_hidden=8)
    prompts = model.prompts
    net = prompts.adapter.net
    assert isinstance(net[1], torch.nn.GELU) and net[0].out_features == 8
    cue = torch.randn(B, 64)
    delta = net[2](F.gelu(net[0](cue)))  # linear -> activation -> linear
    expected = prompts.context[None] + delta[:, None]
    torch.testing.assert_close(prompts.context_vectors(cue), expected)


def test_map_default_adapter_squeezes_to_d_over_16(tiny_model):
    model = tiny_model.shared(map=True)
    net = model.prompts.adapter.net
    assert net[0].in_features == 64 and net[0].out_features == 64 // 16
    assert isinstance(net[1], torch.nn.ReLU)
    assert net[2].out_features == model.text.width


def test_map_text_depends_on_the_motion_cue(tiny_model):
    model = tiny_model.shared(map=True)
    frames = torch.randn(B, T, 64)
    a = model.prompts(CLASSES, StageContext(frames=frames, motion=torch.randn(B, 64)))
    b = model.prompts(CLASSES, StageContext(frames=frames, motion=torch.randn(B, 64)))
    assert a.shape == (B, len(CLASSES), 64)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(B, len(CLASSES)))
    assert not torch.allclose(a, b, atol=1e-4)


def test_map_uses_mmb_cue_and_falls_back_to_frame_differences(tiny_model):
    with_mmb = tiny_model.shared(map=True, mmb=True)
    out = with_mmb.encode_video(_video())
    assert out.ctx.motion is not None
    assert with_mmb.prompts.motion_cue(out.ctx) is out.ctx.motion

    alone = tiny_model.shared(map=True, mmb_step=2)
    out = alone.encode_video(_video())
    assert out.ctx.motion is None
    expected = frame_differences(out.ctx.frames, 2).mean(dim=1)
    torch.testing.assert_close(alone.prompts.motion_cue(out.ctx), expected)


def test_motion_adapter_rejects_unknown_activation():
    with pytest.raises(ValueError, match="swish"):
        MotionAdapter(D, 4, D, "swish")


# --------------------------------------------------------------------------- MCB (§3.4)


def _mcb(prenorm: bool = True) -> MultimodalCommunicationBlock:
    torch.manual_seed(0)
    return MultimodalCommunicationBlock(D, heads=4, prenorm=prenorm)


@pytest.mark.parametrize("prenorm", [True, False])
def test_mcb_is_parallel_cross_attention_with_residuals(prenorm):
    mcb = _mcb(prenorm)
    text = F.normalize(torch.randn(3, D), dim=-1)
    video = torch.randn(2, D) * 5
    tokens = torch.randn(2, 4, D)
    new_text, new_video = mcb(text, video, tokens)
    tb = text.expand(2, 3, D)
    ln = (lambda m, x: m(x)) if prenorm else (lambda m, x: x)
    kv = ln(mcb.sma_kv, tokens)
    sma = mcb.sma(ln(mcb.sma_q, tb), kv, kv)[0]
    tkv = ln(mcb.saa_kv, tb)
    saa = mcb.saa(ln(mcb.saa_q, video[:, None]), tkv, tkv)[0][:, 0]
    torch.testing.assert_close(new_text, tb + sma)  # T' = T + SMA(T, V, V)
    torch.testing.assert_close(new_video, video + saa)  # V' = V + SAA(V, T, T)
    assert isinstance(mcb.sma_q, torch.nn.LayerNorm if prenorm else torch.nn.Identity)


def test_mcb_accepts_shared_or_per_video_text():
    mcb = _mcb()
    text, video = torch.randn(3, D), torch.randn(2, D)
    shared = mcb(text, video)
    per_video = mcb(text.expand(2, 3, D).clone(), video)
    assert shared[0].shape == (2, 3, D) and shared[1].shape == (2, D)
    torch.testing.assert_close(shared[0], per_video[0])
    torch.testing.assert_close(shared[1], per_video[1])
    with pytest.raises(ValueError, match="C, K, D"):
        mcb(torch.randn(3, 2, D), video)


def test_mcb_pooled_video_gives_every_class_the_same_prefix():
    # with V a single key, SMA's softmax is 1: the text prefix depends on V only (Eq. 2)
    mcb = _mcb()
    text, video = torch.randn(3, D), torch.randn(2, D)
    new_text, _ = mcb(text, video)
    prefix = new_text - text
    torch.testing.assert_close(prefix, prefix[:, :1].expand_as(prefix))
    assert not torch.allclose(prefix[0], prefix[1])


def test_mcb_stage_frames_mode_reads_ctx_frames():
    mcb = _mcb()
    text, video = torch.randn(3, D), torch.randn(2, D)
    ctx_a = StageContext(frames=torch.randn(2, 4, D))
    ctx_b = StageContext(frames=torch.randn(2, 4, D))
    pooled, frames = MCBStage(mcb), MCBStage(mcb, use_frames=True)
    assert torch.equal(pooled(text, video, ctx_a)[0], pooled(text, video, ctx_b)[0])
    assert not torch.allclose(frames(text, video, ctx_a)[0], frames(text, video, ctx_b)[0])
    torch.testing.assert_close(frames(text, video, ctx_a)[0], mcb(text, video, ctx_a.frames)[0])


# --------------------------------------------------------------------------- wiring in VideoCLIP


def test_toggles_off_is_exactly_the_baseline(tiny_model):
    base = tiny_model.shared()
    off = tiny_model.shared(mmb=False, map=False, mcb=False, mmb_step=2, mmb_heads=2, map_length=3,
                 map_init="a popular human action of", mcb_heads=4, mcb_video="frames")
    assert isinstance(off.pool, MeanPool) and isinstance(off.prompts, TemplatePrompts)
    assert off.cross_modal is None and off.param_groups()["new"] == []
    video = _video()
    a, out_a = base(video, None, CLASSES)
    b, out_b = off(video, None, CLASSES)
    assert torch.equal(a, b)
    assert torch.equal(out_b.video, out_b.frames.mean(dim=1))


@pytest.mark.parametrize(("mmb", "map_", "mcb"), list(itertools.product([False, True], repeat=3)))
def test_toggles_build_their_stages(tiny_model, mmb, map_, mcb):
    model = tiny_model.shared(mmb=mmb, map=map_, mcb=mcb)
    assert isinstance(model.pool, MMBPool if mmb else MeanPool)
    assert isinstance(model.prompts, MotionAwarePrompts if map_ else TemplatePrompts)
    assert isinstance(model.cross_modal, MCBStage) == mcb
    logits, out = model(_video(), None, CLASSES)
    assert logits.shape == (B, len(CLASSES)) and torch.isfinite(logits).all()
    assert (out.ctx.motion is not None) == mmb


@pytest.mark.parametrize("mcb_video", ["pooled", "frames"])
def test_one_backward_reaches_every_new_parameter(tiny_model, mcb_video):
    model = tiny_model(mmb=True, map=True, mcb=True, mcb_video=mcb_video, mmb_pos_emb=True,
                   trainable_blocks=0, train_visual_proj=False, distill=False)
    logits, out = model(_video(), None, CLASSES)
    model.loss(logits, out, torch.tensor([0, 2]))["loss"].backward()
    groups = model.param_groups()
    assert groups["clip_visual"] == []  # CLIP frozen (motionprompt §4.1)
    new = {id(p) for p in groups["new"]}
    expected = {id(p) for p in itertools.chain(
        model.pool.parameters(), model.cross_modal.parameters(),
        [model.prompts.context], model.prompts.adapter.parameters())}
    assert new == expected
    for p in groups["new"]:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    for module in (model.pool.mmb.motion, model.pool.mmb.spatial, model.prompts.adapter,
                   model.cross_modal.mcb.sma, model.cross_modal.mcb.saa):
        assert any(p.grad.abs().sum() > 0 for p in module.parameters()), module
    assert model.prompts.context.grad.abs().sum() > 0


def test_eval_without_grad_matches_training_forward(tiny_model):
    # nn.TransformerEncoderLayer takes a fused fast path in eval/no-grad; dropout is 0
    model = tiny_model(mmb=True, map=True, mcb=True, mcb_video="frames")
    video = _video()
    train_logits = model(video, None, CLASSES)[0]
    model.eval()
    with torch.no_grad():
        eval_logits = model(video, None, CLASSES)[0]
    torch.testing.assert_close(eval_logits, train_logits.detach(), rtol=1e-4, atol=1e-4)


def test_baseline_is_spatial_only_and_not_temporal(tiny_model):
    model = tiny_model.shared(mmb=True, mmb_spatial_only=True)
    assert model.pool.mmb.motion is None
    video = _video()
    out = model.encode_video(video)
    torch.testing.assert_close(out.video, model.pool.mmb.spatial(out.frames).mean(dim=1))
    # one spatial transformer without position embeddings pools frames as a set
    torch.testing.assert_close(model.encode_video(video.flip(1)).video, out.video,
                               rtol=1e-5, atol=1e-5)


def test_time_reversal(tiny_model):
    video = _video()
    rev = video.flip(1)
    base = tiny_model.shared()
    torch.testing.assert_close(base.encode_video(rev).video, base.encode_video(video).video,
                               rtol=1e-5, atol=1e-6)

    mmb = tiny_model.shared(mmb=True)
    assert not torch.allclose(mmb.encode_video(rev).video, mmb.encode_video(video).video,
                              atol=1e-4)

    # MAP alone: the pooled video is still the frame mean, the per-video prompts are not
    map_only = tiny_model.shared(map=True)
    a, out_a = map_only(video, None, CLASSES)
    b, out_b = map_only(rev, None, CLASSES)
    torch.testing.assert_close(out_a.video, out_b.video, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a, b, atol=1e-4)

    full = tiny_model.shared(mmb=True, map=True, mcb=True)
    assert not torch.allclose(full(video, None, CLASSES)[0], full(rev, None, CLASSES)[0],
                              atol=1e-4)

    # MCB alone is not a temporal module: it sees the (order-free) mean or a set of frames
    for mode in ("pooled", "frames"):
        mcb = tiny_model.shared(mcb=True, mcb_video=mode)
        torch.testing.assert_close(mcb(video, None, CLASSES)[0], mcb(rev, None, CLASSES)[0],
                                   rtol=1e-4, atol=1e-4)


def test_knobs_reach_the_modules(tiny_model):
    model = tiny_model(num_frames=6, mmb=True, mmb_step=3, mmb_motion_layers=2, mmb_spatial_layers=3,
                   mmb_heads=4, mmb_mlp_ratio=2.0, mmb_dropout=0.1, mmb_norm_first=True,
                   mmb_pos_emb=True, map=True, map_length=3, map_hidden=12,
                   map_activation="tanh", mcb=True, mcb_heads=2, mcb_prenorm=False,
                   mcb_video="frames")
    mmb = model.pool.mmb
    assert mmb.step == 3 and mmb.num_frames == 6 and mmb.num_pairs == 5 + 4 + 3
    assert len(mmb.motion.layers) == 2 and len(mmb.spatial.layers) == 3
    layer = mmb.motion.layers[0]
    assert layer.self_attn.num_heads == 4 and layer.linear1.out_features == 128
    assert layer.norm_first and layer.dropout.p == 0.1
    assert mmb.motion.pos.shape == (12, 64)
    prompts = model.prompts
    assert prompts.context.shape[0] == 3 and prompts.fallback_step == 3
    assert prompts.adapter.net[0].out_features == 12
    assert isinstance(prompts.adapter.net[1], torch.nn.Tanh)
    mcb = model.cross_modal
    assert mcb.use_frames and mcb.mcb.sma.num_heads == 2
    assert isinstance(mcb.mcb.sma_q, torch.nn.Identity)


def test_build_clamps_step_to_the_clip_length(tiny_model):
    # validation rejects s > T-1; a direct build with fewer frames clamps it
    assert tiny_model(num_frames=3, mmb=True, mmb_step=4).pool.mmb.step == 2


# --------------------------------------------------------------------------- config validation


def _validate(model: dict, **data) -> None:
    ExperimentConfig(ModelConfig(**model), DataConfig(**data)).validate()


@pytest.mark.parametrize(("model", "data", "field"), [
    ({"mmb": True, "mmb_step": 8}, {"num_frames": 8}, "model.mmb_step"),
    ({"mmb": True, "mmb_step": 0}, {}, "model.mmb_step"),
    ({"map": True, "mmb_step": 4}, {"num_frames": 4}, "model.mmb_step"),
    ({"mmb_spatial_only": True}, {}, "model.mmb_spatial_only"),
    ({"mmb": True, "mmb_motion_layers": 0}, {}, "model.mmb_motion_layers"),
    ({"mmb": True, "mmb_spatial_layers": 0}, {}, "model.mmb_spatial_layers"),
    ({"mmb": True, "mmb_heads": 3}, {}, "model.mmb_heads"),
    ({"mmb": True, "mmb_mlp_ratio": 0.0}, {}, "model.mmb_mlp_ratio"),
    ({"mmb": True, "mmb_dropout": 1.0}, {}, "model.mmb_dropout"),
    ({"map": True, "map_length": 0}, {}, "model.map_length"),
    ({"map": True, "map_length": 5, "map_init": "human action of"}, {}, "model.map_init"),
    ({"map": True, "map_hidden": -1}, {}, "model.map_hidden"),
    ({"map": True, "map_activation": "swish"}, {}, "model.map_activation"),
    ({"mcb": True, "mcb_heads": 5}, {}, "model.mcb_heads"),
    ({"mcb": True, "mcb_video": "patches"}, {}, "model.mcb_video"),
    ({"mmb": True, "sgam": True}, {}, "model.sgam and model.mmb"),
])
def test_validation_names_the_field(model, data, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        _validate(model, **data)


def test_validation_accepts_the_paper_settings():
    _validate({"mmb": True, "map": True, "mcb": True})  # T = 8, s = 4, H = 5
    _validate({"mmb": True, "mmb_spatial_only": True})  # Baseline
    _validate({"mmb": True, "mmb_step": 3}, num_frames=4)  # Fig. 3(b) T = 4
    _validate({"map": True, "map_length": 3, "map_init": "a popular human action of"})
    _validate({"mmb_step": 40})  # s only matters when MMB or MAP is on


def test_paper_defaults():
    m = ModelConfig()
    assert not (m.mmb or m.map or m.mcb or m.mmb_spatial_only)
    assert m.mmb_step == 4 and m.map_length == 5  # §4.2
    assert m.mcb_video == "pooled" and DataConfig().num_frames == 8  # Eq. 2; §4.2 T = 8


# --------------------------------------------------------------------------- search spaces


SPACES = ["motionprompt_key_designs", "motionprompt_frames", "motionprompt_prompt_length",
          "motionprompt_temporal_step", "motionprompt_prompts", "motionprompt_map_init",
          "motionprompt_kinetics_5shot", "motionprompt_few_shot", "motionprompt_hpo"]


@pytest.mark.parametrize("name", SPACES)
def test_spaces_load_and_expand(name):
    from vidablate.sweep.space import expand, load_space

    space = load_space(name)
    assert space.paper == "motionprompt"
    trials = expand(space)
    assert trials
    for trial in trials:
        model = trial.experiment["model"]
        assert model["trainable_blocks"] == 0 and not model["train_visual_proj"]


def test_default_ffn_width_gives_table3s_baseline_parameters():
    """motionprompt Table 3: the Baseline (one spatial Transformer layer at D = 512) adds
    2.1 M parameters to CLIP; the default d_ff = 2D gives that, [40]'s 4D would give 3.2 M."""
    baseline = MotionModelingBlock(512, 8, motion=False)
    assert round(sum(p.numel() for p in baseline.parameters()) / 1e6, 1) == 2.1
    wide = MotionModelingBlock(512, 8, motion=False, mlp_ratio=4.0)
    assert round(sum(p.numel() for p in wide.parameters()) / 1e6, 1) == 3.2


def test_mcb_adds_one_prefix_to_every_class_and_reads_raw_text(tiny_model):
    """Eq. 2 with V one vector (Eq. 6): SMA has a single key, so T' - T is the same vector for
    every class; the text is the encoder's output, unnormalised (§3.1), and the attentions are
    standard cross attentions with residuals (§3.4: no LayerNorm)."""
    model = tiny_model.shared(mmb=True, mcb=True)
    mcb = model.cross_modal.mcb
    assert isinstance(mcb.sma_q, torch.nn.Identity) and not mcb.unit_text
    out = model.encode_video(_video())
    text = model.encode_text(CLASSES, out.ctx)
    assert text.norm(dim=-1).std() > 0  # raw features: norms differ per class
    t2, v2 = model.cross_modal(text, out.video, out.ctx)
    prefix = t2 - text.unsqueeze(0)
    torch.testing.assert_close(prefix, prefix[:, :1].expand_as(prefix), rtol=1e-5, atol=1e-5)
    expected = out.video + mcb.saa(out.video.unsqueeze(1), text.expand(2, -1, -1),
                                   text.expand(2, -1, -1), need_weights=False)[0][:, 0]
    torch.testing.assert_close(v2, expected)
