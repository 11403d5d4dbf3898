"""Uniform average of the trainable weights over epochs (stdd §Implementation Details: "the
models learned in different epochs are averaged", following Open-VCLIP's weight averaging).

Frozen tensors are the same in every epoch, so only trainable ones are averaged; evaluation
swaps the average in and the training weights back out. The update rule is torch's SWA one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import get_swa_multi_avg_fn


class EpochAverage:
    """Running mean of the trainable parameters at the end of epochs ``start``, ``start+1``, ..."""

    def __init__(self, model: nn.Module, start: int = 1) -> None:
        self.start = start
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.average: list[torch.Tensor] = []
        self.count = 0
        self._update = get_swa_multi_avg_fn()

    @torch.no_grad()
    def update(self, finished_epochs: int) -> None:
        """Add the current weights once ``finished_epochs`` (1-based) reaches ``start``."""
        if finished_epochs < self.start:
            return
        current = [p.detach() for _, p in self.named]
        if not self.average:
            self.average = [t.clone() for t in current]
        else:
            self._update(self.average, current, self.count)
        self.count += 1

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model for the duration (nothing changes before the
        first update)."""
        if not self.average:
            yield
            return
        with torch.no_grad():
            saved = [p.detach().clone() for _, p in self.named]
            for (_, p), a in zip(self.named, self.average, strict=True):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for (_, p), s in zip(self.named, saved, strict=True):
                    p.copy_(s)

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count,
                "params": {n: a.cpu() for (n, _), a in zip(self.named, self.average,
                                                            strict=False)}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])
        params = state["params"]
        if params and set(params) != {n for n, _ in self.named}:
            raise ValueError("epoch-average state does not match the model's trainable tensors")
        self.average = [params[n].to(p.device) for n, p in self.named] if params else []
