"""The dry run's cost: a trial's model parameters and forward FLOPs."""

from __future__ import annotations

from vidablate.config import ExperimentConfig
from vidablate.model import build_model
from vidablate.sweep.cost import model_cost


def test_cost_counts_trainable_parameters_and_flops():
    exp = ExperimentConfig.from_dict({"model": {"sgam": True}}).validate().to_dict()
    total, trainable, gflops = model_cost(exp)
    model = build_model(ExperimentConfig.from_dict(exp).model, 8)
    assert total == sum(p.numel() for p in model.parameters())
    assert trainable == sum(p.numel() for g in model.param_groups().values() for p in g)
    assert 0 < trainable < total
    base = model_cost(ExperimentConfig().validate().to_dict())
    assert 0 < base[2] < gflops  # SGAM and the IMU branch add compute


def _vit_b16_frame_flops(tokens: int = 197, width: int = 768, layers: int = 12,
                         embed: int = 512) -> int:
    """Forward FLOPs of one 224^2 frame through CLIP ViT-B/16 (a multiply-add = 2 FLOPs):
    patch embedding, per block QKV, attention (QK^T and AV over all heads), output projection
    and MLP (4x), and the final projection of the class token."""
    patches = 2 * (tokens - 1) * width * (3 * 16 * 16)
    block = (2 * tokens * width * 3 * width + 2 * 2 * tokens * tokens * width
             + 2 * tokens * width * width + 2 * 2 * tokens * width * 4 * width)
    return patches + layers * block + 2 * width * embed


def test_clip_mean_flops_at_vit_b16_match_the_analytic_count_attention_included():
    frames = 2
    exp = ExperimentConfig.from_dict({
        "model": {"backbone": "ViT-B-16", "pretrained": None},
        "data": {"num_frames": frames, "image_size": 224}}).validate().to_dict()
    _, _, gflops = model_cost(exp)
    classes = ExperimentConfig.from_dict(exp).data.base_classes
    want = frames * _vit_b16_frame_flops() + 2 * 512 * classes  # + the cosine logits
    attention = frames * 12 * 2 * 2 * 197 * 197 * 768
    assert abs(gflops * 1e9 - want) < 1e-3 * want, (gflops * 1e9, want)
    assert abs(gflops * 1e9 - (want - attention)) > 0.02 * want  # attention is in the count


def test_fused_attention_forward_and_backward_count_as_the_explicit_matmuls():
    """As torch counts its GPU kernels: the backward also recomputes the scores."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from vidablate.sweep.cost import counting_flops

    def run(fused: bool) -> int:
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(2, 4, 9, 8, generator=g, requires_grad=True) for _ in range(3))
        with (counting_flops() if fused else FlopCounterMode(display=False)) as counter:
            if fused:
                out = F.scaled_dot_product_attention(q, k, v)
            else:
                out = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, dim=-1) @ v
            out.sum().backward()
        return counter.get_total_flops()

    recomputed = 2 * (2 * 4) * 9 * 9 * 8  # torch's formula: the backward recomputes QK^T
    assert run(fused=True) == run(fused=False) + recomputed
