"""Every attention the modules add runs through ``F.scaled_dot_product_attention`` (the fused
kernel: flash / memory-efficient on GPU), never an explicit softmax(QK^T)V.

``nn.MultiheadAttention`` (including the open_clip blocks and ``nn.TransformerEncoderLayer``)
reaches SDPA only when called with ``need_weights=False`` (torch's
``F.multi_head_attention_forward``: ``need_weights=True`` computes softmax(QK^T) with bmm to
return the weights). The test counts SDPA calls in a training forward of a model with every
attention-bearing module on and checks that no softmax over a >= 3-D tensor (attention scores)
is computed; a ``need_weights=True`` call or a hand-written attention fails it. MHA's inference
fast path (one fused native kernel, taken by the frozen teacher under ``no_grad``; never under
autocast) is switched off while counting so that every call is visible.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidablate.config import ExperimentConfig
from vidablate.model import build_model
from vidablate.modules import registry
from vidablate.specs import vision_spec

pytestmark = pytest.mark.usefixtures("one_thread")

B, T = 2, 8
NAMES = ["red square moving left", "red square moving right", "green circle growing"]

PAPERS = registry.papers()
SPEC = vision_spec("vidablate-tiny")
EVERY_ATTENTION = {k: v for p in PAPERS for k, v in p.attention.items()}
"""Every module that attends, of every registered paper (each paper's ``attention`` facts), on
vidablate-tiny (4 blocks, last 2 trainable, distillation on)."""

EXPECTED_CALLS = SPEC.depth + SPEC.depth + sum(p.attention_calls(SPEC) for p in PAPERS)
"""Attention calls of one training forward of EVERY_ATTENTION: the visual tower's blocks, the
frozen distillation teacher's blocks (block 1 is hooked, so the teacher runs all of them), and
what each paper says its modules add (``Paper.attention_calls``: e.g. STCA's two extra passes
per block, CCT's and PTA's attention per block, SIRM, MIT, MMB's two streams, the text tower
MAP re-runs per video, the video prompt's layers, MCB's SMA and SAA)."""
ATTENTION_TYPES = (nn.MultiheadAttention, *(t for p in PAPERS for t in p.attention_types))


class _Counter:
    def __init__(self) -> None:
        self.sdpa = 0
        self.modules = 0
        self.score_softmax: list[tuple[int, ...]] = []


@pytest.fixture
def counted(monkeypatch):
    """Count SDPA calls and softmaxes over >= 3-D tensors while the test runs."""
    count = _Counter()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    sdpa = F.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        count.sdpa += 1
        return sdpa(*args, **kwargs)

    inside = []  # F.softmax calls Tensor.softmax: count the outermost call only

    def watch(softmax):
        def wrapped(x, *args, **kwargs):
            if x.dim() >= 3 and not inside:
                count.score_softmax.append(tuple(x.shape))
            inside.append(1)
            try:
                return softmax(x, *args, **kwargs)
            finally:
                inside.pop()
        return wrapped

    # F.multi_head_attention_forward looks both names up in torch.nn.functional at call time.
    monkeypatch.setattr(F, "scaled_dot_product_attention", counting_sdpa)
    monkeypatch.setattr(F, "softmax", watch(F.softmax))
    monkeypatch.setattr(torch, "softmax", watch(torch.softmax))
    monkeypatch.setattr(torch.Tensor, "softmax", watch(torch.Tensor.softmax))
    yield count
    torch.backends.mha.set_fastpath_enabled(fastpath)


def _model(toggles: dict) -> nn.Module:
    torch.manual_seed(0)
    cfg = ExperimentConfig.from_dict({"model": toggles}).validate()
    return build_model(cfg.model, T).train()


def _count_attention_modules(model: nn.Module, count: _Counter) -> None:
    def hook(module, args):
        count.modules += 1

    for m in model.modules():
        if isinstance(m, ATTENTION_TYPES):
            m.register_forward_pre_hook(hook)


def test_every_added_attention_runs_through_sdpa(counted):
    model = _model(EVERY_ATTENTION)
    _count_attention_modules(model, counted)
    g = torch.Generator().manual_seed(0)
    video, imu = torch.randn(B, T, 3, 32, 32, generator=g), torch.randn(B, 6, T * 16, generator=g)
    logits, out = model(video, imu, NAMES)
    assert counted.score_softmax == [], "attention scores computed outside SDPA"
    assert counted.modules == EXPECTED_CALLS
    assert counted.sdpa == EXPECTED_CALLS
    model.loss(logits, out, torch.tensor([0, 2]))["loss"].backward()  # SDPA's backward runs


def test_the_counter_sees_attention_that_returns_weights(counted):
    """The check above can fail: MHA asked for its weights bypasses SDPA."""
    attn = nn.MultiheadAttention(16, 4, batch_first=True)
    x = torch.randn(2, 5, 16)
    attn(x, x, x, need_weights=True)
    assert counted.sdpa == 0 and counted.score_softmax == [(8, 5, 5)]
    attn(x, x, x, need_weights=False)
    assert counted.sdpa == 1
