"""Behaviour tests for the IS-CLIP modules (isclip §II): STFT (Eq. 3), the shared IMU encoder,
SIRM (Eq. 6-8), SGAM and the feature distillation loss (Eq. 4)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

# isort: split
from vidablate.modules.isclip import (
    SGAM,
    SIRM,
    IMUBranch,
    STFTSpectrogram,
    feature_distillation_loss,
)

D = 16  # small embedding width for module-level tests


# --------------------------------------------------------------------------- STFT (Eq. 3)


@pytest.mark.parametrize(
    ("window", "scipy_window"), [("hann", "hann"), ("hamming", "hamming"), ("rect", "boxcar")]
)
@pytest.mark.parametrize(("n_fft", "hop", "length"), [(32, 8, 96), (16, 5, 61), (8, 8, 40)])
def test_stft_magnitude_matches_scipy(window, scipy_window, n_fft, hop, length):
    torch.manual_seed(0)
    x = torch.randn(2, 3, length)
    stft = STFTSpectrogram(n_fft=n_fft, hop=hop, window=window, log=False)
    mag = stft(x)
    frames = 1 + (length - n_fft) // hop
    assert mag.shape == (2, 3, n_fft // 2 + 1, frames)

    _, _, zxx = scipy.signal.stft(
        x.double().numpy(), window=scipy_window, nperseg=n_fft, noverlap=n_fft - hop,
        boundary=None, padded=False, axis=-1,
    )
    expected = np.abs(zxx)
    assert expected.shape == tuple(mag.shape)
    ours = mag.double().numpy() / stft.window.double().sum().item()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6 * expected.max())


def test_stft_frame_count_without_padding():
    # frames cover the clip exactly: 1 + (L - n_fft) // hop, no centre padding
    stft = STFTSpectrogram(n_fft=32, hop=8, log=False)
    assert stft(torch.zeros(1, 1, 32)).shape == (1, 1, 17, 1)
    assert stft(torch.zeros(1, 1, 39)).shape == (1, 1, 17, 1)
    assert stft(torch.zeros(1, 1, 40)).shape == (1, 1, 17, 2)
    assert stft(torch.zeros(3, 6, 128)).shape == (3, 6, 17, 13)


def test_stft_pure_tone_peaks_at_its_bin():
    n_fft, hop = 32, 8
    t = torch.arange(128, dtype=torch.float32)
    tone = torch.cos(2 * torch.pi * 5 * t / n_fft).reshape(1, 1, -1)
    mag = STFTSpectrogram(n_fft, hop, "hann", log=False)(tone)
    assert (mag[0, 0].argmax(dim=0) == 5).all()


def test_stft_log_is_log1p_of_magnitude():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64) * 10
    raw = STFTSpectrogram(32, 8, "hamming", log=False)(x)
    logged = STFTSpectrogram(32, 8, "hamming", log=True)(x)
    torch.testing.assert_close(logged, torch.log1p(raw))
    assert not torch.allclose(logged, raw)


def test_stft_rejects_unknown_window():
    with pytest.raises(ValueError, match="blackman"):
        STFTSpectrogram(32, 8, window="blackman")


# --------------------------------------------------------------------------- IMU branch


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_imu_branch_output_shape():
    torch.manual_seed(0)
    branch = IMUBranch(D, ("acc", "gyro"), n_fft=16, hop=4, width=8)
    assert branch(torch.randn(2, 6, 64)).shape == (2, D)


def test_imu_branch_shares_one_encoder_between_sensors():
    two = IMUBranch(D, ("acc", "gyro"), n_fft=16, hop=4, width=8)
    one = IMUBranch(D, ("acc",), n_fft=16, hop=4, width=8)
    # only the fuse layer grows (its weight takes D more inputs); the encoder is not duplicated
    assert _count(two) - _count(one) == D * D
    assert _count(two.encoder) == _count(one.encoder)
    assert two.fuse.in_features == 2 * D and one.fuse.in_features == D


def test_imu_branch_uses_the_shared_encoder_for_each_sensor():
    torch.manual_seed(0)
    branch = IMUBranch(D, ("acc", "gyro"), n_fft=16, hop=4, width=8)
    imu = torch.randn(2, 6, 64)
    enc = branch.encoder
    feats = torch.cat([enc(branch.stft(imu[:, :3])), enc(branch.stft(imu[:, 3:6]))], dim=-1)
    torch.testing.assert_close(branch(imu), branch.fuse(feats))


def test_imu_branch_single_sensor_ignores_the_other_sensor():
    torch.manual_seed(0)
    branch = IMUBranch(D, ("acc",), n_fft=16, hop=4, width=8)
    imu = torch.randn(2, 6, 64)
    base = branch(imu)

    gyro_changed = imu.clone()
    gyro_changed[:, 3:6] = torch.randn(2, 3, 64) * 5
    assert torch.equal(branch(gyro_changed), base)

    acc_changed = imu.clone()
    acc_changed[:, 0:3] = torch.randn(2, 3, 64) * 5
    assert not torch.allclose(branch(acc_changed), base)


def test_imu_branch_gyro_only_ignores_accelerometer():
    torch.manual_seed(0)
    branch = IMUBranch(D, ("gyro",), n_fft=16, hop=4, width=8)
    imu = torch.randn(2, 6, 64)
    acc_changed = imu.clone()
    acc_changed[:, 0:3] += 3.0
    assert torch.equal(branch(acc_changed), branch(imu))


def test_imu_branch_rejects_unknown_or_empty_sensors():
    with pytest.raises(ValueError):
        IMUBranch(D, ("acc", "magnetometer"))
    with pytest.raises(ValueError):
        IMUBranch(D, ())


def test_imu_branch_gradients_reach_the_encoder():
    torch.manual_seed(0)
    branch = IMUBranch(D, ("acc", "gyro"), n_fft=16, hop=4, width=8)
    branch(torch.randn(2, 6, 64)).pow(2).sum().backward()
    for name, p in branch.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert branch.encoder.net[0].weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- SIRM (Eq. 6-8)


def test_sirm_shapes_and_attention_sums_to_one():
    torch.manual_seed(0)
    sirm = SIRM(D, num_heads=4)
    frames, f_imu = torch.randn(3, 5, D), torch.randn(3, D)
    refined, weights = sirm(frames, f_imu)
    assert refined.shape == (3, 5, D)
    assert weights.shape == (3, 5)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(3))


def test_sirm_residual_is_identity_when_attention_output_is_zero():
    torch.manual_seed(0)
    sirm = SIRM(D, num_heads=4)
    with torch.no_grad():
        sirm.attn.out_proj.weight.zero_()
        sirm.attn.out_proj.bias.zero_()
    frames = torch.randn(2, 4, D)
    refined, _ = sirm(frames, torch.randn(2, D))
    assert torch.equal(refined, frames)


def test_sirm_adds_the_attended_imu_query_to_every_frame():
    torch.manual_seed(0)
    sirm = SIRM(D, num_heads=4)
    frames, f_imu = torch.randn(2, 4, D), torch.randn(2, D)
    refined, _ = sirm(frames, f_imu)
    attended, _ = sirm.attn(f_imu.unsqueeze(1), frames, frames)
    torch.testing.assert_close(refined, frames + attended)


def test_sirm_output_depends_on_imu_feature():
    torch.manual_seed(0)
    sirm = SIRM(D, num_heads=4)
    frames = torch.randn(2, 4, D)
    a, wa = sirm(frames, torch.randn(2, D))
    b, wb = sirm(frames, torch.randn(2, D))
    assert not torch.allclose(a, b)
    assert not torch.allclose(wa, wb)


def test_sirm_gradients_flow_to_frames_and_imu():
    torch.manual_seed(0)
    sirm = SIRM(D, num_heads=4)
    frames = torch.randn(2, 4, D, requires_grad=True)
    f_imu = torch.randn(2, D, requires_grad=True)
    refined, _ = sirm(frames, f_imu)
    refined.pow(2).sum().backward()
    assert frames.grad is not None and frames.grad.abs().sum() > 0
    assert f_imu.grad is not None and f_imu.grad.abs().sum() > 0
    assert sirm.attn.in_proj_weight.grad is not None


def test_sirm_rejects_heads_not_dividing_dim():
    with pytest.raises(ValueError, match="divisible"):
        SIRM(18, num_heads=4)


# --------------------------------------------------------------------------- SGAM


def test_sgam_weights_are_a_distribution_over_frames():
    torch.manual_seed(0)
    sgam = SGAM(D, num_frames=5)
    video, weights = sgam(torch.randn(3, 5, D), torch.randn(3, D) * 5)
    assert video.shape == (3, D)
    assert weights.shape == (3, 5)
    assert (weights > 0).all()
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(3))


def test_sgam_output_is_weighted_sum_of_frames():
    torch.manual_seed(0)
    sgam = SGAM(D, num_frames=4, hidden=8)
    frames, f_imu = torch.randn(2, 4, D), torch.randn(2, D)
    video, weights = sgam(frames, f_imu)
    expected_w = torch.softmax(sgam.mlp(f_imu), dim=-1)
    torch.testing.assert_close(weights, expected_w)
    expected = torch.stack(
        [sum(weights[b, n] * frames[b, n] for n in range(4)) for b in range(2)]
    )
    torch.testing.assert_close(video, expected)


def test_sgam_uniform_weights_when_last_layer_is_zero():
    torch.manual_seed(0)
    sgam = SGAM(D, num_frames=4)
    with torch.no_grad():
        sgam.mlp[-1].weight.zero_()
        sgam.mlp[-1].bias.zero_()
    frames = torch.randn(2, 4, D)
    video, weights = sgam(frames, torch.randn(2, D))
    assert torch.equal(weights, torch.full((2, 4), 0.25))
    torch.testing.assert_close(video, frames.mean(dim=1), rtol=1e-6, atol=1e-6)


def test_sgam_rejects_wrong_frame_count():
    sgam = SGAM(D, num_frames=4)
    with pytest.raises(ValueError, match="N=4"):
        sgam(torch.randn(2, 3, D), torch.randn(2, D))


def test_sgam_gradient_reaches_mlp():
    torch.manual_seed(0)
    sgam = SGAM(D, num_frames=4)
    frames = torch.randn(2, 4, D)
    video, _ = sgam(frames, torch.randn(2, D))
    (video * torch.randn(2, D)).sum().backward()
    for name, p in sgam.mlp.named_parameters():
        assert p.grad is not None, name
    assert sgam.mlp[0].weight.grad.abs().sum() > 0
    assert sgam.mlp[-1].weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- L_kd (Eq. 4)


def test_distillation_loss_identical_orthogonal_opposite():
    torch.manual_seed(0)
    f = torch.randn(2, 4, D)
    assert feature_distillation_loss(f, f.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert feature_distillation_loss(f, 3.0 * f).item() == pytest.approx(0.0, abs=1e-6)
    assert feature_distillation_loss(f, -f).item() == pytest.approx(2.0, abs=1e-6)

    e = torch.eye(D)
    teacher = e[:4].expand(2, 4, D)
    student = e[4:8].expand(2, 4, D)
    assert feature_distillation_loss(teacher, student).item() == pytest.approx(1.0, abs=1e-6)


def test_distillation_loss_is_one_minus_mean_cosine():
    torch.manual_seed(0)
    teacher, student = torch.randn(3, 5, D), torch.randn(3, 5, D)
    cos = torch.stack(
        [
            torch.stack([F.cosine_similarity(teacher[b, i], student[b, i], dim=0)
                         for i in range(5)]).mean()
            for b in range(3)
        ]
    ).mean()
    torch.testing.assert_close(feature_distillation_loss(teacher, student), 1.0 - cos)


def test_distillation_gradient_reaches_student_only():
    torch.manual_seed(0)
    teacher = torch.randn(2, 4, D, requires_grad=True)
    student = torch.randn(2, 4, D, requires_grad=True)
    feature_distillation_loss(teacher, student).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_distillation_with_the_stdd_residual_projector(tiny_model):
    """STDD's official distillation: 1 - cos(teacher, f + 0.1 * MLP(f)) on normalised student
    features, weight 2; the zero-initialised last layer starts it at isclip Eq. 4."""
    plain = tiny_model(sirm=True)
    proj = tiny_model(sirm=True, distill_projector=0.1, distill_weight=2.0)
    g = torch.Generator().manual_seed(0)
    video, imu = torch.randn(2, 4, 3, 32, 32, generator=g), torch.randn(2, 6, 64, generator=g)
    names = ["a b", "c d"]
    _, out_plain = plain.train()(video, imu, names)
    logits, out = proj.train()(video, imu, names)
    parts = proj.loss(logits, out, torch.tensor([0, 1]))
    expected = 1 - F.cosine_similarity(out.teacher, out.frames, dim=-1).mean()
    torch.testing.assert_close(parts["kd"], expected)  # zero last layer: f' = f / |f|
    torch.testing.assert_close(parts["loss"], parts["ce"] + 2.0 * parts["kd"])
    term = proj.losses[0]
    assert all(any(p is q for q in proj.param_groups()["new"]) for p in term.projector.parameters())
    parts["loss"].backward()
    assert term.projector[2].weight.grad.abs().sum() > 0
