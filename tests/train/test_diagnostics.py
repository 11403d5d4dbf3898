"""The IS-CLIP module diagnostics measure what they say: uniform SGAM weights give entropy 1
and the window's own share, a weighting pinned to one frame gives the clips whose window holds
it, SIRM's statistics come from its own attention, and the IMU gradient norm equals torch's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

# isort: split
from vidablate.data.synthetic import SyntheticSpec, generate_split
from vidablate.train.diagnostics import GradNorm, ProbeSet, has_imu_modules

pytestmark = pytest.mark.usefixtures("one_thread")
SPEC = SyntheticSpec(num_classes=4, train_per_class=1, test_per_class=4, num_frames=4)


@pytest.fixture(scope="module")
def probe() -> ProbeSet:
    return ProbeSet(SPEC, clips=16)


def _windows() -> np.ndarray:
    return generate_split(SPEC, "test")["window"][:16]


def test_uniform_sgam_weights_read_as_the_frame_mean(tiny_model, probe):
    model = tiny_model(sgam=True, distill=False)
    torch.nn.init.zeros_(model.sgam.mlp[2].weight)
    torch.nn.init.zeros_(model.sgam.mlp[2].bias)
    stats = probe.measure(model, torch.device("cpu"))
    w = _windows()
    fraction = float(np.mean((w[:, 1] - w[:, 0] + 1) / SPEC.num_frames))
    assert stats["window_fraction"] == pytest.approx(fraction)
    assert stats["sgam_entropy"] == pytest.approx(1.0)
    assert stats["sgam_window_mass"] == pytest.approx(fraction)
    assert "sirm_entropy" not in stats  # SIRM is off


def test_weights_pinned_to_one_frame(tiny_model, probe):
    model = tiny_model(sgam=True, distill=False)
    torch.nn.init.zeros_(model.sgam.mlp[2].weight)
    with torch.no_grad():
        model.sgam.mlp[2].bias.copy_(torch.tensor([0.0, 0.0, 30.0, 0.0]))
    stats = probe.measure(model, torch.device("cpu"))
    w = _windows()
    holds_frame_2 = float(np.mean((w[:, 0] <= 2) & (w[:, 1] >= 2)))
    assert stats["sgam_peak_in_window"] == pytest.approx(holds_frame_2)
    assert stats["sgam_window_mass"] == pytest.approx(holds_frame_2, abs=1e-4)
    assert stats["sgam_entropy"] < 1e-3


def test_sirm_statistics_are_its_attention_over_frames(tiny_model, probe):
    model = tiny_model(sirm=True, distill=False)
    assert has_imu_modules(model) and not has_imu_modules(tiny_model.shared(distill=False))
    stats = probe.measure(model, torch.device("cpu"))
    with torch.no_grad():
        out = model.eval().encode_video(probe.video, probe.imu)
        q = out.ctx.f_imu.unsqueeze(1)
        _, weights = model.sirm.attn(q, out.frames, out.frames, need_weights=True)
    weights = weights.squeeze(1)
    h = -(weights * weights.log()).sum(-1) / math.log(SPEC.num_frames)
    assert stats["sirm_entropy"] == pytest.approx(float(h.mean()), rel=1e-5)
    mass = (weights * probe.inside).sum(-1).mean()
    assert stats["sirm_window_mass"] == pytest.approx(float(mass), rel=1e-5)


def test_imu_gradient_norm_is_torchs_total_norm(tiny_model):
    model = tiny_model(sgam=True, distill=False)
    imu = torch.randn(2, 6, 4 * 16)
    video = torch.randn(2, 4, 3, 32, 32)
    logits, _ = model(video, imu, ["a", "b", "c"])
    logits.logsumexp(-1).sum().backward()
    norm = GradNorm(model.imu)
    norm.update()
    norm.update()
    params = [p for p in model.imu.parameters()]
    ref = torch.nn.utils.clip_grad_norm_(params, float("inf"))
    assert norm.read() == {"imu_grad_norm": pytest.approx(float(ref))}
    assert norm.read() == {}  # reset by the read
    assert GradNorm(None).read() == {}
