"""One training step, the one the training loop runs, the dry-run cost estimate times
(``vidablate.sweep.cost``) and the GPU benchmark measures (``benchmarks/gpu_step.py``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..model import VideoCLIP


def train_step(
    forward: Callable[..., tuple[torch.Tensor, Any]],
    model: VideoCLIP,
    optimizers: Mapping[str, torch.optim.Optimizer],
    inputs: torch.Tensor,
    imu: torch.Tensor | None,
    names: list[str],
    target: torch.Tensor,
    *,
    device: torch.device,
    cached: bool = False,
    autocast: bool = False,
    label_smoothing: float = 0.0,
    weight: float = 1.0,
    clip_norm: float = 0.0,
    zero_grad: bool = True,
    step: bool = True,
) -> dict[str, torch.Tensor]:
    """Forward under bf16 autocast (when ``autocast``), the loss on float logits, zero every
    optimizer's gradients, backward of ``loss * weight``, step every optimizer; returns the
    loss parts of ``model.loss``.

    ``forward`` is the module that runs the forward pass (the DDP and/or compiled wrapper of
    ``model``, or ``model`` itself); ``model.loss`` is always the plain module's. ``inputs``
    are pixels [B, T, 3, H, W], or the frozen prefix's cached tokens when ``cached``.
    ``weight`` 0 keeps a batch whose clips all failed to decode in the step (every DDP rank
    takes part in the gradient all-reduce) without learning from it. ``clip_norm`` > 0 clips
    the L2 norm of all the optimizers' gradients before the step (``trainer.grad_clip_norm``).
    Gradient accumulation (``trainer.accumulation_steps``) calls it with ``zero_grad`` only on
    the first micro-batch, ``step`` only on the last and ``weight`` divided by their count.
    With no ``optimizers`` the step is the forward and backward only."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        logits, out = forward(None, imu, names, inputs) if cached \
            else forward(inputs, imu, names)
    parts = model.loss(logits.float(), out, target, label_smoothing)
    if zero_grad:
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
    (parts["loss"] * weight).backward()
    if not step:
        return parts
    if clip_norm:
        torch.nn.utils.clip_grad_norm_(
            [p for opt in optimizers.values() for g in opt.param_groups for p in g["params"]],
            clip_norm)
    for opt in optimizers.values():
        opt.step()
    return parts
