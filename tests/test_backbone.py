"""Behaviour tests for the open_clip backbone wrappers: loading, the frozen/trainable split of
the frame encoder, the frozen teacher tail and the cached frozen text encoder."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

# isort: split
from tests.conftest import REPO
from vidablate.backbone import BackboneError, FrameEncoder, TextEncoder, load_clip
from vidablate.config import ConfigError, ExperimentConfig
from vidablate.specs import QUICK_GELU_TAGS, vision_spec

NAME = "vidablate-tiny"
DEPTH = 4  # visual blocks of vidablate-tiny


def _clip(seed: int = 0):
    torch.manual_seed(seed)
    return load_clip(NAME)


def _images(n: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.randn(n, 3, 32, 32, generator=g)


# --------------------------------------------------------------------------- load_clip


def test_load_clip_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip, tokenizer = _clip()
    assert len(clip.visual.transformer.resblocks) == DEPTH
    tokens = tokenizer(["a video of a cat.", "a video of a dog."])
    assert tokens.shape[0] == 2
    with torch.no_grad():
        assert clip.encode_image(_images(2)).shape == (2, 64)
        assert clip.encode_text(tokens).shape == (2, 64)


def test_load_clip_seeded_is_deterministic():
    a, _ = _clip(0)
    b, _ = _clip(0)
    c, _ = _clip(1)
    assert torch.equal(a.visual.proj, b.visual.proj)
    assert not torch.equal(a.visual.proj, c.visual.proj)


def test_load_clip_unknown_model_names_it():
    with pytest.raises(BackboneError, match="no-such-clip-model"):
        load_clip("no-such-clip-model")


def test_load_clip_missing_weights_file_names_the_path():
    with pytest.raises(BackboneError, match="/nonexistent/w.pt"):
        load_clip(NAME, "/nonexistent/w.pt")


def test_load_clip_unknown_weights_tag_is_a_backbone_error():
    with pytest.raises(BackboneError, match="missing_weights_tag.pt"):
        load_clip(NAME, "missing_weights_tag.pt")


def test_quick_gelu_tags_follow_open_clips_pretrained_table():
    """specs.QUICK_GELU_TAGS (read without open_clip) is exactly the set of tags open_clip marks
    quick_gelu, over every model that has them."""
    import open_clip

    marked = {tag for name in open_clip.list_models()
              for tag in open_clip.list_pretrained_tags_by_model(name)
              if open_clip.get_pretrained_cfg(name, tag).get("quick_gelu")}
    assert marked == set(QUICK_GELU_TAGS)


def test_openai_weights_with_plain_gelu_are_refused_before_anything_is_built():
    with pytest.raises(ConfigError, match="QuickGELU.*ViT-B-16-quickgelu"):
        ExperimentConfig.from_dict({"model": {"backbone": "ViT-B-16", "pretrained": "openai"},
                                    "data": {"image_size": 224}}).validate()
    ExperimentConfig.from_dict({"model": {"backbone": "ViT-B-16-quickgelu",
                                          "pretrained": "openai"},
                                "data": {"image_size": 224}}).validate()
    with pytest.raises(BackboneError, match="QuickGELU.*ViT-B-16-quickgelu"):
        load_clip("ViT-B-16", "openai")  # refused before any download


def test_the_papers_backbone_preset_builds_quick_gelu():
    import yaml

    preset = yaml.safe_load((REPO / "platform/vidablate/conf/model/vitb16.yaml").read_text())
    assert preset["pretrained"] == "openai" and vision_spec(preset["backbone"]).quick_gelu


def test_load_clip_reads_a_local_weights_file(tmp_path):
    source, _ = _clip(3)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    torch.manual_seed(99)  # different random init: the file must override it
    loaded, _ = load_clip(NAME, str(path))
    expected, got = source.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name


# --------------------------------------------------------------------------- FrameEncoder


def _run(enc: FrameEncoder, images: torch.Tensor):
    """Each image as a one-frame clip -> (student [N, D], teacher [N, D] | None)."""
    out = enc(images.unsqueeze(1))
    return out.frames[:, 0], (out.teacher[:, 0] if out.teacher is not None else None)


def test_student_equals_clip_visual_and_teacher_at_init():
    clip, _ = _clip()
    enc = FrameEncoder(clip.visual, trainable_blocks=2, teacher=True)
    images = _images()
    student, teacher = _run(enc, images)
    assert student.shape == (3, enc.embed_dim) == (3, 64)
    assert torch.equal(student, clip.visual(images))
    # teacher runs in eval mode / no_grad (another attention kernel): equal up to rounding
    torch.testing.assert_close(teacher, student, rtol=1e-5, atol=1e-5)
    assert not teacher.requires_grad


def test_no_teacher_by_default():
    clip, _ = _clip()
    enc = FrameEncoder(clip.visual)
    student, teacher = _run(enc, _images())
    assert teacher is None and enc.teacher is None
    assert student.requires_grad


def _trainable_names(enc: FrameEncoder) -> set[str]:
    return {n for n, p in enc.visual.named_parameters() if p.requires_grad}


def _block_names(visual, blocks) -> set[str]:
    return {
        n for n, _ in visual.named_parameters()
        if any(n.startswith(f"transformer.resblocks.{i}.") for i in blocks)
    }


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("train_proj", [True, False])
def test_only_last_k_blocks_and_proj_train(k, train_proj):
    clip, _ = _clip()
    enc = FrameEncoder(clip.visual, trainable_blocks=k, train_proj=train_proj, teacher=True)
    expected = _block_names(clip.visual, range(DEPTH - k, DEPTH))
    if train_proj:
        expected.add("proj")
    assert expected  # sanity: block names resolved
    assert _trainable_names(enc) == expected
    assert not enc.full_finetune


@pytest.mark.parametrize("k", [DEPTH, DEPTH + 3])
def test_full_finetune_trains_every_visual_param(k):
    clip, _ = _clip()
    enc = FrameEncoder(clip.visual, trainable_blocks=k, train_proj=True, teacher=True)
    assert enc.full_finetune
    assert _trainable_names(enc) == {n for n, _ in clip.visual.named_parameters()}
    # the stem receives gradient too
    student, _ = _run(enc, _images())
    student.sum().backward()
    assert clip.visual.conv1.weight.grad is not None
    assert clip.visual.transformer.resblocks[0].attn.in_proj_weight.grad is not None


def test_partial_finetune_prefix_gets_no_gradient():
    clip, _ = _clip()
    enc = FrameEncoder(clip.visual, trainable_blocks=2)
    student, _ = _run(enc, _images())
    student.sum().backward()
    assert clip.visual.conv1.weight.grad is None
    assert clip.visual.transformer.resblocks[1].attn.in_proj_weight.grad is None
    assert clip.visual.transformer.resblocks[2].attn.in_proj_weight.grad is not None
    assert clip.visual.proj.grad is not None


@pytest.mark.parametrize("k", [2, DEPTH])
def test_teacher_has_no_trainable_params(k):
    clip, _ = _clip()
    enc = FrameEncoder(clip.visual, trainable_blocks=k, teacher=True)
    teacher_params = list(enc.teacher.parameters())
    assert teacher_params
    assert not any(p.requires_grad for p in teacher_params)
    student_ids = {id(p) for p in clip.visual.parameters()}
    assert not student_ids & {id(p) for p in teacher_params}
    enc.train()
    assert not enc.teacher.training


@pytest.mark.parametrize("k", [2, DEPTH])
def test_optimizer_step_changes_student_not_teacher(k):
    clip, _ = _clip()
    enc = FrameEncoder(clip.visual, trainable_blocks=k, teacher=True)
    images = _images()
    student0, teacher0 = (t.detach().clone() for t in _run(enc, images))
    opt = torch.optim.SGD([p for p in enc.parameters() if p.requires_grad], lr=0.5)
    student, _ = _run(enc, images)
    target = torch.randn(student.shape, generator=torch.Generator().manual_seed(5))
    (1 - F.cosine_similarity(student, target, dim=-1)).mean().backward()
    opt.step()
    student1, teacher1 = _run(enc, images)
    assert torch.equal(teacher1, teacher0)
    assert not torch.allclose(student1, student0, atol=1e-4)


# --------------------------------------------------------------------------- TextEncoder


def test_text_encoder_normalised_and_matches_clip():
    clip, tok = _clip()
    text = TextEncoder(clip, tok, "a video of {}.")
    names = ["cat", "dog", "red square moving left"]
    feats = text(names)
    assert feats.shape == (3, 64)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(3))
    with torch.no_grad():
        raw = clip.encode_text(tok([f"a video of {n}." for n in names]))
    torch.testing.assert_close(feats, raw / raw.norm(dim=-1, keepdim=True))
    assert not feats.requires_grad


def _widths(clip) -> list[int]:
    """Record the sequence length of every text-transformer call."""
    seen: list[int] = []
    clip.transformer.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    return seen


def test_trimmed_text_tower_matches_the_full_length_run():
    clip, tok = _clip()
    names = ["cat", "dog", "red square moving left"]
    seen = _widths(clip)
    trimmed = TextEncoder(clip, tok, "a video of {}.", raw=True)(names)
    full = TextEncoder(clip, tok, "a video of {}.", raw=True, trim=False)(names)
    tokens = tok([f"a video of {n}." for n in names])
    assert seen == [int(tokens.argmax(-1).max()) + 1, tokens.shape[1]] and seen[0] < seen[1]
    torch.testing.assert_close(trimmed, full, rtol=1e-5, atol=1e-6)


def test_trimmed_learnable_context_matches_full_length_with_its_gradient():
    clip, tok = _clip()
    names = ["cat", "a dog jumping over a fence"]
    out = {}
    for trim in (True, False):
        text = TextEncoder(clip, tok, "a video of {}.", raw=True, trim=trim)
        ctx = text.context_init("a video of a", 4)[None].repeat(2, 1, 1).requires_grad_()
        feats = text.encode_context(ctx, names)
        (feats * torch.linspace(-1, 1, feats.shape[-1])).sum().backward()
        out[trim] = feats.detach(), ctx.grad
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-4, atol=1e-6)
    assert out[True][1].abs().sum() > 0


def test_text_tower_without_a_causal_mask_is_not_trimmed():
    clip, tok = _clip()
    text = TextEncoder(clip, tok, "a video of {}.")
    tokens = tok(["cat"])
    assert text.used_length(tokens) < tokens.shape[1]
    clip.attn_mask = None  # a bidirectional tower reads every position
    assert text.used_length(tokens) == tokens.shape[1]


def test_text_encoder_uses_the_template():
    clip, tok = _clip()
    a = TextEncoder(clip, tok, "a video of {}.")(["cat"])
    b = TextEncoder(clip, tok, "a blurry photo of a {} at night")(["cat"])
    assert not torch.allclose(a, b)


def test_text_encoder_caches_per_class_list():
    clip, tok = _clip()
    text = TextEncoder(clip, tok, "a video of {}.")
    first = text(["cat", "dog"])
    assert text(["cat", "dog"]) is first
    assert text(("cat", "dog")) is first
    other = text(["dog", "cat"])
    assert other is not first
    torch.testing.assert_close(other, first.flip(0))


def test_text_encoder_freezes_non_visual_params_only():
    clip, tok = _clip()
    FrameEncoder(clip.visual, trainable_blocks=2)
    visual_before = {n: p.requires_grad for n, p in clip.visual.named_parameters()}
    TextEncoder(clip, tok, "a video of {}.")
    non_visual = [(n, p) for n, p in clip.named_parameters() if not n.startswith("visual.")]
    assert non_visual
    assert not any(p.requires_grad for _, p in non_visual)
    assert {n: p.requires_grad for n, p in clip.visual.named_parameters()} == visual_before


def test_random_init_notice_is_dropped_only_while_building(caplog):
    with caplog.at_level(logging.WARNING):
        load_clip("vidablate-tiny", None)  # random weights: the config's explicit choice
        logging.warning("No pretrained weights loaded for model 'vidablate-tiny'. Model ...")
    notices = [r for r in caplog.records if "No pretrained weights" in r.getMessage()]
    assert len(notices) == 1  # only ours, logged after the build: the filter was removed
    assert not logging.getLogger().filters
