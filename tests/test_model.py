"""Behaviour tests for VideoCLIP and its composer: the CLIP-Mean baseline, the IS-CLIP toggles,
optimizer parameter groups and the CE + feature-distillation loss (isclip §II, Eq. 5)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

# isort: split
from vidablate.model import VideoCLIP
from vidablate.modules.isclip import SIRMRefiner, feature_distillation_loss

B, N, L = 2, 4, 64
CLASSES = ["cat", "dog", "red square moving left"]


def _inputs(seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, N, 3, 32, 32, generator=g), torch.randn(B, 6, L, generator=g)


def _other_imu(seed: int = 8) -> torch.Tensor:
    return torch.randn(B, 6, L, generator=torch.Generator().manual_seed(seed)) * 3


# --------------------------------------------------------------------------- baseline


def test_baseline_is_exact_mean_of_frame_features(tiny_model):
    model = tiny_model.shared()
    video, imu = _inputs()
    out = model.encode_video(video)
    vis = model.frame_encoder(video)
    per_frame = vis.frames
    assert per_frame.shape == (B, N, 64)
    assert torch.equal(out.video, per_frame.mean(dim=1))
    assert torch.equal(out.frames, per_frame)
    assert torch.equal(out.teacher, vis.teacher)
    assert out.frame_weights is None
    assert model.imu is None and model.sirm is None and model.sgam is None
    # an IMU tensor is ignored by the video-only baseline
    assert torch.equal(model.encode_video(video, imu).video, out.video)


def test_baseline_is_invariant_to_frame_order(tiny_model):
    model = tiny_model.shared()
    video, _ = _inputs()
    perm = torch.tensor([2, 0, 3, 1])
    a = model.encode_video(video).video
    b = model.encode_video(video[:, perm]).video
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- IS-CLIP toggles


@pytest.mark.parametrize(("sirm", "sgam"), [(True, False), (False, True), (True, True)])
def test_imu_modules_change_the_embedding(tiny_model, sirm, sgam):
    baseline = tiny_model.shared()
    model = tiny_model.shared(sirm=sirm, sgam=sgam)
    video, imu = _inputs()
    out = model.encode_video(video, imu)
    base = baseline.encode_video(video)
    # same seed -> same CLIP weights, so the per-frame features agree with the baseline ...
    assert torch.equal(out.frames, base.frames)
    # ... and the modules make the pooled embedding differ and depend on the IMU
    assert not torch.allclose(out.video, base.video, atol=1e-4)
    other = model.encode_video(video, _other_imu()).video
    assert not torch.allclose(other, out.video, atol=1e-4)
    assert (out.frame_weights is not None) == sgam


def test_sgam_ties_weights_to_frame_positions(tiny_model):
    model = tiny_model.shared(sgam=True)
    video, imu = _inputs()
    perm = torch.tensor([3, 2, 1, 0])
    a = model.encode_video(video, imu)
    b = model.encode_video(video[:, perm], imu)
    # the weights depend on the IMU only, not on the frame content
    assert torch.equal(a.frame_weights, b.frame_weights)
    assert not torch.allclose(a.video, b.video, atol=1e-4)
    expected = torch.einsum("bn,bnd->bd", a.frame_weights, a.frames)
    torch.testing.assert_close(a.video, expected)


def test_sirm_alone_keeps_frame_order_invariance(tiny_model):
    # SIRM attends over frames as an unordered set and mean pooling follows
    model = tiny_model.shared(sirm=True)
    video, imu = _inputs()
    perm = torch.tensor([1, 3, 0, 2])
    a = model.encode_video(video, imu).video
    b = model.encode_video(video[:, perm], imu).video
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_imu_model_without_imu_input_raises(tiny_model):
    model = tiny_model.shared(sirm=True)
    video, _ = _inputs()
    with pytest.raises(ValueError, match="imu"):
        model.encode_video(video)


@pytest.mark.parametrize(("sirm", "sgam"), list(itertools.product([False, True], repeat=2)))
def test_toggles_build_exactly_the_expected_modules(tiny_model, sirm, sgam):
    model = tiny_model.shared(sirm=sirm, sgam=sgam)
    assert (model.sirm is not None) == sirm
    assert (model.sgam is not None) == sgam
    assert (model.imu is not None) == (sirm or sgam)
    if sgam:
        assert model.sgam.num_frames == N
    if model.imu is not None:
        assert model.imu.sensors == ("acc", "gyro")


def test_module_knobs_reach_the_modules(tiny_model):
    model = tiny_model(sirm=True, sgam=True, sirm_heads=4, sgam_hidden=24, imu_width=16,
                   stft_n_fft=16, stft_hop=4, stft_window="rect")
    assert model.sirm.attn.num_heads == 4
    assert model.sgam.mlp[0].out_features == 24
    assert model.imu.encoder.net[0].out_channels == 16
    assert model.imu.stft.n_fft == 16 and model.imu.stft.hop == 4
    assert torch.equal(model.imu.stft.window, torch.ones(16))


@pytest.mark.parametrize(("acc", "gyro", "sensors"),
                         [(False, True, ("gyro",)), (True, False, ("acc",))])
def test_single_sensor_branch(tiny_model, acc, gyro, sensors):
    model = tiny_model.shared(sgam=True, imu_acc=acc, imu_gyro=gyro)
    assert model.imu.sensors == sensors
    assert model.imu.fuse.in_features == model.frame_encoder.embed_dim
    video, imu = _inputs()
    unused = slice(0, 3) if sensors == ("gyro",) else slice(3, 6)
    changed = imu.clone()
    changed[:, unused] = _other_imu()[:, unused]
    assert torch.equal(model.encode_video(video, changed).video,
                       model.encode_video(video, imu).video)


def test_videoclip_refuses_modules_without_imu_branch(tiny_model):
    """SIRM composed without the IMU branch that fills f_IMU fails naming the IMU."""
    model = tiny_model.shared(sirm=True)
    bare = VideoCLIP(model.frame_encoder, model.text, torch.tensor(1.0),
                     refiners=[SIRMRefiner(model.sirm)])
    with pytest.raises(ValueError, match="IMU"):
        bare.encode_video(_inputs()[0])


# --------------------------------------------------------------------------- param groups


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_param_groups_partition_the_trainable_parameters(tiny_model):
    model = tiny_model.shared(sirm=True, sgam=True)
    groups = model.param_groups()
    visual, new = groups["clip_visual"], groups["new"]
    assert set(groups) == {"clip_visual", "new"}
    assert len(_ids(visual)) == len(visual) and len(_ids(new)) == len(new)
    assert not _ids(visual) & _ids(new)

    fe = model.frame_encoder
    assert _ids(visual) == _ids(p for p in fe.parameters() if p.requires_grad)
    assert _ids(visual) == _ids(p for p in fe.visual.parameters() if p.requires_grad)
    expected_new = _ids(
        itertools.chain(model.sirm.parameters(), model.sgam.parameters(),
                        model.imu.parameters())
    )
    assert _ids(new) == expected_new
    assert _ids(visual) | _ids(new) == _ids(p for p in model.parameters() if p.requires_grad)

    frozen = _ids(fe.teacher.parameters()) | _ids(
        p for n, p in model.text.clip.named_parameters() if not n.startswith("visual.")
    )
    assert frozen
    assert not frozen & (_ids(visual) | _ids(new))
    assert all(p.requires_grad for p in visual + new)


def test_param_groups_baseline_has_no_new_params(tiny_model):
    model = tiny_model.shared()
    groups = model.param_groups()
    assert groups["new"] == []
    assert groups["clip_visual"]


# --------------------------------------------------------------------------- loss


def test_loss_is_ce_plus_weighted_kd(tiny_model):
    model = tiny_model(sirm=True, sgam=True, distill_weight=0.5)
    video, imu = _inputs()
    target = torch.tensor([0, 2])
    logits, out = model(video, imu, CLASSES)
    parts = model.loss(logits, out, target)
    torch.testing.assert_close(parts["ce"], F.cross_entropy(logits, target))
    torch.testing.assert_close(parts["kd"], feature_distillation_loss(out.teacher, out.frames))
    torch.testing.assert_close(parts["loss"], parts["ce"] + 0.5 * parts["kd"])


def test_loss_label_smoothing_is_passed_through(tiny_model):
    model = tiny_model.shared()
    video, _ = _inputs()
    target = torch.tensor([1, 0])
    logits, out = model(video, None, CLASSES)
    parts = model.loss(logits, out, target, label_smoothing=0.2)
    torch.testing.assert_close(parts["ce"],
                               F.cross_entropy(logits, target, label_smoothing=0.2))


def test_no_distill_means_no_teacher_and_no_kd(tiny_model):
    model = tiny_model(sgam=True, distill=False)
    assert model.frame_encoder.teacher is None
    video, imu = _inputs()
    target = torch.tensor([0, 1])
    logits, out = model(video, imu, CLASSES)
    assert out.teacher is None
    parts = model.loss(logits, out, target)
    assert "kd" not in parts
    assert torch.equal(parts["loss"], parts["ce"])


def test_one_backward_reaches_every_trainable_parameter(tiny_model):
    model = tiny_model(sirm=True, sgam=True)
    video, imu = _inputs()
    logits, out = model(video, imu, CLASSES)
    model.loss(logits, out, torch.tensor([0, 2]))["loss"].backward()
    groups = model.param_groups()
    for group, params in groups.items():
        for p in params:
            assert p.grad is not None, group
            assert torch.isfinite(p.grad).all(), group
    assert all(p.grad is None for p in model.frame_encoder.teacher.parameters())


def test_logits_are_scaled_cosines_against_class_texts(tiny_model):
    model = tiny_model.shared()
    video, _ = _inputs()
    logits, out = model(video, None, CLASSES)
    assert logits.shape == (B, len(CLASSES))
    v = F.normalize(out.video, dim=-1)
    expected = model.logit_scale.exp() * v @ model.text(CLASSES).t()
    torch.testing.assert_close(logits, expected)


# --------------------------------------------------------------------------- grad modes


@pytest.mark.parametrize("train", [True, False])
def test_encode_video_same_with_and_without_grad(tiny_model, train):
    model = tiny_model(sirm=True, sgam=True)
    model.train(train)
    video, imu = _inputs()
    with_grad = model.encode_video(video, imu)
    assert with_grad.video.requires_grad
    with torch.no_grad():
        without = model.encode_video(video, imu)
    torch.testing.assert_close(without.video, with_grad.video.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(without.frames, with_grad.frames.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(without.frame_weights, with_grad.frame_weights.detach())
