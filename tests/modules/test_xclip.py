"""Behaviour tests for the X-CLIP modules (xclip §3): cross-frame communication (Eq. 7-9), the
multi-frame integration transformer (Eq. 6), the video-specific prompt (Eq. 10), and the
ablation baselines of §4.5 (Table 7 trainable branches, Table 8 linear head, Table 9 prompt
ensemble and learnable context)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

# isort: split
from vidablate.backbone import VideoBlock
from vidablate.config import ConfigError, DataConfig, ExperimentConfig, ModelConfig
from vidablate.model import StageContext
from vidablate.modules.xclip import (
    ENSEMBLE_TEMPLATES,
    CrossFrameMessage,
    LearnableContext,
    LinearHead,
    MultiFrameIntegration,
    VideoSpecificPrompt,
    auto_heads,
)
from vidablate.specs import parse_block_spec as parse_blocks

B, T = 2, 4
CLASSES = ["red square moving left", "red square moving right", "green circle growing"]
XCLIP = {"cct": True, "mit": True, "video_prompt": True}


pytestmark = pytest.mark.usefixtures("one_thread")


def _video(seed: int = 7) -> torch.Tensor:
    return torch.randn(B, T, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _mha(attn: nn.MultiheadAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
         ) -> torch.Tensor:
    """Multi-head attention written out from the module's weights ([N, S, E] batch first)."""
    e, h = attn.embed_dim, attn.num_heads
    wq, wk, wv = attn.in_proj_weight.split(e)
    bq, bk, bv = attn.in_proj_bias.split(e)

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], h, e // h).transpose(1, 2)

    qh, kh, vh = heads(q @ wq.T + bq), heads(k @ wk.T + bk), heads(v @ wv.T + bv)
    w = (qh @ kh.transpose(-1, -2) / math.sqrt(e // h)).softmax(-1)
    out = (w @ vh).transpose(1, 2).reshape(q.shape[0], q.shape[1], e)
    return out @ attn.out_proj.weight.T + attn.out_proj.bias


# --------------------------------------------------------------------------- block specs


def test_parse_blocks_is_one_based():
    assert parse_blocks("all", 4) == [0, 1, 2, 3]
    assert parse_blocks("1-12", 12) == list(range(12))
    assert parse_blocks("1,3", 4) == [0, 2]
    assert parse_blocks(" 2-3, 1 ", 4) == [0, 1, 2]
    for bad in ("0", "5", "3-2", "a", "1-x", ""):
        with pytest.raises(ValueError):
            parse_blocks(bad, 4)


# --------------------------------------------------------------------------- CCT (Eq. 7-9)


def test_cct_block_matches_equations_7_to_9(tiny_model):
    torch.manual_seed(0)
    model = tiny_model.shared(cct=True)
    blk = model.frame_encoder.blocks[1].block
    msg = CrossFrameMessage(64, 4)
    wrapped = VideoBlock(blk, message=msg)
    x = torch.randn(B * T, 17, 64)

    m = (x[:, 0] @ msg.fc.weight.T + msg.fc.bias).view(B, T, 64)  # linear on each CLS
    y = msg.ln(m)
    m_hat = (m + _mha(msg.attn, y, y, y)).reshape(B * T, 1, 64)  # Eq. 7, over the T messages
    h = blk.ln_1(torch.cat([x, m_hat], dim=1))
    z_hat = x + _mha(blk.attn, h, h, h)[:, :17]  # Eq. 8, message dropped afterwards
    z = z_hat + blk.mlp(blk.ln_2(z_hat))  # Eq. 9
    torch.testing.assert_close(wrapped(x, T, (4, 4)), z, rtol=1e-5, atol=1e-5)
    assert wrapped(x, T, (4, 4)).shape == x.shape  # the message token does not pass on


def test_message_comes_from_the_cls_token_only():
    torch.manual_seed(0)
    msg = CrossFrameMessage(64, 4)
    x = torch.randn(B * T, 17, 64)
    other = x.clone()
    other[:, 1:] = torch.randn(B * T, 16, 64)
    assert msg(x, T, (4, 4)).shape == (B * T, 1, 64)
    assert torch.equal(msg(x, T, (4, 4)), msg(other, T, (4, 4)))


def test_cct_hooks_every_block_by_default_and_knobs_select_blocks(tiny_model):
    model = tiny_model.shared(cct=True)
    fe = model.frame_encoder
    assert fe.split == 0
    assert all(isinstance(b.message, CrossFrameMessage) for b in fe.blocks)
    assert len({id(b.message) for b in fe.blocks}) == 4  # one message module per block
    assert fe.blocks[0].message.attn.num_heads == 4  # default: the ViT's heads

    some = tiny_model(cct=True, cct_blocks="3,4", cct_heads=2)
    fe = some.frame_encoder
    assert fe.split == 2  # blocks 1-2 (1-based) run as the frozen prefix
    assert [b.message is not None for b in fe.blocks] == [True, True]
    assert fe.blocks[0].message.attn.num_heads == 2


def test_cct_exchanges_information_across_frames_within_a_clip_only(tiny_model):
    video = _video()
    changed = video.clone()
    changed[0, 0] = torch.randn(3, 32, 32)  # only frame 0 of clip 0
    for cct in (False, True):
        model = tiny_model.shared(cct=cct)
        a = model.frame_encoder(video).frames
        b = model.frame_encoder(changed).frames
        assert torch.equal(a[1], b[1]), "clips must not talk to each other"
        assert torch.allclose(a[0, 1:], b[0, 1:], atol=1e-6) != cct


def test_cct_alone_is_frame_order_equivariant(tiny_model):
    # Eq. 7 has no temporal position encoding: reversing a clip reverses its frame features,
    # so CCT + mean pooling cannot tell a clip from its reversal (only MIT's e^temp can).
    model = tiny_model.shared(cct=True)
    video = _video()
    out, rev = model.encode_video(video), model.encode_video(video.flip(1))
    torch.testing.assert_close(rev.frames, out.frames.flip(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rev.video, out.video, rtol=1e-4, atol=1e-5)
    base = tiny_model.shared()
    assert not torch.allclose(out.frames, base.encode_video(video).frames, atol=1e-4)


# --------------------------------------------------------------------------- MIT (Eq. 6)


def test_mit_matches_equation_6_with_residual():
    torch.manual_seed(0)
    mit = MultiFrameIntegration(64, T, depth=2)
    frames = torch.randn(B, T, 64)
    x = frames + mit.pos
    for blk in mit.blocks:
        y = blk.ln_1(x)
        x = x + _mha(blk.attn, y, y, y)
        x = x + blk.mlp(blk.ln_2(x))
    torch.testing.assert_close(mit(frames), x + frames, rtol=1e-5, atol=1e-5)
    assert len(mit.blocks) == 2 and mit.blocks[0].attn.num_heads == 1  # D // 64
    assert mit.pos.shape == (1, T, 64)
    with pytest.raises(ValueError, match="T=4"):
        mit(torch.randn(B, T + 1, 64))


def test_mit_is_a_refiner_before_the_mean_pool(tiny_model):
    model = tiny_model.shared(mit=True)
    video = _video()
    out = model.encode_video(video)
    mit = model.refiners[0]
    assert isinstance(mit, MultiFrameIntegration) and len(mit.blocks) == 1
    torch.testing.assert_close(out.ctx.frames, mit(out.frames, out.ctx))
    torch.testing.assert_close(out.video, out.ctx.frames.mean(dim=1))


def test_time_reversal_baseline_invariant_mit_not(tiny_model):
    video = _video()
    base = tiny_model.shared()
    torch.testing.assert_close(base.encode_video(video.flip(1)).video,
                               base.encode_video(video).video, rtol=1e-5, atol=1e-6)
    for toggles in ({"mit": True}, XCLIP):
        model = tiny_model.shared(**toggles)
        a = model.encode_video(video).video
        b = model.encode_video(video.flip(1)).video
        assert not torch.allclose(a, b, atol=1e-4), toggles


def test_mit_with_sgam_pools_the_refined_frames(tiny_model):
    model = tiny_model.shared(mit=True, sgam=True)
    video = _video()
    imu = torch.randn(B, 6, 64, generator=torch.Generator().manual_seed(3))
    out = model.encode_video(video, imu)
    mit = model.refiners[0]
    assert isinstance(mit, MultiFrameIntegration)
    torch.testing.assert_close(out.ctx.frames, mit(out.frames, out.ctx))
    expected = torch.einsum("bn,bnd->bd", out.frame_weights, out.ctx.frames)
    torch.testing.assert_close(out.video, expected)


# --------------------------------------------------------------------------- prompt (Eq. 10)


def _reference_prompt(vsp: VideoSpecificPrompt, text: torch.Tensor, patches: torch.Tensor):
    if vsp.visual_ln is not None:  # official: own LayerNorm(W) and W->D projection per token
        ln = vsp.visual_ln
        patches = F.layer_norm(patches, patches.shape[-1:], ln.weight, ln.bias) @ vsp.visual_proj
    visual = vsp.norm(patches.mean(dim=1))  # z_bar: time-averaged patch tokens
    x = text
    for layer in vsp.layers:
        att, h = layer.cross_attn, layer.cross_attn.heads
        q = layer.norm1(x) @ att.q.weight.T
        k, v = visual @ att.k.weight.T, visual @ att.v.weight.T
        d = q.shape[-1] // h
        qh = q.view(*q.shape[:2], h, d).transpose(1, 2)
        kh = k.view(*k.shape[:2], h, d).transpose(1, 2)
        vh = v.view(*v.shape[:2], h, d).transpose(1, 2)
        w = (qh @ kh.transpose(-1, -2) / math.sqrt(d)).softmax(-1)
        a = (w @ vh).transpose(1, 2).reshape(q.shape) @ att.proj.weight.T + att.proj.bias
        x = x + a  # c_bar = c + MHSA(c, z_bar)
        x = x + layer.mlp(layer.norm2(x))  # c_tilde = c_bar + FFN(c_bar)
    return text + vsp.alpha * x  # c_hat = c + alpha * c_tilde


def test_video_prompt_matches_equation_10():
    torch.manual_seed(0)
    vsp = VideoSpecificPrompt(64, layers=2, heads=4)
    with torch.no_grad():
        vsp.alpha.uniform_(0.5, 1.5)  # exercise the per-channel scale
    text = torch.randn(B, 3, 64)
    patches = torch.randn(B, T, 16, 64)
    ctx = StageContext(patches=patches)
    torch.testing.assert_close(vsp(text, ctx), _reference_prompt(vsp, text, patches),
                               rtol=1e-5, atol=1e-5)
    # shared [C, D] text is broadcast to every video
    shared = torch.randn(3, 64)
    out = vsp(shared, ctx)
    assert out.shape == (B, 3, 64)
    torch.testing.assert_close(out, vsp(shared.expand(B, -1, -1), ctx))
    with pytest.raises(ValueError, match="B=2"):
        vsp(torch.randn(B + 1, 3, 64), ctx)


def test_video_prompt_alpha_init_and_defaults():
    vsp = VideoSpecificPrompt(512)
    assert vsp.alpha.shape == (512,) and torch.all(vsp.alpha == 0.1)
    assert len(vsp.layers) == 2 and vsp.layers[0].cross_attn.heads == 8  # D // 64
    assert auto_heads(64) == 1 and auto_heads(768) == 12 and auto_heads(64, 4) == 4


def test_video_prompt_in_the_model_depends_on_the_video(tiny_model):
    model = tiny_model.shared(video_prompt=True)
    assert model.frame_encoder.return_patches
    video = _video()
    out = model.encode_video(video)
    assert out.ctx.patches.shape == (B, T, 16, 64)
    text = model.encode_text(CLASSES, out.ctx)
    assert text.shape == (B, 3, 64)
    assert not torch.allclose(text[0], text[1], atol=1e-5)
    vsp = model.text_refiners[0]
    torch.testing.assert_close(text, _reference_prompt(vsp, model.text(CLASSES).expand(B, -1, -1),
                                                       out.ctx.patches), rtol=1e-5, atol=1e-5)


def test_video_prompt_with_zero_alpha_is_the_baseline(tiny_model):
    base = tiny_model.shared()
    model = tiny_model.shared(video_prompt=True, vprompt_alpha=0.0)
    video = _video()
    out = model.encode_video(video)
    text = model.encode_text(CLASSES, out.ctx)
    raw = base.text.encode_tokens(base.text.tokenize([base.text.template.format(c)
                                                      for c in CLASSES]))
    assert torch.equal(text, raw.expand(B, -1, -1))  # c + 0 * c_tilde = c, c unnormalised
    assert torch.equal(out.video, base.encode_video(video).video)
    # per-video text goes through einsum instead of a matmul: equal up to rounding
    torch.testing.assert_close(model(video, None, CLASSES)[0], base(video, None, CLASSES)[0],
                               rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- the whole X-CLIP


def test_toggles_off_give_exactly_the_baseline(tiny_model):
    base = tiny_model.shared()
    knobs = tiny_model.shared(cct_blocks="2", cct_heads=2, mit_depth=3, mit_heads=2, vprompt_layers=1,
                    vprompt_heads=2, vprompt_alpha=0.5, linear_head_classes=7,
                    learnable_ctx_length=4, learnable_ctx_init="a video of")
    video = _video()
    a, out_a = base(video, None, CLASSES)
    b, out_b = knobs(video, None, CLASSES)
    assert torch.equal(a, b) and torch.equal(out_a.video, out_b.video)
    assert not knobs.refiners and not knobs.text_refiners
    assert all(not blk.hooked for blk in knobs.frame_encoder.blocks)
    assert set(knobs.param_groups()) == {"clip_visual", "new"}
    assert knobs.param_groups()["new"] == []


def test_gradients_reach_every_new_parameter(tiny_model):
    model = tiny_model(**XCLIP, distill=False)
    logits, out = model(_video(), None, CLASSES)
    model.loss(logits, out, torch.tensor([0, 2]))["loss"].backward()
    new = model.param_groups()["new"]
    assert len(new) > 0
    for module in (model.refiners[0], model.text_refiners[0],
                   *(b.message for b in model.frame_encoder.blocks)):
        for p in module.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0
            assert any(p is q for q in new)


def test_table7_branches_follow_trainable_blocks_and_train_text(tiny_model):
    frozen = tiny_model(**XCLIP, distill=False, trainable_blocks=0, train_visual_proj=False)
    groups = frozen.param_groups()
    assert groups["clip_visual"] == [] and "clip_text" not in groups
    assert len(groups["new"]) > 0  # "the randomly initialized parameters are always finetuned"
    both = tiny_model(**XCLIP, distill=False, trainable_blocks=12, train_text=True)
    groups = both.param_groups()
    assert both.frame_encoder.full_finetune
    vis = both.frame_encoder.visual
    assert len(groups["clip_visual"]) == sum(1 for _ in vis.parameters())
    assert len(groups["clip_text"]) == len(both.text.text_parameters())


# --------------------------------------------------------------------------- Table 8


def test_linear_head_ignores_text_and_checks_the_class_count(tiny_model):
    model = tiny_model.shared(linear_head=True, linear_head_classes=3)
    head = model.head
    assert isinstance(head, LinearHead) and head.fc.out_features == 3
    video = _video()
    logits, out = model(video, None, CLASSES)
    torch.testing.assert_close(logits, head.fc(out.video))
    with pytest.raises(ValueError, match="closed-set"):
        model(video, None, CLASSES[:2])
    grads = torch.autograd.grad(logits.sum(), list(head.parameters()))
    assert all(g.abs().sum() > 0 for g in grads)


# --------------------------------------------------------------------------- Table 9


def test_prompt_ensemble_averages_the_16_templates(tiny_model):
    assert len(ENSEMBLE_TEMPLATES) == 16 and all("{}" in t for t in ENSEMBLE_TEMPLATES)
    model = tiny_model.shared(prompt_ensemble=True)
    assert model.text.templates == list(ENSEMBLE_TEMPLATES)
    text = model.text
    feats = []
    for template in ENSEMBLE_TEMPLATES:
        f = text.encode_tokens(text.tokenize([template.format(c) for c in CLASSES]))
        feats.append(F.normalize(f, dim=-1))
    expected = F.normalize(torch.stack(feats).mean(0), dim=-1)
    torch.testing.assert_close(model.encode_text(CLASSES, StageContext()), expected)
    base = tiny_model.shared()
    assert not torch.allclose(base.encode_text(CLASSES, StageContext()), expected, atol=1e-4)


def test_learnable_context_trains_and_initialises_from_words(tiny_model):
    model = tiny_model(learnable_ctx=True, learnable_ctx_length=6, learnable_ctx_init="a video of")
    prompts = model.prompts
    assert isinstance(prompts, LearnableContext) and prompts.context.shape == (6, 64)
    assert any(prompts.context is p for p in model.param_groups()["new"])
    words = model.text.context_init("a video of", 3)
    assert torch.equal(prompts.context.data[:3], words)
    assert prompts.context.data[3:].std() < 0.1  # N(0, 0.02) for the rest
    text = model.encode_text(CLASSES, StageContext())
    torch.testing.assert_close(text, model.text.encode_context(prompts.context, CLASSES))
    (grad,) = torch.autograd.grad(text.sum(), [prompts.context])
    assert grad.abs().sum() > 0
    # the class name must fit after the H vectors (tiny CLIP: 16 tokens)
    long = tiny_model(learnable_ctx=True, learnable_ctx_length=12)
    with pytest.raises(ValueError, match="learnable_ctx_length"):
        long.encode_text(["blue triangle turning counterclockwise"], StageContext())


# --------------------------------------------------------------------------- validation


def _check(data: DataConfig | None = None, **model) -> None:
    ExperimentConfig(model=ModelConfig(**model), data=data or DataConfig()).validate()


@pytest.mark.parametrize(("model", "match"), [
    ({"cct": True, "cct_blocks": "0-3"}, "cct_blocks"),
    ({"cct": True, "cct_blocks": "5"}, "cct_blocks"),
    ({"cct": True, "cct_heads": 3}, "cct_heads"),
    ({"mit": True, "mit_heads": 3}, "mit_heads"),
    ({"video_prompt": True, "vprompt_heads": 5}, "vprompt_heads"),
    ({"mit_depth": 0}, "mit_depth"),
    ({"vprompt_layers": 0}, "vprompt_layers"),
    ({"cct_heads": -1}, "cct_heads"),
    ({"learnable_ctx": True, "learnable_ctx_length": 14}, "learnable_ctx_length"),
    ({"learnable_ctx": True, "prompt_ensemble": True}, "prompt_ensemble.*learnable_ctx"),
])
def test_invalid_xclip_configs_name_the_field(model, match):
    with pytest.raises(ConfigError, match=match):
        _check(**model)


def test_linear_head_needs_the_closed_set_protocol():
    with pytest.raises(ConfigError, match=r"linear_head.*data\.protocol"):
        _check(linear_head=True)
    closed = DataConfig(protocol="closed_set")
    _check(closed, linear_head=True, cct=True, mit=True)
    with pytest.raises(ConfigError, match="linear_head_classes=8.*data.num_classes=32"):
        _check(closed, linear_head=True, linear_head_classes=8)
    for toggle in ("video_prompt", "prompt_ensemble", "learnable_ctx", "train_text"):
        with pytest.raises(ConfigError, match=f"linear_head.*{toggle}"):
            _check(closed, linear_head=True, **{toggle: True})


def test_valid_xclip_configs_pass():
    _check(**XCLIP, cct_blocks="1-2,4", cct_heads=2, mit_heads=2, vprompt_heads=4)
    _check(learnable_ctx=True, learnable_ctx_length=8, video_prompt=True)
    _check(prompt_ensemble=True, video_prompt=True, mit=True, sgam=True)


def _angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(torch.acos(F.cosine_similarity(a, b, dim=-1).clamp(-1, 1)))


def test_the_prompt_turns_raw_text_less_than_unit_text_at_init(tiny_model):
    """Eq. 10 adds alpha * c_tilde to the text tower's output c; c_tilde's attention and FFN
    terms do not scale with c, so unit-length text is turned more than CLIP's raw text."""
    video = _video()
    angles = {}
    for mode in ("raw", "unit"):
        model = tiny_model.shared(video_prompt=True, vprompt_text=mode)
        out = model.encode_video(video)
        base = model.text(CLASSES)
        refined = model.encode_text(CLASSES, out.ctx)
        angles[mode] = _angle(refined, base.expand_as(refined)).mean()
    assert 0 < angles["raw"] < angles["unit"]


def test_video_prompt_reads_its_own_projection_of_the_last_blocks_tokens(tiny_model):
    own = tiny_model.shared(video_prompt=True)
    assert own.frame_encoder.return_patches == "raw"
    vsp = own.text_refiners[0]
    assert vsp.visual_ln is not None and vsp.visual_proj.shape == (64, 64)
    assert any(p is vsp.visual_proj for p in own.param_groups()["new"])  # the 10x group
    clip = tiny_model.shared(video_prompt=True, vprompt_visual="clip")
    assert clip.frame_encoder.return_patches == "projected"
    assert clip.text_refiners[0].visual_ln is None


def test_temperature_reaches_the_logits(tiny_model):
    """MotionPrompt Eq. 3 with tau = 0.07: logits = cos / tau, not the backbone's scale."""
    model = tiny_model.shared(temperature=0.07)
    video = _video()
    logits, out = model(video, None, CLASSES)
    cos = F.normalize(out.video, dim=-1) @ F.normalize(model.text(CLASSES), dim=-1).t()
    torch.testing.assert_close(logits, cos / 0.07, rtol=1e-5, atol=1e-5)
    default = tiny_model.shared()
    assert torch.equal(default.logit_scale, default.text.clip.logit_scale.detach().float())
